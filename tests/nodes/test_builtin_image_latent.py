"""Latent, image and mask nodes through the real Engine: shapes, files and ComfyUI's output shapes."""
import json

import pytest
import torch
from PIL import Image

from imaging import latent_files
from tests.nodes.engine_harness import Harness


@pytest.fixture
def harness(tmp_path):
    h = Harness(tmp_path)
    yield h
    h.close()


def test_builtin_nodes_register_with_comfyui_specs(harness):
    empty = harness.registry.object_info("EmptyLatentImage")
    width = empty["input"]["required"]["width"]
    assert width[0] == "INT" and {k: width[1][k] for k in ("default", "min", "max", "step")} == \
        {"default": 512, "min": 16, "max": 16384, "step": 8}
    assert empty["display_name"] == "Empty Latent Image" and empty["category"] == "latent"
    assert harness.registry.object_info("LatentUpscale")["input_order"]["required"] == \
        ["samples", "upscale_method", "width", "height", "crop"]
    save = harness.registry.object_info("SaveImage")
    assert save["output_node"] is True and save["input"]["hidden"] == {"prompt": "PROMPT",
                                                                       "extra_pnginfo": "EXTRA_PNGINFO"}


def test_save_image_writes_png_with_prompt_and_workflow(harness):
    prompt = {
        "1": {"class_type": "EmptyImage", "inputs": {"width": 32, "height": 16, "batch_size": 2, "color": 0xFF0000}},
        "2": {"class_type": "ImageInvert", "inputs": {"image": ["1", 0]}},
        "3": {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": "t/%width%x%height%"}},
    }
    workflow = {"nodes": [], "links": []}
    result = harness.run(prompt, {"extra_pnginfo": {"workflow": workflow}})
    assert result.status == "success", result.error
    images = result.outputs["3"]["images"]
    assert images == [{"filename": "32x16_00001_.png", "subfolder": "t", "type": "output"},
                      {"filename": "32x16_00002_.png", "subfolder": "t", "type": "output"}]
    with Image.open(harness.folders.output / "t" / "32x16_00001_.png") as png:
        assert png.size == (32, 16) and png.getpixel((0, 0)) == (0, 255, 255)
        assert json.loads(png.text["prompt"]) == prompt
        assert json.loads(png.text["workflow"]) == workflow


def test_load_image_and_mask_from_input_folder(harness):
    rgba = Image.new("RGBA", (24, 8), (10, 20, 30, 255))
    rgba.putpixel((0, 0), (10, 20, 30, 0))
    rgba.save(harness.folders.input / "a.png")
    prompt = {
        "1": {"class_type": "LoadImage", "inputs": {"image": "a.png"}},
        "2": {"class_type": "GrowMask", "inputs": {"mask": ["1", 1], "expand": 1, "tapered_corners": False}},
        "3": {"class_type": "MaskToImage", "inputs": {"mask": ["2", 0]}},
        "4": {"class_type": "ImageCompositeMasked", "inputs": {"destination": ["1", 0], "source": ["3", 0],
                                                               "x": 0, "y": 0, "resize_source": False,
                                                               "mask": ["2", 0]}},
        "5": {"class_type": "PreviewImage", "inputs": {"images": ["4", 0]}},
    }
    assert harness.registry.get("LoadImage").INPUT_TYPES()["required"]["image"][0] == ["a.png"]
    result = harness.run(prompt)
    assert result.status == "success", result.error
    entry = result.outputs["5"]["images"][0]
    assert entry["type"] == "temp" and entry["filename"].startswith("ComfyUI_temp_")
    with Image.open(harness.folders.temp / entry["filename"]) as png:
        assert png.getpixel((1, 1)) == (255, 255, 255)       # inside the grown mask: white source pasted
        assert png.getpixel((5, 5)) == (10, 20, 30)


def test_load_image_rejects_paths_outside_input(harness):
    prompt = {"1": {"class_type": "LoadImage", "inputs": {"image": "../secret.png"}},
              "2": {"class_type": "PreviewImage", "inputs": {"images": ["1", 0]}}}
    checked = harness.engine.validate(prompt)
    assert not checked.ok
    assert "1" in checked.node_errors


def test_latent_chain_and_latent_files(harness):
    prompt = {
        "1": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 128, "batch_size": 4}},
        "2": {"class_type": "LatentFromBatch", "inputs": {"samples": ["1", 0], "batch_index": 1, "length": 2}},
        "3": {"class_type": "LatentUpscaleBy", "inputs": {"samples": ["2", 0], "upscale_method": "bislerp",
                                                          "scale_by": 2.0}},
        "4": {"class_type": "LatentRotate", "inputs": {"samples": ["3", 0], "rotation": "90 degrees"}},
        "5": {"class_type": "SaveLatent", "inputs": {"samples": ["4", 0], "filename_prefix": "latents/x"}},
    }
    result = harness.run(prompt)
    assert result.status == "success", result.error
    saved = result.outputs["5"]["latents"][0]
    assert saved == {"filename": "x_00001_.latent", "subfolder": "latents", "type": "output"}
    loaded = latent_files.load_latent(harness.folders.output / "latents" / "x_00001_.latent")
    assert loaded["samples"].shape == (2, 4, 16, 32)


def test_latent_composite_masked_node(harness):
    from nodes.builtin.latent import LatentCompositeMasked
    dest = {"samples": torch.zeros(1, 4, 8, 8)}
    src = {"samples": torch.ones(1, 4, 2, 2)}
    (out,) = LatentCompositeMasked().run(dest, src, 16, 8, False)
    assert out["samples"][0, 0, 1:3, 2:4].eq(1).all() and out["samples"].sum() == 16
