"""The latent-math, filter, transform, mask and string nodes through the real Engine: list inputs
and outputs (Rebatch*), latent operations, files written by the save nodes, LoadImageOutput, and
ComfyUI's FUNCTION names that plugins call."""
from __future__ import annotations

import pytest
import torch
from PIL import Image

from tests.nodes.engine_harness import Capture, Harness


@pytest.fixture
def harness(tmp_path):
    h = Harness(tmp_path)
    h.registry.register("Capture", Capture)
    Capture.seen = []
    yield h
    h.close()


def test_functions_carry_comfyuis_names(harness) -> None:
    expected = {"ImageBlur": "execute", "ImageFlip": "flip", "ImageStitch": "stitch", "MaskComposite": "combine",
                "ThresholdMask": "image_to_mask", "ImageAddNoise": "repeat", "SaveAnimatedPNG": "save_images",
                "LoadImageOutput": "load_image", "GetImageSize": "get_size", "RegexReplace": "execute"}
    for class_type, function in expected.items():
        cls = harness.registry.get(class_type)
        assert cls.FUNCTION == function and callable(getattr(cls(), function)), class_type


def test_latent_operation_chain_and_rebatch_lists(harness) -> None:
    prompt = {
        "1": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 3}},
        "2": {"class_type": "LatentOperationTonemapReinhard", "inputs": {"multiplier": 1.0}},
        "3": {"class_type": "LatentApplyOperation", "inputs": {"samples": ["1", 0], "operation": ["2", 0]}},
        "4": {"class_type": "LatentBatch", "inputs": {"samples1": ["3", 0], "samples2": ["1", 0]}},
        "5": {"class_type": "RebatchLatents", "inputs": {"latents": ["4", 0], "batch_size": 4}},
        "6": {"class_type": "Capture", "inputs": {"value": ["5", 0]}},
    }
    result = harness.run(prompt)
    assert result.status == "success", result.error
    batches = Capture.seen  # a list output fans out: Capture runs once per item
    assert [b["samples"].shape[0] for b in batches] == [4, 2]
    assert batches[0]["batch_index"] == [0, 1, 2, 0]


def test_save_animated_png_and_load_image_output(harness) -> None:
    prompt = {
        "1": {"class_type": "EmptyImage", "inputs": {"width": 16, "height": 8, "batch_size": 2, "color": 0x00FF00}},
        "2": {"class_type": "ImageRotate", "inputs": {"image": ["1", 0], "rotation": "90 degrees"}},
        "5": {"class_type": "ImageAddNoise", "inputs": {"image": ["2", 0], "seed": 3, "strength": 0.5}},
        "3": {"class_type": "SaveAnimatedPNG", "inputs": {"images": ["5", 0], "filename_prefix": "anim", "fps": 2.0,
                                                          "compress_level": 1}},
    }
    result = harness.run(prompt)
    assert result.status == "success", result.error
    assert result.outputs["3"]["images"] == [{"filename": "anim_00001_.png", "subfolder": "", "type": "output"}]
    with Image.open(harness.folders.output / "anim_00001_.png") as png:
        assert png.n_frames == 2 and png.size == (8, 16)
    choices = harness.registry.object_info("LoadImageOutput")["input"]["required"]["image"][0]
    assert choices == ["anim_00001_.png"]
    load = {"1": {"class_type": "LoadImageOutput", "inputs": {"image": "anim_00001_.png"}},
            "2": {"class_type": "GetImageSize", "inputs": {"image": ["1", 0]}},
            "3": {"class_type": "Capture", "inputs": {"value": ["2", 0]}},
            "4": {"class_type": "Capture", "inputs": {"value": ["2", 2]}}}
    result = harness.run(load)
    assert result.status == "success", result.error
    assert sorted(Capture.seen) == [2, 8]
    bad = harness.engine.validate({"1": {"class_type": "LoadImageOutput", "inputs": {"image": "../x.png"}},
                                   "2": {"class_type": "PreviewImage", "inputs": {"images": ["1", 0]}}})
    assert not bad.ok


def test_mask_nodes_and_preview(harness) -> None:
    prompt = {
        "1": {"class_type": "SolidMask", "inputs": {"value": 1.0, "width": 8, "height": 8}},
        "2": {"class_type": "FeatherMask", "inputs": {"mask": ["1", 0], "left": 4, "top": 0, "right": 0, "bottom": 0}},
        "3": {"class_type": "ThresholdMask", "inputs": {"mask": ["2", 0], "value": 0.6}},
        "4": {"class_type": "MaskPreview", "inputs": {"mask": ["3", 0]}},
        "5": {"class_type": "Capture", "inputs": {"value": ["3", 0]}},
    }
    result = harness.run(prompt)
    assert result.status == "success", result.error
    assert Capture.seen[0][0, 0].tolist() == [0, 0, 1, 1, 1, 1, 1, 1]
    assert result.outputs["4"]["images"][0]["type"] == "temp"


def test_string_nodes(harness) -> None:
    prompt = {
        "1": {"class_type": "RegexReplace", "inputs": {"string": "A cat, a CAT", "regex_pattern": "cat",
                                                       "replace": "dog"}},
        "2": {"class_type": "CaseConverter", "inputs": {"string": ["1", 0], "mode": "UPPERCASE"}},
        "3": {"class_type": "StringContains", "inputs": {"string": ["2", 0], "substring": "DOG, A DOG",
                                                         "case_sensitive": True}},
        "4": {"class_type": "Capture", "inputs": {"value": ["2", 0]}},
        "5": {"class_type": "Capture", "inputs": {"value": ["3", 0]}},
    }
    result = harness.run(prompt)
    assert result.status == "success", result.error
    assert "A DOG, A DOG" in Capture.seen and True in Capture.seen


def test_an_old_workflow_naming_a_renamed_class_runs(harness) -> None:
    from execution.workflow import workflow_to_prompt

    workflow = {"nodes": [
        {"id": 1, "type": "EmptyImage", "widgets_values": [40, 20, 1, 0], "inputs": [],
         "outputs": [{"name": "IMAGE", "type": "IMAGE", "links": [1]}]},
        {"id": 2, "type": "ResizeImagesByLongerEdge", "widgets_values": [10],
         "inputs": [{"name": "images", "type": "IMAGE", "link": 1}],
         "outputs": [{"name": "IMAGE", "type": "IMAGE", "links": [2]}]},
        {"id": 3, "type": "PreviewImage", "widgets_values": [], "inputs": [{"name": "images", "type": "IMAGE", "link": 2}]},
    ], "links": [[1, 1, 0, 2, 0, "IMAGE"], [2, 2, 0, 3, 0, "IMAGE"]]}
    prompt = workflow_to_prompt(workflow, harness.registry)
    assert prompt["2"]["class_type"] == "ImageScaleToMaxDimension"
    assert prompt["2"]["inputs"] == {"image": ["1", 0], "largest_size": 10, "upscale_method": "lanczos"}
    result = harness.run(prompt)
    assert result.status == "success", result.error


def test_image_compare_previews_both_images(harness) -> None:
    prompt = {
        "1": {"class_type": "EmptyImage", "inputs": {"width": 8, "height": 8, "batch_size": 1, "color": 0}},
        "2": {"class_type": "ImageInvert", "inputs": {"image": ["1", 0]}},
        "3": {"class_type": "ImageCompare", "inputs": {"image_a": ["1", 0], "image_b": ["2", 0]}},
    }
    result = harness.run(prompt)
    assert result.status == "success", result.error
    ui = result.outputs["3"]
    assert [len(ui["a_images"]), len(ui["b_images"])] == [1, 1]
    assert ui["a_images"][0]["type"] == "temp" and ui["a_images"][0]["filename"].startswith("comfy.compare.a")
    assert (harness.folders.temp / ui["b_images"][0]["filename"]).is_file()
