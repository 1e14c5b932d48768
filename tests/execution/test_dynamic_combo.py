"""ComfyUI's V3 DynamicCombo inputs (``COMFY_DYNAMICCOMBO_V3``) in the stdlib engine: the chosen option's
dotted inputs are validated and passed, the others ignored; the editor-format converter maps the
widgets that follow the combo's value for whichever option the saved value names (nested combos too)."""
from __future__ import annotations

from typing import Any, ClassVar

import pytest

from execution import Engine, EventBus, PromptRecord
from execution.registry import NodeRegistry
from execution.specs import build_spec, inputs_for
from execution.workflow import workflow_to_prompt
from tests.execution.test_workflow import graph, n


def _int(default: int, **extra: Any) -> tuple:
    return ("INT", {"default": default, "min": 0, "max": 100, **extra})


class Resize:
    """A DynamicCombo 'mode' (two options) between two plain widgets, and a nested one in 'fancy'."""
    seen: ClassVar[list[dict]] = []
    RETURN_TYPES = ("INT",)
    FUNCTION = "run"
    OUTPUT_NODE = True

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "label": ("STRING", {"default": "x"}),
            "mode": ("COMFY_DYNAMICCOMBO_V3", {"options": [
                {"key": "size", "inputs": {"required": {"width": _int(8), "height": _int(6)}}},
                {"key": "factor", "inputs": {"required": {"by": ("FLOAT", {"default": 1.5, "min": 0.5})}}},
                {"key": "fancy", "inputs": {"required": {
                    "depth": (["8-bit", "16-bit"], {"default": "8-bit"}),
                    "inner": ("COMFY_DYNAMICCOMBO_V3", {"options": [
                        {"key": "still", "inputs": {}},
                        {"key": "moving", "inputs": {"required": {"fps": _int(6)}, "optional": {"loop": _int(0)}}},
                    ]}),
                }}},
            ]}),
            "method": (["area", "bicubic"], {"default": "area"}),
        }}

    def run(self, **arguments):
        Resize.seen.append(arguments)
        return (1,)


@pytest.fixture
def registry() -> NodeRegistry:
    registry = NodeRegistry()
    registry.register("Resize", Resize)
    Resize.seen = []
    return registry


def _errors(registry, inputs: dict) -> list[tuple[str, str]]:
    result = Engine(registry, EventBus()).validate({"1": {"class_type": "Resize", "inputs": inputs}})
    return [(e["type"], e["extra_info"].get("input_name")) for entry in result.node_errors.values()
            for e in entry["errors"]]


def test_the_chosen_options_inputs_join_the_declared_ones() -> None:
    spec = build_spec("Resize", Resize)
    assert spec.has_dynamic and spec.inputs["mode"].combo_options == ["size", "factor", "fancy"]
    assert list(inputs_for(spec, {"mode": "size"})) == ["label", "mode", "mode.width", "mode.height", "method"]
    assert list(inputs_for(spec, {"mode": "fancy", "mode.inner": "moving"})) == [
        "label", "mode", "mode.depth", "mode.inner", "mode.inner.fps", "mode.inner.loop", "method"]
    assert list(inputs_for(spec, {"mode": ["5", 0]})) == ["label", "mode", "method"]     # linked: unknown choice
    assert set(inputs_for(spec, {"mode": "fancy"})["mode.inner"].dynamic) == {"still", "moving"}


def test_validation_checks_only_the_chosen_options_inputs(registry) -> None:
    good = {"label": "a", "mode": "size", "mode.width": 4, "mode.height": 5, "method": "area",
            "mode.by": "not a number: another option's input is ignored"}
    assert _errors(registry, good) == []
    assert _errors(registry, {**good, "mode.width": 400}) == [("value_bigger_than_max", "mode.width")]
    missing = {k: v for k, v in good.items() if k != "mode.height"}
    assert _errors(registry, missing) == [("required_input_missing", "mode.height")]
    assert _errors(registry, {**good, "mode": "tiles"}) == [("value_not_in_list", "mode")]
    nested = {"label": "a", "mode": "fancy", "mode.depth": "32-bit", "mode.inner": "moving", "method": "area"}
    assert sorted(_errors(registry, nested)) == [("required_input_missing", "mode.inner.fps"),
                                                 ("value_not_in_list", "mode.depth")]


def test_the_node_receives_the_chosen_inputs_dotted(registry) -> None:
    engine = Engine(registry, EventBus())
    prompt = {"1": {"class_type": "Resize", "inputs": {
        "label": "a", "mode": "fancy", "mode.depth": "16-bit", "mode.inner": "moving", "mode.inner.fps": "12",
        "method": "bicubic", "mode.width": 3}}}
    checked = engine.validate(prompt)
    result = engine.execute(PromptRecord("p1", 1, prompt, {}, "c", checked.outputs_to_execute))
    assert result.status == "success", result.error
    assert Resize.seen == [{"label": "a", "mode": "fancy", "mode.depth": "16-bit", "mode.inner": "moving",
                            "mode.inner.fps": 12, "method": "bicubic"}]


def _converted(registry, widgets) -> dict:
    return workflow_to_prompt(graph(n(1, "Resize", widgets=widgets)), registry)["1"]["inputs"]


def test_saved_widgets_follow_the_chosen_option(registry) -> None:
    assert _converted(registry, ["a", "size", 4, 5, "area"]) == {
        "label": "a", "mode": "size", "mode.width": 4, "mode.height": 5, "method": "area"}
    assert _converted(registry, ["a", "factor", 2.0, "bicubic"]) == {
        "label": "a", "mode": "factor", "mode.by": 2.0, "method": "bicubic"}
    assert _converted(registry, ["a", "fancy", "16-bit", "moving", 12, 1, "area"]) == {
        "label": "a", "mode": "fancy", "mode.depth": "16-bit", "mode.inner": "moving", "mode.inner.fps": 12,
        "mode.inner.loop": 1, "method": "area"}
    assert _converted(registry, ["a", "fancy", "8-bit", "still", "area"]) == {
        "label": "a", "mode": "fancy", "mode.depth": "8-bit", "mode.inner": "still", "method": "area"}


def test_missing_widgets_values_give_the_default_options_defaults(registry) -> None:
    assert _converted(registry, None) == {"label": "x", "mode": "size", "mode.width": 8, "mode.height": 6,
                                          "method": "area"}
    by_name = {"label": "b", "mode": "factor", "mode.by": 3.0, "mode.width": 1, "method": "area"}
    assert _converted(registry, by_name) == {"label": "b", "mode": "factor", "mode.by": 3.0, "method": "area"}
