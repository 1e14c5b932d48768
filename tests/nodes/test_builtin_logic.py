"""The 2026 logic nodes through the real Engine: the switch evaluates only its chosen branch, the
math expression reads its dotted autogrow inputs, number conversion, JSON extraction."""
from __future__ import annotations

import pytest

from tests.nodes.engine_harness import Capture, Harness


class Counted:
    """Counts its runs, so a test can tell whether a branch was evaluated."""

    runs: list[str] = []

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"tag": ("STRING", {})}}

    RETURN_TYPES = ("STRING",)
    FUNCTION = "run"
    CATEGORY = "_for_testing"

    def run(self, tag):
        Counted.runs.append(tag)
        return (tag,)


@pytest.fixture
def harness(tmp_path):
    h = Harness(tmp_path)
    h.registry.register("Capture", Capture)
    h.registry.register("Counted", Counted)
    Capture.seen, Counted.runs = [], []
    yield h
    h.close()


@pytest.mark.parametrize("switch,chosen", [(True, "yes"), (False, "no")])
def test_switch_evaluates_only_the_chosen_branch(harness, switch: bool, chosen: str) -> None:
    prompt = {
        "1": {"class_type": "Counted", "inputs": {"tag": "yes"}},
        "2": {"class_type": "Counted", "inputs": {"tag": "no"}},
        "3": {"class_type": "ComfySwitchNode", "inputs": {"switch": switch, "on_true": ["1", 0], "on_false": ["2", 0]}},
        "4": {"class_type": "Capture", "inputs": {"value": ["3", 0]}},
    }
    result = harness.run(prompt)
    assert result.status == "success", result.error
    assert Capture.seen == [chosen] and Counted.runs == [chosen]


def test_switch_with_one_branch_passes_it_through(harness) -> None:
    prompt = {"1": {"class_type": "Counted", "inputs": {"tag": "only"}},
              "3": {"class_type": "ComfySwitchNode", "inputs": {"switch": True, "on_false": ["1", 0]}},
              "4": {"class_type": "Capture", "inputs": {"value": ["3", 0]}}}
    assert harness.run(prompt).status == "success" and Capture.seen == ["only"]


def test_math_expression_reads_dotted_inputs_and_converts(harness) -> None:
    prompt = {
        "1": {"class_type": "PrimitiveInt", "inputs": {"value": 2049}},
        "2": {"class_type": "PrimitiveString", "inputs": {"value": "3.5"}},
        "3": {"class_type": "ComfyNumberConvert", "inputs": {"value": ["2", 0]}},
        "4": {"class_type": "ComfyMathExpression", "inputs": {"expression": "a * b if a > 2048 else 0",
                                                              "values.a": ["1", 0], "values.b": ["3", 0]}},
        "5": {"class_type": "Capture", "inputs": {"value": ["4", 0]}},
        "6": {"class_type": "Capture", "inputs": {"value": ["4", 1]}},
        "7": {"class_type": "Capture", "inputs": {"value": ["4", 2]}},
    }
    result = harness.run(prompt)
    assert result.status == "success", result.error
    assert sorted(Capture.seen, key=repr) == sorted([2049 * 3.5, 7171, True], key=repr)
    info = harness.registry.object_info("ComfyMathExpression")
    assert info["input_order"]["required"] == ["expression", "values.a"]
    assert info["output"] == ["FLOAT", "INT", "BOOLEAN"] and info["output_name"] == ["FLOAT", "INT", "BOOL"]


def test_math_expression_error_is_structured(harness) -> None:
    prompt = {"1": {"class_type": "PrimitiveInt", "inputs": {"value": 1}},
              "4": {"class_type": "ComfyMathExpression", "inputs": {"expression": "__import__('os')",
                                                                    "values.a": ["1", 0]}},
              "5": {"class_type": "Capture", "inputs": {"value": ["4", 0]}}}
    result = harness.run(prompt)
    assert result.status == "error"
    assert "unknown function '__import__'" in result.error["exception_message"]


def test_json_extract_string(harness) -> None:
    prompt = {"1": {"class_type": "JsonExtractString", "inputs": {"json_string": '{"positive_prompt": "a cat"}',
                                                                  "key": "positive_prompt"}},
              "2": {"class_type": "Capture", "inputs": {"value": ["1", 0]}}}
    assert harness.run(prompt).status == "success" and Capture.seen == ["a cat"]


def test_batch_images_node_and_resolution_selector(harness) -> None:
    prompt = {
        "1": {"class_type": "ResolutionSelector", "inputs": {"aspect_ratio": "3:2 (Photo)", "megapixels": 0.1,
                                                             "multiple": 16}},
        "2": {"class_type": "EmptyImage", "inputs": {"width": ["1", 0], "height": ["1", 1], "batch_size": 1,
                                                     "color": 0}},
        "3": {"class_type": "EmptyImage", "inputs": {"width": 8, "height": 8, "batch_size": 2, "color": 0xFFFFFF}},
        "4": {"class_type": "BatchImagesNode", "inputs": {"images.image0": ["2", 0], "images.image2": ["3", 0]}},
        "5": {"class_type": "Capture", "inputs": {"value": ["4", 0]}},
    }
    result = harness.run(prompt)
    assert result.status == "success", result.error
    batch = Capture.seen[0]
    assert batch.shape == (3, 272, 400, 3)          # 0.1 MP at 3:2, sides multiples of 16
    assert batch[0].max() == 0 and batch[1:].min() == 1
