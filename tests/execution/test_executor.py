"""The executor with pure-Python nodes: order, caching, lazy inputs, lists, expansion, async,
interruption, errors and events. In-process, no sleeps."""
from __future__ import annotations

import json
import threading

import pytest

from execution import CachePolicy, Engine, EventBus, PromptRecord
from execution.protocol import GraphBuilder
from tests.execution import executor_nodes as tn
from tests.execution.executor_nodes import CALLS, STATE, make_registry, ran


@pytest.fixture(autouse=True)
def _clean():
    tn.reset()
    yield
    tn.reset()


class Harness:
    def __init__(self, policy: CachePolicy | None = None):
        self.events = EventBus()
        self.seen: list[tuple[str, dict, str | None]] = []
        self.events.subscribe(lambda e: self.seen.append((e.type, e.data, e.client_id)))
        self.engine = Engine(make_registry(), self.events, policy or CachePolicy.keep_last())
        self.count = 0

    def run(self, prompt: dict, outputs: list[str] | None = None, extra: dict | None = None):
        self.count += 1
        self.seen.clear()
        CALLS.clear()
        record = PromptRecord(f"p{self.count}", self.count, prompt, extra or {}, "client-1", outputs or [])
        return self.engine.execute(record)

    def types(self) -> list[str]:
        return [t for t, _, _ in self.seen]

    def data(self, kind: str) -> list[dict]:
        return [d for t, d, _ in self.seen if t == kind]


def chain_prompt(values=(1, 2, 3)) -> dict:
    return {
        "1": {"class_type": "Const", "inputs": {"value": values[0]}},
        "2": {"class_type": "Const", "inputs": {"value": values[1]}},
        "3": {"class_type": "Add", "inputs": {"a": ["1", 0], "b": ["2", 0]}},
        "4": {"class_type": "Const", "inputs": {"value": values[2]}},
        "5": {"class_type": "Add", "inputs": {"a": ["3", 0], "b": ["4", 0]}},
        "6": {"class_type": "Output", "inputs": {"value": ["5", 0]}},
    }


def test_runs_in_dependency_order_and_reports_ui():
    h = Harness()
    result = h.run(chain_prompt())
    assert result.status == "success"
    assert result.outputs == {"6": {"values": [6]}}
    order = ran()
    assert order.index("3") > max(order.index("1"), order.index("2"))
    assert order.index("5") > max(order.index("3"), order.index("4"))
    assert order[-1] == "6"
    assert set(result.node_timings_s) == {"1", "2", "3", "4", "5", "6"}
    assert result.meta["6"] == {"node_id": "6", "display_node": "6", "parent_node": None, "real_node_id": "6"}
    json.dumps(result.to_json())  # history must be able to store it


def test_only_what_the_outputs_need_runs_and_a_subset_can_be_named():
    h = Harness()
    prompt = chain_prompt()
    prompt["7"] = {"class_type": "Const", "inputs": {"value": 9}}
    prompt["8"] = {"class_type": "Output", "inputs": {"value": ["7", 0]}}
    prompt["9"] = {"class_type": "Const", "inputs": {"value": 5}}  # feeds nothing
    result = h.run(prompt, outputs=["8"])
    assert result.outputs == {"8": {"values": [9]}}
    assert sorted(ran()) == ["7", "8"]


def test_event_shapes_follow_comfyui():
    h = Harness()
    h.run(chain_prompt())
    kinds = h.types()
    assert kinds[0] == "execution_start" and kinds[1] == "execution_cached"
    assert kinds[-2:] == ["execution_success", "executing"]
    assert all(client == "client-1" for _, _, client in h.seen)
    start = h.data("execution_start")[0]
    assert set(start) == {"prompt_id", "timestamp"}
    assert set(h.data("execution_cached")[0]) == {"nodes", "prompt_id", "timestamp"}
    executing = h.data("executing")
    assert executing[0] == {"node": "1", "display_node": "1", "prompt_id": "p1"}
    assert executing[-1] == {"node": None, "prompt_id": "p1"}
    assert h.data("executed") == [{"node": "6", "display_node": "6", "output": {"values": [6]}, "prompt_id": "p1"}]
    state = h.data("progress_state")[0]["nodes"]["1"]
    assert set(state) == {"value", "max", "state", "node_id", "prompt_id", "display_node_id", "parent_node_id",
                          "real_node_id"}
    assert set(h.data("execution_success")[0]) == {"prompt_id", "timestamp"}


def test_resubmitted_graph_reruns_only_the_changed_part():
    h = Harness()
    h.run(chain_prompt((1, 2, 3)))
    result = h.run(chain_prompt((1, 2, 30)))
    assert sorted(ran()) == ["4", "5", "6"]
    assert result.outputs == {"6": {"values": [33]}}
    assert sorted(h.data("execution_cached")[0]["nodes"]) == ["1", "2", "3"]
    again = h.run(chain_prompt((1, 2, 30)))
    assert ran() == []
    assert again.outputs == {"6": {"values": [33]}}  # cached output nodes still report their ui
    assert h.data("executed") == [{"node": "6", "display_node": "6", "output": {"values": [33]}, "prompt_id": "p3"}]


def test_cache_keys_ignore_node_ids():
    h = Harness()
    h.run({"a": {"class_type": "LoadModel", "inputs": {"name": "x"}},
           "b": {"class_type": "UseModel", "inputs": {"model": ["a", 0], "strength": 1.0}},
           "c": {"class_type": "Output", "inputs": {"value": ["b", 0]}}})
    h.run({"z": {"class_type": "LoadModel", "inputs": {"name": "x"}},
           "y": {"class_type": "UseModel", "inputs": {"model": ["z", 0], "strength": 1.0}},
           "x": {"class_type": "Output", "inputs": {"value": ["y", 0]}}})
    # Output asks for UNIQUE_ID, which makes its id one of its inputs (as in ComfyUI)
    assert sorted(h.data("execution_cached")[0]["nodes"]) == ["y", "z"]


def test_is_changed_and_not_idempotent():
    h = Harness()
    prompt = {"1": {"class_type": "Changing", "inputs": {"name": "a"}},
              "2": {"class_type": "Output", "inputs": {"value": ["1", 0]}},
              "3": {"class_type": "Random", "inputs": {}},
              "4": {"class_type": "Output", "inputs": {"value": ["3", 0]}}}
    h.run(prompt)
    h.run(prompt)
    assert sorted(ran()) == ["3", "4"]          # Random always runs, and so does what it feeds
    STATE["version"] = 2
    h.run(prompt)
    assert sorted(ran()) == ["1", "2", "3", "4"]
    STATE["version"] = float("nan")             # NaN: always changed
    h.run(prompt)
    h.run(prompt)
    assert sorted(ran()) == ["1", "2", "3", "4"]


def test_lazy_inputs_evaluate_only_the_branch_asked_for():
    h = Harness()
    prompt = {"1": {"class_type": "Const", "inputs": {"value": 1}},
              "2": {"class_type": "Fail", "inputs": {"value": 2}},
              "3": {"class_type": "Switch", "inputs": {"choose_a": True, "a": ["1", 0], "b": ["2", 0]}},
              "4": {"class_type": "Output", "inputs": {"value": ["3", 0]}}}
    result = h.run(prompt)
    assert result.status == "success" and result.outputs["4"] == {"values": [1]}
    assert "2" not in ran()
    prompt["3"]["inputs"]["choose_a"] = False
    result = h.run(prompt)
    assert result.status == "error" and result.error["node_id"] == "2"


def test_list_outputs_map_over_consumers_and_input_is_list_sees_whole_lists():
    h = Harness()
    prompt = {"1": {"class_type": "MakeList", "inputs": {"count": 3, "start": 10}},
              "2": {"class_type": "Const", "inputs": {"value": 100}},
              "3": {"class_type": "Add", "inputs": {"a": ["1", 0], "b": ["2", 0]}},   # shorter list repeats
              "4": {"class_type": "Output", "inputs": {"value": ["3", 0]}},
              "5": {"class_type": "SumList", "inputs": {"values": ["3", 0]}},
              "6": {"class_type": "Output", "inputs": {"value": ["5", 0]}}}
    result = h.run(prompt)
    assert result.outputs["4"] == {"values": [110, 111, 112]}
    assert result.outputs["6"] == {"values": [333]}
    assert ran("Add") == ["3", "3", "3"]


def test_two_lists_of_different_lengths_repeat_the_last_item():
    h = Harness()
    prompt = {"1": {"class_type": "MakeList", "inputs": {"count": 3, "start": 0}},
              "2": {"class_type": "MakeList", "inputs": {"count": 2, "start": 10}},
              "3": {"class_type": "Add", "inputs": {"a": ["1", 0], "b": ["2", 0]}},
              "4": {"class_type": "Output", "inputs": {"value": ["3", 0]}}}
    assert h.run(prompt).outputs["4"] == {"values": [10, 12, 13]}


def test_expansion_builds_a_loop_and_its_result_is_cached():
    h = Harness()
    prompt = {"1": {"class_type": "Const", "inputs": {"value": 100}},
              "2": {"class_type": "SumLoop", "inputs": {"i": 0, "n": 5, "acc": ["1", 0]}},
              "3": {"class_type": "Output", "inputs": {"value": ["2", 0]}}}
    result = h.run(prompt)
    assert result.status == "success", result.error
    assert result.outputs["3"] == {"values": [110]}          # 100 + 0 + 1 + 2 + 3 + 4
    assert len(ran("SumLoop")) == 6 and len(ran("Add")) == 5
    assert all(node_id.startswith("2.") for node_id in ran("Add"))
    assert any(d["display_node"] == "2" and d["node"] != "2" for d in h.data("executing"))
    h.run(prompt)
    assert ran() == []


def test_raw_expansion_graph_ids_are_prefixed():
    class Expand:
        @classmethod
        def INPUT_TYPES(cls):
            return {"required": {"x": ("INT",)}}
        RETURN_TYPES = ("INT",)
        FUNCTION = "run"

        def run(self, x):
            graph = {"1": {"class_type": "Const", "inputs": {"value": x}},
                     "2": {"class_type": "Add", "inputs": {"a": ["1", 0], "b": ["1", 0]}}}
            return {"result": (["2", 0],), "expand": graph}

    h = Harness()
    h.engine.registry.register("Expand", Expand)
    prompt = {"1": {"class_type": "Const", "inputs": {"value": 4}},
              "2": {"class_type": "Expand", "inputs": {"x": ["1", 0]}},
              "3": {"class_type": "Output", "inputs": {"value": ["2", 0]}}}
    result = h.run(prompt)
    assert result.outputs["3"] == {"values": [8]}
    assert "2.0.2" in ran("Add")


def test_async_node_functions_run_on_the_engine_loop():
    h = Harness()
    prompt = {"1": {"class_type": "MakeList", "inputs": {"count": 3, "start": 1}},
              "2": {"class_type": "AsyncAdd", "inputs": {"a": ["1", 0], "b": ["1", 0]}},
              "3": {"class_type": "Output", "inputs": {"value": ["2", 0]}}}
    result = h.run(prompt)
    assert result.status == "success", result.error
    assert result.outputs["3"] == {"values": [2, 4, 6]}


def test_node_error_names_node_class_inputs_and_traceback_and_engine_stays_usable():
    h = Harness()
    prompt = {"1": {"class_type": "Const", "inputs": {"value": 5}},
              "2": {"class_type": "Fail", "inputs": {"value": ["1", 0]}},
              "3": {"class_type": "Output", "inputs": {"value": ["2", 0]}}}
    result = h.run(prompt)
    assert result.status == "error"
    error = result.error
    assert error["node_id"] == "2" and error["node_type"] == "Fail"
    assert "boom 5" in error["exception_message"] and error["exception_type"] == "ValueError"
    assert error["current_inputs"]["value"] == [5]
    assert any("raise ValueError" in line for line in error["traceback"])
    assert error["executed"] == ["1"]
    assert h.types()[-2:] == ["execution_error", "executing"]
    assert h.data("execution_error")[0] == error
    assert [m[0] for m in result.messages] == ["execution_start", "execution_cached", "execution_error"]
    STATE["fail"] = False
    result = h.run(prompt)
    assert result.status == "success" and sorted(ran()) == ["2", "3"]   # no cache entry for the failure


def test_interrupt_between_nodes_and_inside_a_long_node():
    h = Harness()
    reached, gate = threading.Event(), threading.Event()
    STATE.update(reached=reached, gate=gate)
    prompt = {"1": {"class_type": "Progress", "inputs": {"steps": 3}},
              "2": {"class_type": "Output", "inputs": {"value": ["1", 0]}}}
    outcome = {}
    worker = threading.Thread(target=lambda: outcome.setdefault("r", h.run(prompt)))
    worker.start()
    assert reached.wait(5)
    h.engine.interrupt()
    gate.set()
    worker.join(5)
    result = outcome["r"]
    assert result.status == "interrupted"
    interrupted = next(m[1] for m in result.messages if m[0] == "execution_interrupted")
    assert interrupted["node_id"] == "1" and interrupted["node_type"] == "Progress"
    assert set(interrupted) == {"prompt_id", "node_id", "node_type", "executed", "timestamp"}
    STATE.clear()
    assert h.run(prompt).status == "success"   # a stale interrupt does not hit the next prompt


def test_interrupt_for_another_prompt_is_ignored():
    h = Harness()
    h.engine.interrupt("someone-else")
    assert h.run(chain_prompt()).status == "success"


def test_progress_and_preview_events():
    from execution.protocol import Preview, current_context

    class Previewing:
        @classmethod
        def INPUT_TYPES(cls):
            return {"required": {}}
        RETURN_TYPES = ()
        OUTPUT_NODE = True
        FUNCTION = "run"

        def run(self):
            current_context().report_progress(1, 2, Preview("JPEG", b"\xff\xd8"))
            return {}

    h = Harness()
    h.engine.registry.register("Previewing", Previewing)
    assert h.run({"1": {"class_type": "Previewing", "inputs": {}}}).status == "success"
    assert h.data("progress") == [{"value": 1, "max": 2, "prompt_id": "p1", "node": "1"}]
    preview = h.data("preview")[0]
    assert preview["node_id"] == "1" and preview["display_node_id"] == "1" and preview["preview"].data == b"\xff\xd8"
    states = [d["nodes"]["1"]["state"] for d in h.data("progress_state")]
    assert states == ["running", "running", "finished"]


def test_execution_blocker_stops_a_branch_without_error():
    h = Harness()
    prompt = {"1": {"class_type": "Const", "inputs": {"value": 5}},
              "2": {"class_type": "Block", "inputs": {"value": ["1", 0], "block": True, "message": ""}},
              "3": {"class_type": "Add", "inputs": {"a": ["2", 0], "b": ["1", 0]}},
              "4": {"class_type": "Output", "inputs": {"value": ["3", 0]}},
              "5": {"class_type": "Output", "inputs": {"value": ["1", 0]}}}
    result = h.run(prompt)
    assert result.status == "success"
    assert "3" not in ran() and "4" not in ran()
    assert result.outputs == {"5": {"values": [5]}}
    assert h.data("execution_error") == []
    prompt["2"]["inputs"]["message"] = "no image"
    h.run(prompt)
    errors = h.data("execution_error")
    assert len(errors) == 1 and errors[0]["node_id"] == "3" and "no image" in errors[0]["exception_message"]


def test_hidden_inputs():
    h = Harness()
    prompt = {"7": {"class_type": "Hidden", "inputs": {}}}
    result = h.run(prompt, extra={"extra_pnginfo": {"workflow": {"a": 1}}})
    assert result.outputs == {"7": {"id": ["7"]}}
    prompt_seen, extra, unique_id, dynprompt = STATE["hidden"]
    assert prompt_seen == prompt and extra == {"workflow": {"a": 1}} and unique_id == "7"
    assert dynprompt.get_node("7")["class_type"] == "Hidden"


def test_node_instances_live_across_prompts_while_the_node_stays():
    h = Harness()
    prompt = {"1": {"class_type": "Const", "inputs": {"value": 1}},
              "2": {"class_type": "Stateful", "inputs": {"value": ["1", 0]}},
              "3": {"class_type": "Output", "inputs": {"value": ["2", 0]}}}
    assert h.run(prompt).outputs["3"] == {"values": [1]}
    assert h.run(prompt).outputs["3"] == {"values": [2]}
    h.run({"9": {"class_type": "Output", "inputs": {"value": 1}}})
    assert h.run(prompt).outputs["3"] == {"values": [1]}


def test_broken_records_end_as_error_results_never_exceptions():
    h = Harness()
    bad = [{"1": {"class_type": "Nope", "inputs": {}}},
           {"1": {"class_type": "Output", "inputs": {"value": ["9", 0]}}},
           {"1": {"class_type": "Add", "inputs": {"a": ["1", 0], "b": 1}},
            "2": {"class_type": "Output", "inputs": {"value": ["1", 0]}}},
           {"1": "not a node"}]
    for prompt in bad:
        result = h.run(prompt, outputs=["1"] if "2" not in prompt else ["2"])
        assert result.status == "error", prompt
        assert result.error["exception_message"]
    assert h.engine.execute(None).status == "error"
    assert h.run(chain_prompt()).status == "success"


def test_clear_cache_forgets_everything():
    h = Harness()
    h.run(chain_prompt())
    h.engine.clear_cache()
    h.run(chain_prompt())
    assert len(ran()) == 6


class LoopOpen:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"value": ("INT",)}}
    RETURN_TYPES = ("FLOW_CONTROL", "INT")
    FUNCTION = "run"

    def run(self, value):
        return ("loop", value)


class LessThan:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"a": ("INT",), "b": ("INT",)}}
    RETURN_TYPES = ("BOOLEAN",)
    FUNCTION = "run"

    def run(self, a, b):
        return (a < b,)


class LoopClose:
    """A while loop in the style of ComfyUI plugins: copies its body from DYNPROMPT and expands it."""
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"flow_control": ("FLOW_CONTROL", {"rawLink": True}), "condition": ("BOOLEAN",),
                             "value": ("INT",)},
                "hidden": {"dynprompt": "DYNPROMPT", "unique_id": "UNIQUE_ID"}}
    RETURN_TYPES = ("INT",)
    FUNCTION = "run"

    def run(self, flow_control, condition, value, dynprompt, unique_id):
        from execution.protocol import is_link
        if not condition:
            return (value,)
        open_id = flow_control[0]
        upstream, stack = set(), [unique_id]
        while stack:
            for input_value in dynprompt.get_node(stack.pop())["inputs"].values():
                if is_link(input_value) and input_value[0] not in upstream:
                    upstream.add(input_value[0])
                    stack.append(input_value[0])
        depends: dict[str, bool] = {}

        def reaches_open(node_id: str) -> bool:
            if node_id not in depends:
                depends[node_id] = node_id == open_id or any(
                    is_link(v) and reaches_open(v[0]) for v in dynprompt.get_node(node_id)["inputs"].values())
            return depends[node_id]

        body = [n for n in upstream if reaches_open(n)] + [unique_id]
        g = GraphBuilder()
        for node_id in body:
            g.node(dynprompt.get_node(node_id)["class_type"], "Recurse" if node_id == unique_id else node_id)
        for node_id in body:
            copy = g.lookup_node("Recurse" if node_id == unique_id else node_id)
            for name, input_value in dynprompt.get_node(node_id)["inputs"].items():
                if is_link(input_value) and input_value[0] in body:
                    copy.set_input(name, g.lookup_node(input_value[0]).out(input_value[1]))
                else:
                    copy.set_input(name, input_value)
        g.lookup_node(open_id).set_input("value", value)
        return {"result": (g.lookup_node("Recurse").out(0),), "expand": g.finalize()}


def test_a_plugin_style_while_loop_built_from_dynprompt():
    h = Harness()
    for cls in (LoopOpen, LessThan, LoopClose):
        h.engine.registry.register(cls.__name__, cls)
    prompt = {"start": {"class_type": "Const", "inputs": {"value": 0}},
              "limit": {"class_type": "Const", "inputs": {"value": 5}},
              "open": {"class_type": "LoopOpen", "inputs": {"value": ["start", 0]}},
              "step": {"class_type": "Const", "inputs": {"value": 2}},
              "add": {"class_type": "Add", "inputs": {"a": ["open", 1], "b": ["step", 0]}},
              "test": {"class_type": "LessThan", "inputs": {"a": ["add", 0], "b": ["limit", 0]}},
              "close": {"class_type": "LoopClose", "inputs": {"flow_control": ["open", 0], "condition": ["test", 0],
                                                              "value": ["add", 0]}},
              "out": {"class_type": "Output", "inputs": {"value": ["close", 0]}}}
    assert h.engine.validate(prompt).ok
    result = h.run(prompt)
    assert result.status == "success", result.error
    assert result.outputs["out"] == {"values": [6]}          # 0 -> 2 -> 4 -> 6 (stops: 6 >= 5)
    assert len(ran("Add")) == 3
    displays = {d["display_node"] for d in h.data("executing") if d["node"] is not None}
    assert displays <= set(prompt)                          # every copy shows as an original node


def test_constants_are_coerced_like_comfyui_and_is_changed_failures_mean_always_run():
    class Flaky:
        @classmethod
        def INPUT_TYPES(cls):
            return {"required": {"n": ("INT",)}}
        RETURN_TYPES = ("INT",)
        FUNCTION = "run"

        @classmethod
        def IS_CHANGED(cls, n):
            raise OSError("file gone")

        def run(self, n):
            tn.called("Flaky", "")
            return (n * 2,)

    h = Harness()
    h.engine.registry.register("Flaky", Flaky)
    prompt = {"1": {"class_type": "Flaky", "inputs": {"n": "21"}}, "2": {"class_type": "Output",
                                                                         "inputs": {"value": ["1", 0]}}}
    assert h.run(prompt).outputs["2"] == {"values": [42]}
    h.run(prompt)
    assert ran("Flaky") == [""]


def test_a_node_returning_the_wrong_shape_gets_a_clear_error():
    class Sloppy:
        @classmethod
        def INPUT_TYPES(cls):
            return {"required": {}}
        RETURN_TYPES = ("INT", "INT")
        FUNCTION = "run"

        def run(self):
            return 5

    h = Harness()
    h.engine.registry.register("Sloppy", Sloppy)
    result = h.run({"1": {"class_type": "Sloppy", "inputs": {}},
                    "2": {"class_type": "Output", "inputs": {"value": ["1", 1]}}})
    assert result.status == "error" and "tuple of 2 value(s)" in result.error["exception_message"]


def test_an_empty_list_input_means_no_call():
    h = Harness()
    result = h.run({"1": {"class_type": "MakeList", "inputs": {"count": 0, "start": 0}},
                    "2": {"class_type": "Add", "inputs": {"a": ["1", 0], "b": 1}},
                    "3": {"class_type": "Output", "inputs": {"value": ["2", 0]}}})
    assert result.status == "success" and result.outputs == {} and ran() == []


def test_validate_inputs_sees_none_for_linked_inputs():
    seen = {}

    class Peek:
        @classmethod
        def INPUT_TYPES(cls):
            return {"required": {"a": ("INT",), "b": ("INT",)}}
        RETURN_TYPES = ("INT",)
        FUNCTION = "run"

        @classmethod
        def VALIDATE_INPUTS(cls, a, b):
            seen.update(a=a, b=b)
            return True

        def run(self, a, b):
            return (a + b,)

    h = Harness()
    h.engine.registry.register("Peek", Peek)
    assert h.engine.validate({"1": {"class_type": "Const", "inputs": {"value": 1}},
                              "2": {"class_type": "Peek", "inputs": {"a": ["1", 0], "b": "4"}},
                              "3": {"class_type": "Output", "inputs": {"value": ["2", 0]}}}).ok
    assert seen == {"a": None, "b": 4}


def test_inputs_that_are_not_an_object_fail_cleanly():
    h = Harness()
    result = h.run({"1": {"class_type": "Output", "inputs": [1, 2]}}, outputs=["1"])
    assert result.status == "error" and "not an object" in result.error["exception_message"]


def test_async_check_lazy_status_and_a_blocked_lazy_node_reports_once():
    class AsyncSwitch:
        @classmethod
        def INPUT_TYPES(cls):
            return {"required": {"gate": ("INT",), "a": ("INT", {"lazy": True}), "b": ("INT", {"lazy": True})}}
        RETURN_TYPES = ("INT",)
        FUNCTION = "run"

        async def check_lazy_status(self, gate, a=None, b=None):
            return ["a"] if a is None else []

        def run(self, gate, a=None, b=None):
            return (a,)

    h = Harness()
    h.engine.registry.register("AsyncSwitch", AsyncSwitch)
    prompt = {"1": {"class_type": "Const", "inputs": {"value": 3}},
              "2": {"class_type": "Fail", "inputs": {"value": 1}},
              "3": {"class_type": "AsyncSwitch", "inputs": {"gate": ["1", 0], "a": ["1", 0], "b": ["2", 0]}},
              "4": {"class_type": "Output", "inputs": {"value": ["3", 0]}}}
    result = h.run(prompt)
    assert result.status == "success" and result.outputs["4"] == {"values": [3]}
    prompt["5"] = {"class_type": "Block", "inputs": {"value": ["1", 0], "block": True, "message": "stop"}}
    prompt["3"]["inputs"]["gate"] = ["5", 0]
    result = h.run(prompt)
    assert result.status == "success" and "4" not in result.outputs
    assert len(h.data("execution_error")) == 1
