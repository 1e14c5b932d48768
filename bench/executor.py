"""Executor overhead per node on graphs of trivial nodes.

Two graphs of 2,000 nodes: a chain (each node adds a constant to the previous one) and a fan-in
(2,000 constants summed by one node). For each: the first run (empty cache), a re-run with one
node changed, and a re-run with nothing changed. Node functions do almost nothing, so the time is
the engine's (CPU time of the process, best of --repeat): compiling the prompt, cache keys, scheduling, list mapping, events (one no-op
subscriber is attached, as the server would be) and caching.

    .venv/bin/python bench/executor.py [--nodes 2000] [--repeat 5]
"""
from __future__ import annotations

import argparse
import copy
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from execution import CachePolicy, Engine, EventBus, NodeRegistry, PromptRecord


class Value:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"value": ("INT", {"default": 0, "min": -2**62, "max": 2**62})}}
    RETURN_TYPES = ("INT",)
    FUNCTION = "run"

    def run(self, value):
        return (value,)


class Increment:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"x": ("INT",), "by": ("INT", {"default": 1})}}
    RETURN_TYPES = ("INT",)
    FUNCTION = "run"

    def run(self, x, by):
        return (x + by,)


class Total:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {}}
    RETURN_TYPES = ("INT",)
    FUNCTION = "run"

    def run(self, **values):
        return (sum(values.values()),)


class Show:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"value": ("INT",)}}
    RETURN_TYPES = ()
    FUNCTION = "run"
    OUTPUT_NODE = True

    def run(self, value):
        return {"ui": {"value": [value]}}


def registry() -> NodeRegistry:
    reg = NodeRegistry()
    for cls in (Value, Increment, Total, Show):
        reg.register(cls.__name__, cls)
    return reg


def chain(n: int) -> dict:
    prompt = {"0": {"class_type": "Value", "inputs": {"value": 1}}}
    for i in range(1, n - 1):
        prompt[str(i)] = {"class_type": "Increment", "inputs": {"x": [str(i - 1), 0], "by": 1}}
    prompt[str(n - 1)] = {"class_type": "Show", "inputs": {"value": [str(n - 2), 0]}}
    return prompt


def fan_in(n: int) -> dict:
    leaves = n - 2
    prompt = {str(i): {"class_type": "Value", "inputs": {"value": i}} for i in range(leaves)}
    prompt["sum"] = {"class_type": "Total", "inputs": {f"v{i}": [str(i), 0] for i in range(leaves)}}
    prompt["out"] = {"class_type": "Show", "inputs": {"value": ["sum", 0]}}
    return prompt


def timed(engine: Engine, prompt: dict, number: int) -> tuple[float, object]:
    """CPU seconds of this process for one execute (the machine is shared: wall time is noisier)."""
    record = PromptRecord(prompt_id=f"bench-{number}", number=number, prompt=prompt, client_id="bench")
    start = time.process_time()
    result = engine.execute(record)
    elapsed = time.process_time() - start
    assert result.status == "success", result.error
    return elapsed, result


def measure(name: str, prompt: dict, change: tuple[str, str], repeat: int) -> list[tuple[str, str, float, int]]:
    n = len(prompt)
    changed = copy.deepcopy(prompt)
    node_id, input_name = change
    changed[node_id]["inputs"][input_name] += 1000
    best = {"first run": float("inf"), "re-run, 1 node changed": float("inf"), "re-run, nothing changed": float("inf"),
            "validate": float("inf")}
    reran = {}
    for attempt in range(repeat):
        events = EventBus()
        events.subscribe(lambda event: None)
        engine = Engine(registry(), events, CachePolicy.keep_last())
        start = time.process_time()
        assert engine.validate(prompt).ok
        best["validate"] = min(best["validate"], time.process_time() - start)
        elapsed, _ = timed(engine, prompt, 1)
        best["first run"] = min(best["first run"], elapsed)
        elapsed, result = timed(engine, changed, 2)
        best["re-run, 1 node changed"] = min(best["re-run, 1 node changed"], elapsed)
        reran["re-run, 1 node changed"] = len(result.node_timings_s)
        elapsed, result = timed(engine, changed, 3)
        best["re-run, nothing changed"] = min(best["re-run, nothing changed"], elapsed)
        reran["re-run, nothing changed"] = len(result.node_timings_s)
        reran["first run"] = n
        reran["validate"] = 0
    return [(name, case, seconds, reran[case]) for case, seconds in best.items()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=2000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    n = args.nodes
    rows = measure("chain", chain(n), (str(n - 10), "by"), args.repeat)
    rows += measure("fan-in", fan_in(n), ("7", "value"), args.repeat)
    print(f"{'graph':8} {'case':26} {'cpu ms':>9} {'nodes run':>9} {'us/node':>8} {'us/node run':>12}")
    baseline = {graph: seconds for graph, case, seconds, _ in rows if case == "re-run, nothing changed"}
    for graph, case, seconds, run in rows:
        per_run = ""
        if case == "first run":
            per_run = f"{seconds / run * 1e6:12.1f}"
        elif case == "re-run, 1 node changed":  # the change's own cost: above the unchanged re-run
            per_run = f"{(seconds - baseline[graph]) / run * 1e6:12.1f}"
        print(f"{graph:8} {case:26} {seconds * 1e3:9.2f} {run:9d} {seconds / n * 1e6:8.1f} {per_run:>12}")
    print("us/node: cpu time / graph size; us/node run: first run per node, or for the re-run with one node"
          " changed, its cost above the unchanged re-run per node that ran")

if __name__ == "__main__":
    main()
