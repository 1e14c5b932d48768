"""Engine behaviour ComfyUI's own execution suite (tests/execution with its testing pack) relies on:
hidden inputs of a node's own kind take the prompt's value, rawLink sources are part of the cache key
(loop nodes), and a failure inside an expansion is reported on the node that expanded."""
from __future__ import annotations

from execution import CachePolicy, Engine, EventBus, PromptRecord
from execution.protocol import GraphBuilder
from execution.registry import NodeRegistry


class Const:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"value": ("INT", {"default": 0, "min": -100, "max": 100})}}

    RETURN_TYPES = ("INT",)
    FUNCTION = "run"

    def run(self, value):
        return (value,)


class Show:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"value": ("*",)}}

    RETURN_TYPES = ()
    FUNCTION = "run"
    OUTPUT_NODE = True

    def run(self, value):
        return {"ui": {"value": [value]}}


class Follow:
    """Takes a raw link (like the testing pack's loop-closing nodes) and expands into a node reading it."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"source": ("INT", {"rawLink": True})}}

    RETURN_TYPES = ("INT",)
    FUNCTION = "run"

    def run(self, source):
        graph = GraphBuilder()
        copy = graph.node("Plus", value=source, amount=0)
        return {"result": (copy.out(0),), "expand": graph.finalize()}


class Plus:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"value": ("INT",), "amount": ("INT", {"default": 0})}}

    RETURN_TYPES = ("INT",)
    FUNCTION = "run"

    def run(self, value, amount):
        if amount < 0:
            raise ValueError("negative amount")
        return (value + amount,)


class Seeded:
    """A hidden input of the pack's own kind (the testing pack's TestForLoopOpen has ``("*",)``)."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"value": ("INT", {"default": 1})}, "hidden": {"override": ("*",), "node": "UNIQUE_ID"}}

    RETURN_TYPES = ("INT",)
    FUNCTION = "run"

    def run(self, value, node=None, **kwargs):
        return (kwargs.get("override", value),)


class ExpandFailing:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {}}

    RETURN_TYPES = ("INT",)
    FUNCTION = "run"

    def run(self):
        graph = GraphBuilder()
        start = graph.node("Const", value=1)
        bad = graph.node("Plus", value=start.out(0), amount=-1)
        return {"result": (bad.out(0),), "expand": graph.finalize()}


def _engine() -> tuple[Engine, list]:
    registry = NodeRegistry()
    for cls in (Const, Show, Follow, Plus, Seeded, ExpandFailing):
        registry.register(cls.__name__, cls)
    seen: list = []
    events = EventBus()
    events.subscribe(seen.append)
    return Engine(registry, events, CachePolicy.keep_last()), seen


def _run(engine: Engine, prompt: dict, number: int):
    return engine.execute(PromptRecord(f"p{number}", number, prompt, {}, None, []))


def test_raw_link_sources_key_the_cache() -> None:
    engine, _ = _engine()
    for number, value in enumerate((1, 2, 2, 3), 1):
        prompt = {"1": {"class_type": "Const", "inputs": {"value": value}},
                  "2": {"class_type": "Follow", "inputs": {"source": ["1", 0]}},
                  "3": {"class_type": "Show", "inputs": {"value": ["2", 0]}}}
        result = _run(engine, prompt, number)
        assert result.status == "success", (result.error or {}).get("exception_message")
        assert result.outputs["3"] == {"value": [value]}


def test_hidden_inputs_of_an_own_kind_take_the_prompts_value() -> None:
    engine, _ = _engine()
    prompt = {"1": {"class_type": "Seeded", "inputs": {"value": 4}},
              "2": {"class_type": "Seeded", "inputs": {"value": 4, "override": 9}},
              "3": {"class_type": "Const", "inputs": {"value": 7}},
              "4": {"class_type": "Seeded", "inputs": {"value": 4, "override": ["3", 0]}},
              "5": {"class_type": "Show", "inputs": {"value": ["1", 0]}},
              "6": {"class_type": "Show", "inputs": {"value": ["2", 0]}},
              "7": {"class_type": "Show", "inputs": {"value": ["4", 0]}}}
    result = _run(engine, prompt, 1)
    assert result.status == "success", result.error
    assert [result.outputs[n]["value"] for n in ("5", "6", "7")] == [[4], [9], [7]]
    prompt["2"]["inputs"]["override"] = 10        # the constant is part of the key: the node runs again
    assert _run(engine, prompt, 2).outputs["6"] == {"value": [10]}


def test_a_failure_inside_an_expansion_is_reported_on_the_expanding_node() -> None:
    engine, seen = _engine()
    result = _run(engine, {"1": {"class_type": "ExpandFailing", "inputs": {}},
                           "2": {"class_type": "Show", "inputs": {"value": ["1", 0]}}}, 1)
    assert result.status == "error"
    assert result.error["node_id"] == "1" and result.error["node_type"] == "Plus"
    assert "negative amount" in result.error["exception_message"]


class Meet:
    """An async node that finishes only when ``parties`` Meet nodes are running at the same time."""

    BARRIERS: dict = {}

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"value": ("INT",), "parties": ("INT", {"default": 2})}}

    RETURN_TYPES = ("INT",)
    FUNCTION = "run"

    async def run(self, value, parties):
        import asyncio

        barrier = self.BARRIERS.setdefault(parties, asyncio.Barrier(parties))
        await asyncio.wait_for(barrier.wait(), timeout=20)
        return (value,)


def test_ready_async_nodes_run_side_by_side() -> None:
    """Three async nodes under three outputs overlap (ComfyUI's parallel-sleep tests): each waits for the
    other two, so run one at a time they would time out."""
    registry = NodeRegistry()
    for cls in (Const, Show, Meet):
        registry.register(cls.__name__, cls)
    Meet.BARRIERS.clear()
    engine = Engine(registry, EventBus(), CachePolicy.keep_last())
    prompt = {"1": {"class_type": "Const", "inputs": {"value": 5}}}
    for n in range(3):
        prompt[f"m{n}"] = {"class_type": "Meet", "inputs": {"value": ["1", 0], "parties": 3}}
        prompt[f"s{n}"] = {"class_type": "Show", "inputs": {"value": [f"m{n}", 0]}}
    result = _run(engine, prompt, 1)
    assert result.status == "success", (result.error or {}).get("exception_message")
    assert [result.outputs[f"s{n}"] for n in range(3)] == [{"value": [5]}] * 3
    engine.close()
