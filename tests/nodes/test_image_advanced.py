"""ResizeImageMaskNode and SaveImageAdvanced (DynamicCombo nodes of the newer templates): each resize mode
against torch / Pillow references, the PNG files (8- and 16-bit) read back by Pillow and by a decoder
written here from the PNG specification, and both nodes through the Engine with dotted inputs."""
from __future__ import annotations

import io
import json
import math
import struct
import zlib

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from execution.errors import PlexusError
from imaging import png_deep, resize_modes
from nodes.builtin.image_advanced import ResizeImageMaskNode, SaveImageAdvanced
from tests.nodes.engine_harness import Capture, Harness


def _image(b=2, h=12, w=20, c=3, seed=0) -> torch.Tensor:
    return torch.rand(b, h, w, c, generator=torch.Generator().manual_seed(seed))


def _torch_resize(x: torch.Tensor, width: int, height: int, mode: str) -> torch.Tensor:
    return F.interpolate(x.movedim(-1, 1), size=(height, width), mode=mode).movedim(1, -1)


def _resize(x, resize_type, method="bilinear", **params):
    (out,) = ResizeImageMaskNode().run(input=x, resize_type={"resize_type": resize_type, **params}, scale_method=method)
    return out


# --- resize modes ----------------------------------------------------------------------------------------

def test_scale_dimensions_stretches_or_centre_crops() -> None:
    x = _image()
    torch.testing.assert_close(_resize(x, "scale dimensions", "area", width=10, height=9, crop="disabled"),
                               _torch_resize(x, 10, 9, "area"))
    # crop "center": 20x12 to a square keeps the middle 12 columns (4 cut on each side), then resizes
    torch.testing.assert_close(_resize(x, "scale dimensions", width=6, height=6, crop="center"),
                               _torch_resize(x[:, :, 4:16], 6, 6, "bilinear"))


def test_a_zero_side_follows_the_aspect_ratio_and_both_zero_is_the_input() -> None:
    x = _image()
    assert _resize(x, "scale dimensions", width=10, height=0, crop="disabled").shape == (2, 6, 10, 3)
    assert _resize(x, "scale dimensions", width=0, height=3, crop="disabled").shape == (2, 3, 5, 3)
    assert _resize(x, "scale dimensions", width=0, height=0, crop="center") is x
    assert _resize(x, "scale width", width=40).shape == (2, 24, 40, 3)
    assert _resize(x, "scale height", height=6).shape == (2, 6, 10, 3)


@pytest.mark.parametrize("resize_type,params,size", [
    ("scale by multiplier", {"multiplier": 1.5}, (30, 18)),
    ("scale longer dimension", {"longer_size": 30}, (30, 18)),
    ("scale shorter dimension", {"shorter_size": 6}, (10, 6)),
    ("scale total pixels", {"megapixels": 0.001}, (round(20 * math.sqrt(1048 / 240)), round(12 * math.sqrt(1048 / 240)))),
])
def test_sizes_of_the_aspect_keeping_modes(resize_type, params, size) -> None:
    x = _image()
    out = _resize(x, resize_type, "bicubic", **params)
    torch.testing.assert_close(out, _torch_resize(x, size[0], size[1], "bicubic"))


def test_portrait_and_square_inputs_for_longer_and_shorter() -> None:
    tall = _image(h=20, w=10)
    assert _resize(tall, "scale longer dimension", longer_size=8).shape[1:3] == (8, 4)
    assert _resize(tall, "scale shorter dimension", shorter_size=8).shape[1:3] == (16, 8)
    square = _image(h=9, w=9)
    assert _resize(square, "scale longer dimension", longer_size=5).shape[1:3] == (5, 5)


def test_match_size_takes_an_image_or_a_mask_and_masks_stay_masks() -> None:
    x = _image()
    mask = torch.rand(1, 7, 5)
    assert _resize(x, "match size", match=mask, crop="disabled").shape == (2, 7, 5, 3)
    out = _resize(mask, "match size", "nearest-exact", match=x, crop="disabled")
    assert out.shape == (1, 12, 20)
    torch.testing.assert_close(out, F.interpolate(mask[:, None], size=(12, 20), mode="nearest-exact")[:, 0])


def test_scale_to_multiple_covers_the_floor_box_then_centre_crops() -> None:
    x = _image(h=21, w=30)
    out = _resize(x, "scale to multiple", "bilinear", multiple=8)
    # box 24 x 16; 24/30 = 0.8 >= 16/21: width 24, height ceil(21 * 0.8) = 17, then the middle 16 rows
    expected = _torch_resize(x, 24, 17, "bilinear")[:, 0:16]
    torch.testing.assert_close(out, expected)
    assert _resize(_image(h=16, w=24), "scale to multiple", multiple=8).shape[1:3] == (16, 24)   # already fits
    assert _resize(x, "scale to multiple", multiple=1) is x


def test_lanczos_is_pillows() -> None:
    x = _image(b=1)
    out = _resize(x, "scale by multiplier", "lanczos", multiplier=2.0)
    pixels = (x[0].numpy() * 255).round().astype(np.uint8)
    reference = np.asarray(Image.fromarray(pixels).resize((40, 24), Image.Resampling.LANCZOS), dtype=np.float32) / 255
    np.testing.assert_allclose(out[0].numpy(), reference, atol=1e-6)


def test_unknown_resize_type_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown resize type"):
        resize_modes.resize_by_type(_image(), "scale sideways", {}, "area")


# --- the specs ---------------------------------------------------------------------------------------------

def test_specs_are_comfyuis_dynamic_combos() -> None:
    resize = ResizeImageMaskNode.INPUT_TYPES()["required"]
    kind, options = resize["resize_type"]
    assert kind == "COMFY_DYNAMICCOMBO_V3"
    assert [o["key"] for o in options["options"]] == list(resize_modes.RESIZE_TYPES)
    dims = options["options"][0]["inputs"]["required"]
    assert list(dims) == ["width", "height", "crop"] and dims["width"] == ("INT", {"default": 512, "min": 0,
                                                                                   "max": 16384, "step": 1})
    assert resize["scale_method"] == (["nearest-exact", "bilinear", "area", "bicubic", "lanczos"], {"default": "area"})
    assert ResizeImageMaskNode.RETURN_NAMES == ("resized",) and ResizeImageMaskNode.CATEGORY == "transform"
    save = SaveImageAdvanced.INPUT_TYPES()
    formats = {o["key"]: o["inputs"]["required"] for o in save["required"]["format"][1]["options"]}
    assert list(formats) == ["png", "exr", "avif"]
    assert formats["png"]["bit_depth"] == (["8-bit", "16-bit"], {"default": "8-bit", "advanced": True})
    assert formats["avif"]["save_mode"][0] == "COMFY_DYNAMICCOMBO_V3"
    assert save["hidden"] == {"prompt": "PROMPT", "extra_pnginfo": "EXTRA_PNGINFO"}
    assert SaveImageAdvanced.OUTPUT_NODE and SaveImageAdvanced.RETURN_TYPES == ("IMAGE",)


# --- PNG files -----------------------------------------------------------------------------------------------

def _decode_png(data: bytes) -> tuple[dict, dict[str, str], bytes]:
    """IHDR fields, tEXt entries and the inflated scanlines, each chunk's CRC checked (PNG spec 5.3)."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    position, header, texts, idat = 8, {}, {}, b""
    while position < len(data):
        (length,) = struct.unpack(">I", data[position:position + 4])
        kind = data[position + 4:position + 8]
        body = data[position + 8:position + 8 + length]
        (crc,) = struct.unpack(">I", data[position + 8 + length:position + 12 + length])
        assert crc == zlib.crc32(kind + body)
        if kind == b"IHDR":
            header = dict(zip(("width", "height", "depth", "colour", "compression", "filter", "interlace"),
                              struct.unpack(">IIBBBBB", body)))
        elif kind == b"tEXt":
            key, value = body.split(b"\x00", 1)
            texts[key.decode("latin-1")] = value.decode("utf-8")
        elif kind == b"IDAT":
            idat += body
        position += 12 + length
    return header, texts, zlib.decompress(idat)


@pytest.mark.parametrize("channels", [3, 4])
def test_16_bit_png_holds_every_sample_and_the_metadata(channels) -> None:
    image = _image(b=1, h=5, w=7, c=channels)[0]
    data = png_deep.encode_png16(image, png_deep.text_entries({"1": {"class_type": "X"}}, {"workflow": {"a": 1}}))
    header, texts, raw = _decode_png(data)
    assert header == {"width": 7, "height": 5, "depth": 16, "colour": 2 if channels == 3 else 6,
                      "compression": 0, "filter": 0, "interlace": 0}
    assert json.loads(texts["prompt"]) == {"1": {"class_type": "X"}} and json.loads(texts["workflow"]) == {"a": 1}
    stride = 1 + 7 * channels * 2
    rows = [raw[r * stride:(r + 1) * stride] for r in range(5)]
    assert all(row[0] == 0 for row in rows)                                  # filter type 0 on each row
    samples = np.frombuffer(b"".join(row[1:] for row in rows), dtype=">u2").reshape(5, 7, channels)
    np.testing.assert_array_equal(samples, np.rint(image.numpy() * 65535).astype(np.uint16))
    # Pillow reads the same file (as 8-bit: the high bytes)
    read = np.asarray(Image.open(io.BytesIO(data)))
    np.testing.assert_array_equal(read, (samples >> 8).astype(np.uint8))


# --- through the Engine ---------------------------------------------------------------------------------------

@pytest.fixture
def harness(tmp_path):
    h = Harness(tmp_path)
    h.registry.register("TestCapture", Capture)
    Capture.seen = []
    yield h
    h.close()


def _resize_then_save(bit_depth="8-bit", file_format="png") -> dict:
    return {
        "1": {"class_type": "EmptyImage", "inputs": {"width": 40, "height": 24, "batch_size": 2, "color": 0x336699}},
        "2": {"class_type": "ResizeImageMaskNode", "inputs": {
            "input": ["1", 0], "resize_type": "scale dimensions", "resize_type.width": 16, "resize_type.height": 16,
            "resize_type.crop": "center", "scale_method": "area"}},
        "3": {"class_type": "SaveImageAdvanced", "inputs": {
            "images": ["2", 0], "filename_prefix": "adv/out", "format": file_format,
            "format.bit_depth": bit_depth, "format.input_color_space": "sRGB"}},
        "4": {"class_type": "TestCapture", "inputs": {"value": ["3", 0]}},
    }


@pytest.mark.parametrize("bit_depth", ["8-bit", "16-bit"])
def test_resize_and_save_through_the_engine(harness, bit_depth) -> None:
    prompt = _resize_then_save(bit_depth)
    result = harness.run(prompt, {"extra_pnginfo": {"workflow": {"nodes": []}}})
    assert result.status == "success", result.error
    images = result.outputs["3"]["images"]
    assert [i["filename"] for i in images] == ["out_00001.png", "out_00002.png"]
    assert {i["subfolder"] for i in images} == {"adv"} and {i["type"] for i in images} == {"output"}
    (passed,) = Capture.seen
    assert passed.shape == (2, 16, 16, 3)
    saved = Image.open(harness.folders.output / "adv" / "out_00001.png")
    assert saved.size == (16, 16) and json.loads(saved.info["prompt"])["3"]["class_type"] == "SaveImageAdvanced"
    assert json.loads(saved.info["workflow"]) == {"nodes": []}
    header, _, _ = _decode_png((harness.folders.output / "adv" / "out_00002.png").read_bytes())
    assert header["depth"] == (16 if bit_depth == "16-bit" else 8)
    np.testing.assert_allclose(np.asarray(saved, dtype=np.float32)[0, 0] / 255,
                               [0x33 / 255, 0x66 / 255, 0x99 / 255], atol=1 / 255)


def test_bad_sub_inputs_are_validation_errors_and_exr_is_refused_clearly(harness) -> None:
    prompt = _resize_then_save()
    prompt["3"]["inputs"]["format.bit_depth"] = "10-bit"
    checked = harness.engine.validate(prompt)
    errors = [e for entry in checked.node_errors.values() for e in entry["errors"]]
    assert [(e["type"], e["extra_info"]["input_name"]) for e in errors] == [("value_not_in_list", "format.bit_depth")]
    prompt = _resize_then_save("32-bit float", "exr")
    result = harness.run(prompt)
    assert result.status == "error" and "cannot write exr" in result.error["exception_message"]
    with pytest.raises(PlexusError, match="avif.*10-bit AV1 encoder"):      # 8-bit avif: tests/nodes/test_save_avif.py
        SaveImageAdvanced().run(_image(), "x", {"format": "avif", "bit_depth": "10-bit YUV420",
                                                "input_color_space": "sRGB", "crf": 18})
