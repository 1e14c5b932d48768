"""Node replacements: an old workflow naming a renamed ComfyUI class runs as its successor."""
from __future__ import annotations

from execution.replacements import CORE_REPLACEMENTS, active, replace_in_prompt, replace_in_workflow


class Registry(set):
    """A set of class names is all the replacement logic needs."""


def test_only_entries_whose_old_class_is_missing_and_new_class_present_apply() -> None:
    found = active(Registry({"ImageScaleToMaxDimension", "ImageBatch", "BatchImagesNode", "ConditioningAverage"}))
    assert set(found) == {"ResizeImagesByLongerEdge", "ConditioningAverage "}
    assert all(r.as_json()["new_node_id"] for r in CORE_REPLACEMENTS)


def test_api_prompt_inputs_are_renamed_and_fixed_values_set() -> None:
    prompt = {"1": {"class_type": "LoadImage", "inputs": {"image": "a.png"}},
              "2": {"class_type": "ResizeImagesByLongerEdge", "inputs": {"images": ["1", 0], "longer_edge": 768}}}
    out = replace_in_prompt(prompt, Registry({"LoadImage", "ImageScaleToMaxDimension"}))
    assert out["2"] == {"class_type": "ImageScaleToMaxDimension",
                        "inputs": {"image": ["1", 0], "largest_size": 768, "upscale_method": "lanczos"}}
    assert prompt["2"]["class_type"] == "ResizeImagesByLongerEdge"
    assert replace_in_prompt(prompt, Registry({"ResizeImagesByLongerEdge"})) is prompt


def test_workflow_nodes_in_subgraphs_get_the_new_type_and_named_widgets() -> None:
    old = {"id": 5, "type": "ResizeImagesByLongerEdge", "widgets_values": [1024],
           "inputs": [{"name": "images", "type": "IMAGE", "link": 1}]}
    workflow = {"nodes": [dict(old)], "definitions": {"subgraphs": [{"id": "s", "nodes": [dict(old)]}]}}
    out = replace_in_workflow(workflow, Registry({"ImageScaleToMaxDimension"}))
    for node in (out["nodes"][0], out["definitions"]["subgraphs"][0]["nodes"][0]):
        assert node["type"] == "ImageScaleToMaxDimension"
        assert node["inputs"][0]["name"] == "image"
        assert node["widgets_values"] == {"largest_size": 1024, "upscale_method": "lanczos"}
    assert workflow["nodes"][0]["type"] == "ResizeImagesByLongerEdge"
