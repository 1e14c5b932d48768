"""The V3 node schema (``comfy_api.latest``) the way V3 packs use it: ``comfy_entrypoint`` returning a
``ComfyExtension``, ``io.ComfyNode`` classes with ``define_schema`` / ``execute`` (sync and async),
``io.NodeOutput`` with ``ui``, hidden inputs, ``validate_inputs``, ``fingerprint_inputs``, lazy inputs,
expansion and blocking; ``/object_info`` entries in ComfyUI's V3 shape."""
from __future__ import annotations

import json

import pytest

from .harness import FaceHarness

PACK = '''
import asyncio
from enum import Enum

import torch
from comfy_api.latest import ComfyExtension, io, ui
from comfy_execution.graph_utils import GraphBuilder

Counter = io.Custom("V3_COUNTER")
CALLS = {"fingerprinted": 0, "ran": 0, "epoch": 0}


class Mode(str, Enum):
    add = "add"
    mul = "mul"


class Combine(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="V3Combine", display_name="V3 Combine", category="v3test/math", description="Combines two numbers.",
            inputs=[
                io.Int.Input("a", default=1, min=0, max=100, step=2, control_after_generate=True,
                             display_mode=io.NumberDisplay.slider, tooltip="first"),
                io.Float.Input("b", default=0.5, min=-1.0, max=1.0, step=0.01, round=0.001),
                io.Combo.Input("mode", options=Mode, default=Mode.add),
                io.String.Input("label", multiline=True, default="sum", placeholder="name"),
                io.Boolean.Input("negate", default=False, label_on="yes", label_off="no", optional=True),
                io.MultiType.Input(io.Image.Input("picture", optional=True), types=[io.Mask]),
            ],
            outputs=[io.Float.Output(display_name="value", tooltip="the result"), Counter.Output(is_output_list=True)],
            hidden=[io.Hidden.unique_id],
        )

    @classmethod
    def execute(cls, a, b, mode, label, negate=False, picture=None):
        CALLS["ran"] += 1
        value = a + b if mode == "add" else a * b
        return io.NodeOutput(-value if negate else value, [cls.hidden.unique_id, label],
                             ui=ui.PreviewText(f"{label}={value}"))


class SlowDouble(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(node_id="V3SlowDouble", category="v3test",
                         inputs=[io.Float.Input("value", force_input=True)], outputs=[io.Float.Output()])

    @classmethod
    async def execute(cls, value):
        await asyncio.sleep(0)
        return io.NodeOutput(value * 2)


class Show(io.ComfyNode):
    """An output node with an input named like the hidden PROMPT it also receives."""

    @classmethod
    def define_schema(cls):
        return io.Schema(node_id="V3Show", category="v3test", is_output_node=True,
                         inputs=[io.Float.Input("value", force_input=True), io.String.Input("prompt", default="")],
                         hidden=[io.Hidden.unique_id])

    @classmethod
    def execute(cls, value, prompt):
        classes = sorted(node["class_type"] for node in cls.hidden.prompt.values())
        return io.NodeOutput(ui={"text": [f"{prompt}:{value}"], "seen": [cls.hidden.unique_id, classes]})


class Checked(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(node_id="V3Checked", category="v3test", inputs=[io.Int.Input("n", default=0)],
                         outputs=[io.Float.Output()])

    @classmethod
    def validate_inputs(cls, n):
        return True if n % 2 == 0 else f"n must be even, got {n}"

    @classmethod
    def fingerprint_inputs(cls, n):
        CALLS["fingerprinted"] += 1
        return f"{n}@{CALLS['epoch']}"

    @classmethod
    def execute(cls, n):
        CALLS["ran"] += 1
        return io.NodeOutput(float(n))


class Pick(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(node_id="V3Pick", category="v3test",
                         inputs=[io.Boolean.Input("first", default=True),
                                 io.Float.Input("a", lazy=True, force_input=True),
                                 io.Float.Input("b", lazy=True, force_input=True)],
                         outputs=[io.Float.Output()])

    @classmethod
    def check_lazy_status(cls, first, a=None, b=None):
        wanted = "a" if first else "b"
        return [wanted] if (a if first else b) is None else []

    @classmethod
    def execute(cls, first, a=None, b=None):
        return io.NodeOutput(a if first else b)


class PickFirst(io.ComfyNode):
    """Lazy inputs and no check_lazy_status: the lazy inputs are never evaluated (as in ComfyUI)."""

    @classmethod
    def define_schema(cls):
        return io.Schema(node_id="V3PickFirst", category="v3test",
                         inputs=[io.Float.Input("a", force_input=True),
                                 io.Float.Input("b", lazy=True, force_input=True, optional=True)],
                         outputs=[io.Float.Output()])

    @classmethod
    def execute(cls, a, b=None):
        return io.NodeOutput(a if b is None else b)


class Expand(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(node_id="V3Expand", category="v3test", enable_expand=True,
                         inputs=[io.Float.Input("value", default=1.0)], outputs=[io.Float.Output()])

    @classmethod
    def execute(cls, value):
        graph = GraphBuilder()
        doubled = graph.node("V3SlowDouble", value=value)
        return io.NodeOutput(doubled.out(0), expand=graph.finalize())


class Gate(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(node_id="V3Gate", category="v3test",
                         inputs=[io.Float.Input("value", force_input=True), io.Boolean.Input("open", default=True)],
                         outputs=[io.Float.Output()])

    @classmethod
    def execute(cls, value, open):
        return io.NodeOutput(value) if open else io.NodeOutput(block_execution="gate closed")


class Preview(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(node_id="V3Preview", category="v3test", is_output_node=True,
                         inputs=[io.Float.Input("value", force_input=True)])

    @classmethod
    def execute(cls, value):
        return io.NodeOutput(ui=ui.PreviewImage(torch.full((1, 8, 8, 3), min(max(value, 0.0), 1.0)), cls=cls))


class Broken(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(node_id="V3Broken", inputs=[io.Int.Input("x"), io.Int.Input("x")])

    @classmethod
    def execute(cls, x):
        return io.NodeOutput(x)


class Extension(ComfyExtension):
    async def get_node_list(self):
        return [Combine, SlowDouble, Show, Checked, Pick, PickFirst, Expand, Gate, Preview, Broken]


async def comfy_entrypoint():
    return Extension()
'''


@pytest.fixture
def harness(tmp_path):
    h = FaceHarness(tmp_path)
    h.pack("v3_pack", {"__init__.py": PACK, "js/ui.js": "export {};\n"})
    h.load()
    yield h
    h.close()


def _pack_module():
    import sys

    return next(m for name, m in sys.modules.items() if name.endswith("v3_pack"))


def test_entrypoint_registers_schema_nodes_and_skips_a_broken_schema(harness) -> None:
    plugin = harness.plugin("v3_pack")
    assert plugin.is_ok, plugin.error
    assert plugin.node_names == ["V3Combine", "V3SlowDouble", "V3Show", "V3Checked", "V3Pick", "V3PickFirst",
                                 "V3Expand", "V3Gate", "V3Preview"]
    assert plugin.display_names == {"V3Combine": "V3 Combine"}
    assert [w for w in plugin.warnings if "Broken" in w and "must be unique" in w], plugin.warnings
    assert harness.registry.python_module("V3Combine") == "custom_nodes.v3_pack"


def test_object_info_is_comfyuis_v3_shape(harness) -> None:
    """The entry ComfyUI 0.3.64 gives for the same schema (checked against its server's /object_info)."""
    info = json.loads(json.dumps(harness.registry.object_info("V3Combine")))
    assert info == {
        "input": {
            "required": {
                "a": ["INT", {"tooltip": "first", "default": 1, "min": 0, "max": 100, "step": 2,
                              "control_after_generate": True, "display": "slider"}],
                "b": ["FLOAT", {"default": 0.5, "min": -1.0, "max": 1.0, "step": 0.01, "round": 0.001}],
                "mode": ["COMBO", {"default": "add", "multiselect": False, "options": ["add", "mul"]}],
                "label": ["STRING", {"default": "sum", "multiline": True, "placeholder": "name"}],
            },
            "optional": {
                "negate": ["BOOLEAN", {"default": False, "label_on": "yes", "label_off": "no"}],
                "picture": ["IMAGE,MASK", {}],
            },
            "hidden": {"unique_id": ["UNIQUE_ID"]},
        },
        "input_order": {"required": ["a", "b", "mode", "label"], "optional": ["negate", "picture"],
                        "hidden": ["unique_id"]},
        "output": ["FLOAT", "V3_COUNTER"], "output_is_list": [False, True], "output_name": ["value", "V3_COUNTER"],
        "output_tooltips": ["the result", None], "name": "V3Combine", "display_name": "V3 Combine",
        "description": "Combines two numbers.", "python_module": "custom_nodes.v3_pack", "category": "v3test/math",
        "output_node": False, "deprecated": False, "experimental": False, "api_node": False,
    }
    show = harness.registry.object_info("V3Show")
    assert show["display_name"] is None and show["output_node"] is True
    assert show["input"]["hidden"] == {"unique_id": ["UNIQUE_ID"], "prompt": ["PROMPT"],
                                       "extra_pnginfo": ["EXTRA_PNGINFO"]}


def test_sync_and_async_execute_with_ui_and_hidden_values(harness) -> None:
    prompt = {
        "1": {"class_type": "V3Combine", "inputs": {"a": 4, "b": 0.5, "mode": "mul", "label": "prod"}},
        "2": {"class_type": "V3SlowDouble", "inputs": {"value": ["1", 0]}},
        "3": {"class_type": "V3Show", "inputs": {"value": ["2", 0], "prompt": "mine"}},
    }
    result = harness.run(prompt)
    assert result.status == "success", result.error
    assert result.outputs["1"] == {"text": ("prod=2.0",)}
    assert result.outputs["3"] == {"text": ["mine:4.0"], "seen": ["3", ["V3Combine", "V3Show", "V3SlowDouble"]]}


def test_output_lists_and_nodes_called_directly(harness) -> None:
    pack = _pack_module()
    output = pack.Combine.PREPARE_CLASS_CLONE({"UNIQUE_ID": "7"}).execute(a=1, b=1.0, mode="add", label="x")
    assert output[0] == 2.0 and output[1] == ["7", "x"] and output.ui.as_dict() == {"text": ("x=2.0",)}
    assert pack.Combine.RETURN_TYPES == ["FLOAT", "V3_COUNTER"] and pack.Combine.OUTPUT_IS_LIST == [False, True]
    assert pack.Combine.FUNCTION == "EXECUTE_NORMALIZED" and pack.SlowDouble.FUNCTION == "EXECUTE_NORMALIZED_ASYNC"
    assert pack.Combine.hidden is None   # the clone got the hidden values, never the class itself


def test_validate_inputs_message_fails_validation(harness) -> None:
    checked = harness.engine.validate({"1": {"class_type": "V3Checked", "inputs": {"n": 3}},
                                       "2": {"class_type": "V3Show", "inputs": {"value": ["1", 0]}}})
    assert not checked.ok
    errors = checked.node_errors["1"]["errors"]
    assert errors[0]["type"] == "custom_validation_failed" and "n must be even, got 3" in errors[0]["message"]


def test_fingerprint_inputs_decides_whether_the_node_runs_again(harness) -> None:
    pack = _pack_module()

    def prompt(n):
        return {"1": {"class_type": "V3Checked", "inputs": {"n": n}},
                "2": {"class_type": "V3Show", "inputs": {"value": ["1", 0], "prompt": str(n)}}}

    assert harness.run(prompt(2)).status == "success"
    ran = pack.CALLS["ran"]
    assert harness.run(prompt(2)).outputs["2"]["text"] == ["2:2.0"]   # same fingerprint: the cached output
    assert pack.CALLS["ran"] == ran and pack.CALLS["fingerprinted"] >= 2
    pack.CALLS["epoch"] += 1                                          # what it depends on changed
    assert harness.run(prompt(2)).outputs["2"]["text"] == ["2:2.0"]
    assert pack.CALLS["ran"] == ran + 1


def test_lazy_inputs_follow_check_lazy_status(harness) -> None:
    prompt = {
        "1": {"class_type": "V3Combine", "inputs": {"a": 1, "b": 0.0, "mode": "add", "label": "a"}},
        "2": {"class_type": "V3Combine", "inputs": {"a": 3, "b": 0.0, "mode": "add", "label": "b"}},
        "3": {"class_type": "V3Pick", "inputs": {"first": False, "a": ["1", 0], "b": ["2", 0]}},
        "4": {"class_type": "V3Show", "inputs": {"value": ["3", 0], "prompt": "picked"}},
    }
    result = harness.run(prompt)
    assert result.status == "success", result.error
    assert result.outputs["4"]["text"] == ["picked:3.0"]
    assert "1" not in result.outputs   # the branch it did not ask for never ran
    prompt["3"] = {"class_type": "V3PickFirst", "inputs": {"a": ["1", 0], "b": ["2", 0]}}
    result = harness.run(prompt)
    assert result.outputs["4"]["text"] == ["picked:1.0"] and "2" not in result.outputs


def test_expand_and_block_execution(harness) -> None:
    expanded = harness.run({"1": {"class_type": "V3Expand", "inputs": {"value": 2.5}},
                            "2": {"class_type": "V3Show", "inputs": {"value": ["1", 0], "prompt": "e"}}})
    assert expanded.status == "success", expanded.error
    assert expanded.outputs["2"]["text"] == ["e:5.0"]
    blocked = harness.run({"1": {"class_type": "V3Combine", "inputs": {"a": 1, "b": 0.0, "mode": "add", "label": "x"}},
                           "2": {"class_type": "V3Gate", "inputs": {"value": ["1", 0], "open": False}},
                           "3": {"class_type": "V3Show", "inputs": {"value": ["2", 0], "prompt": "g"}}})
    assert "3" not in blocked.outputs
    assert any(event.type == "execution_error" and "gate closed" in event.data["exception_message"]
               for event in harness.seen)


def test_preview_image_writes_into_the_temp_folder(harness) -> None:
    result = harness.run({"1": {"class_type": "V3Combine", "inputs": {"a": 0, "b": 0.5, "mode": "add", "label": "x"}},
                          "2": {"class_type": "V3Preview", "inputs": {"value": ["1", 0]}}})
    assert result.status == "success", result.error
    (image,) = result.outputs["2"]["images"]
    assert image["type"] == "temp" and image["filename"].startswith("ComfyUI_temp_")
    assert result.outputs["2"]["animated"] == (False,)
    assert (harness.folders.temp / image["subfolder"] / image["filename"]).is_file()


def test_v3_classes_in_node_class_mappings_and_version_aliases(tmp_path) -> None:
    h = FaceHarness(tmp_path)
    try:
        h.pack("mapped", {"__init__.py": '''
from comfy_api.v0_0_2 import io
from comfy_api.latest import io as latest_io

class NewerThanThisApi(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(node_id="Newer", inputs=[io.DynamicCombo.Input("mode", options=[])])

    @classmethod
    def execute(cls, mode):
        return io.NodeOutput()


class BadSchema(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        raise ValueError("broken schema")

    @classmethod
    def execute(cls):
        return io.NodeOutput()


class Echo(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(node_id="MappedEcho", inputs=[io.String.Input("text", default="hi")],
                         outputs=[io.String.Output()], is_output_node=True)
    @classmethod
    def execute(cls, text):
        return io.NodeOutput(text, ui={"text": [text]})

assert io is latest_io
NODE_CLASS_MAPPINGS = {"MappedEcho": Echo, "Newer": NewerThanThisApi, "Bad": BadSchema}
'''})
        h.pack("bad_entry", {"__init__.py": "async def comfy_entrypoint():\n    return object()\n"})
        h.load()
        assert h.plugin("mapped").node_names == ["MappedEcho"]
        assert [w.split(":")[0] for w in h.plugin("mapped").warnings] == [
            "node 'Newer' skipped", "node 'Bad' skipped"], h.plugin("mapped").warnings
        assert h.run({"1": {"class_type": "MappedEcho", "inputs": {"text": "yo"}}}).outputs["1"] == {"text": ["yo"]}
        bad = h.plugin("bad_entry")
        assert not bad.is_ok and "not a ComfyExtension" in bad.error
    finally:
        h.close()
