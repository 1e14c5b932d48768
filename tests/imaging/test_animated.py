"""imaging.animated: the files Pillow reads back have every frame, the frame time and ComfyUI's
metadata layout (APNG comf chunks, WebP EXIF strings)."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image

from imaging import animated


@dataclass
class Target:
    folder: Path
    filename: str = "anim"
    counter: int = 3
    subfolder: str = ""


def _frames() -> torch.Tensor:
    frames = torch.zeros(3, 8, 8, 3)
    for i in range(3):
        frames[i, ..., i] = 1.0
    return frames


def test_apng_has_all_frames_and_the_workflow(tmp_path: Path) -> None:
    results = animated.save_apng(_frames(), Target(tmp_path), kind="output", fps=4.0, compress_level=1,
                                 prompt={"1": {"class_type": "X"}}, extra_pnginfo={"workflow": {"nodes": []}})
    assert results == [{"filename": "anim_00003_.png", "subfolder": "", "type": "output"}]
    raw = (tmp_path / "anim_00003_.png").read_bytes()
    assert b"comfprompt\x00" + json.dumps({"1": {"class_type": "X"}}).encode() in raw
    assert b"comfworkflow\x00" in raw
    with Image.open(tmp_path / "anim_00003_.png") as image:
        assert image.n_frames == 3 and image.info["duration"] == 250
        image.seek(2)
        assert image.convert("RGB").getpixel((0, 0)) == (0, 0, 255)


def test_webp_has_all_frames_and_exif_metadata(tmp_path: Path) -> None:
    animated.save_webp(_frames(), Target(tmp_path), kind="output", fps=10.0, lossless=True, quality=80,
                       method="fastest", prompt={"a": 1}, extra_pnginfo={"workflow": {"b": 2}, "other": 3})
    with Image.open(tmp_path / "anim_00003_.webp") as image:
        assert image.n_frames == 3
        exif = image.getexif()
        assert exif[0x0110] == 'prompt:{"a": 1}'
        assert exif[0x010F] == 'workflow:{"b": 2}' and exif[0x010E] == "other:3"
        image.seek(1)
        assert image.convert("RGB").getpixel((4, 4)) == (0, 255, 0)
