import json
import time

import numpy as np
import pytest
import torch
from PIL import Image

from execution.errors import PlexusError
from imaging import files
from storage.folders import Folders


def test_save_png_names_counters_and_metadata(tmp_path):
    images = torch.rand(2, 8, 8, 3)
    prompt = {"1": {"class_type": "SaveImage", "inputs": {"filename_prefix": "x"}}}
    folders = Folders(tmp_path)
    out = files.save_png_batch(images, folders.save_target("run/pic", 8, 8, tmp_path), kind="output",
                               prompt=prompt, extra_pnginfo={"workflow": {"nodes": []}})
    assert [o["filename"] for o in out] == ["pic_00001_.png", "pic_00002_.png"]
    assert out[0]["subfolder"] == "run" and out[0]["type"] == "output"
    again = files.save_png_batch(images[:1], folders.save_target("run/pic", 8, 8, tmp_path), kind="output")
    assert again[0]["filename"] == "pic_00003_.png"
    with Image.open(tmp_path / "run" / "pic_00001_.png") as img:
        assert json.loads(img.text["prompt"]) == prompt
        assert json.loads(img.text["workflow"]) == {"nodes": []}
        pixels = np.asarray(img)
    # 8-bit quantisation truncates, as ComfyUI's SaveImage does (same seed -> same PNG bytes)
    assert np.array_equal(pixels, np.floor(255.0 * images[0].numpy()).astype(np.uint8))


def test_prefix_expansion():
    now = time.strptime("2026-11-22 10:05:09", "%Y-%m-%d %H:%M:%S")
    prompt = {"5": {"class_type": "EmptyLatentImage", "inputs": {"width": 640}}}
    workflow = {"nodes": [{"id": 5, "title": "Size"}]}
    assert files.expand_prefix("%date:yyyy-MM-dd%/img_%width%", now=now) == "2026-11-22/img_%width%"
    assert files.expand_prefix("%Size.width%_%EmptyLatentImage.width%", prompt=prompt, workflow=workflow) == "640_640"
    assert files.expand_prefix("%unknown%") == "%unknown%"


def test_load_image_with_alpha_gives_inverted_mask(tmp_path):
    rgba = np.zeros((4, 6, 4), dtype=np.uint8)
    rgba[..., 0] = 255
    rgba[..., 3] = 255
    rgba[0, 0, 3] = 0
    Image.fromarray(rgba, "RGBA").save(tmp_path / "a.png")
    image, mask = files.load_image(tmp_path / "a.png")
    assert image.shape == (1, 4, 6, 3) and mask.shape == (1, 4, 6)
    assert image[0, 1, 1].tolist() == [1.0, 0.0, 0.0]
    assert mask[0, 0, 0] == 1.0 and mask[0, 1, 1] == 0.0
    red = files.load_mask(tmp_path / "a.png", "red")
    assert red.shape == (1, 4, 6) and (red == 1).all()


def test_load_image_without_alpha_and_animation(tmp_path):
    frames = [Image.new("RGB", (5, 3), (i * 50, 0, 0)) for i in range(3)]
    frames[0].save(tmp_path / "anim.gif", save_all=True, append_images=frames[1:])
    image, mask = files.load_image(tmp_path / "anim.gif")
    assert image.shape == (3, 3, 5, 3)
    assert mask.shape == (3, 64, 64) and not mask.any()


def test_corrupt_image_is_a_clear_error(tmp_path):
    (tmp_path / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    with pytest.raises(PlexusError, match="bad.png"):
        files.load_image(tmp_path / "bad.png")


def test_latent_file_round_trip_and_legacy_scale(tmp_path):
    import safetensors.torch
    from imaging import latent_files

    samples = torch.randn(1, 4, 8, 8)
    latent_files.save_latent(samples, tmp_path / "a.latent", prompt={"1": {}})
    assert torch.equal(latent_files.load_latent(tmp_path / "a.latent")["samples"], samples)
    safetensors.torch.save_file({"latent_tensor": samples}, str(tmp_path / "old.latent"))
    torch.testing.assert_close(latent_files.load_latent(tmp_path / "old.latent")["samples"], samples / 0.18215)
    (tmp_path / "bad.latent").write_bytes(b"junk")
    with pytest.raises(PlexusError, match="bad.latent"):
        latent_files.load_latent(tmp_path / "bad.latent")
