"""SaveImageAdvanced's avif format (imaging.avif): 8-bit sRGB stills and animations that Pillow reads back
close to the input, crf as libavif's quantizer, and the settings it cannot honour refused with the reason."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from imaging import avif
from tests.nodes.engine_harness import Harness


@pytest.fixture
def harness(tmp_path):
    h = Harness(tmp_path)
    yield h
    h.close()


def _images(count: int = 2) -> torch.Tensor:
    """Smooth gradients (AV1 keeps them well at a low crf), one colour cast per image."""
    y, x = torch.meshgrid(torch.linspace(0, 1, 32), torch.linspace(0, 1, 48), indexing="ij")
    return torch.stack([torch.stack([x, y, (x + y) / 2 * (n + 1) / count], -1) for n in range(count)])


def _prompt(images_node: dict, mode: str = "still images", crf: int = 10, **format_inputs) -> dict:
    inputs = {"images": ["1", 0], "filename_prefix": "av/pic", "format": "avif", "format.bit_depth": "auto",
              "format.input_color_space": "sRGB", "format.crf": crf, "format.save_mode": mode, **format_inputs}
    return {"1": images_node, "3": {"class_type": "SaveImageAdvanced", "inputs": inputs}}


class _Given:
    """A test node that outputs a fixed IMAGE batch."""
    images = None
    RETURN_TYPES = ("IMAGE",)
    FUNCTION = "run"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {}}

    def run(self):
        return (_Given.images,)


def test_crf_is_the_libavif_quantizer_of_the_quality() -> None:
    for crf in (1, 18, 40, 63):
        quality = avif.quality_for_crf(crf)
        assert abs(((100 - quality) * 63 + 50) // 100 - crf) <= 1          # libavif's quality -> quantizer
    with pytest.raises(avif.AvifError, match="1..63"):
        avif.quality_for_crf(0)


def test_still_images_through_the_engine_read_back_close(harness) -> None:
    _Given.images = _images(2)
    harness.registry.register("TestImages", _Given)
    result = harness.run(_prompt({"class_type": "TestImages", "inputs": {}}))
    assert result.status == "success", result.error
    entries = result.outputs["3"]["images"]
    assert [e["filename"] for e in entries] == ["pic_00001.avif", "pic_00002.avif"]
    for n, entry in enumerate(entries):
        with Image.open(harness.folders.output / "av" / entry["filename"]) as saved:
            assert saved.format == "AVIF" and saved.size == (48, 32)
            pixels = np.asarray(saved.convert("RGB"), dtype=np.float32) / 255
        error = np.abs(pixels - _Given.images[n].numpy())
        assert error.mean() < 0.02 and error.max() < 0.15                    # lossy, but the same picture


def test_crf_trades_size_for_quality(harness, tmp_path) -> None:
    from storage.folders import Folders
    noisy = torch.rand(1, 64, 64, 3, generator=torch.Generator().manual_seed(0))
    sizes = {}
    for crf in (5, 55):
        target = Folders(tmp_path / f"c{crf}").save_target("n")
        [entry] = avif.save_avif_images(noisy, target, crf=crf)
        sizes[crf] = (target.folder / entry["filename"]).stat().st_size
    assert sizes[5] > 2 * sizes[55]


def test_animated_saves_the_batch_as_one_file_at_the_fps(harness) -> None:
    _Given.images = _images(3)
    harness.registry.register("TestImages", _Given)
    result = harness.run(_prompt({"class_type": "TestImages", "inputs": {}}, mode="animated",
                                 **{"format.save_mode.fps": 4.0, "format.save_mode.loop_count": 0}))
    assert result.status == "success", result.error
    [entry] = result.outputs["3"]["images"]
    with Image.open(harness.folders.output / "av" / entry["filename"]) as saved:
        saved.load()                                                         # frame info is read on load
        assert saved.n_frames == 3 and saved.info["duration"] == 250
        saved.seek(2)
        last = np.asarray(saved.convert("RGB"), dtype=np.float32) / 255
    assert np.abs(last - _Given.images[2].numpy()).mean() < 0.02


@pytest.mark.parametrize("bit_depth, space, reason", [
    ("10-bit YUV420", "sRGB", "10-bit AV1 encoder"), ("auto", "HDR", "HDR signalling"),
    ("auto", "HDR PQ", "HDR signalling")])
def test_what_pillow_cannot_encode_is_refused(harness, bit_depth, space, reason) -> None:
    _Given.images = _images(1)
    harness.registry.register("TestImages", _Given)
    result = harness.run(_prompt({"class_type": "TestImages", "inputs": {}}, **{"format.bit_depth": bit_depth,
                                                                               "format.input_color_space": space}))
    assert result.status == "error" and reason in result.error["exception_message"]


def test_alpha_is_refused_as_comfyui_does(tmp_path) -> None:
    from storage.folders import Folders
    with pytest.raises(avif.AvifError, match="no alpha"):
        avif.save_avif_images(torch.rand(1, 8, 8, 4), Folders(tmp_path).save_target("a"))
