"""AVIF files for SaveImageAdvanced's "avif" format, 8-bit 4:2:0 sRGB, through Pillow's AVIF plugin (libavif).

ComfyUI encodes with PyAV's SVT-AV1 (`crf`, preset 8). Pillow takes a 0..100 `quality` instead, which
libavif maps to the AV1 quantizer as q = ((100 - quality) * 63 + 50) // 100 (avif.h), so `crf` (1..63,
lower is better) is given as the quality whose quantizer it is: 100 - crf * 100 / 63. File sizes and
artefacts follow the same scale, not the same encoder. Pixels are quantised as ComfyUI's 8-bit path does
(255 v, clamped, truncated). 10-bit and the HDR colour spaces need an encoder Pillow does not expose, and
ComfyUI's encoder takes no alpha: all three are refused with the reason.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, features

from .files import SaveTarget

BIT_DEPTHS = ("auto", "8-bit YUV420")       # of ComfyUI's "auto", "8-bit YUV420", "10-bit YUV420"
COLOR_SPACES = ("sRGB",)                    # of "sRGB", "HDR", "HDR PQ"


class AvifError(ValueError):
    """An AVIF setting this encoder cannot honour (the message says which and why)."""


def quality_for_crf(crf: int) -> int:
    """The Pillow / libavif quality whose AV1 quantizer is `crf` (see the module notes)."""
    if not 1 <= crf <= 63:
        raise AvifError(f"crf must be within 1..63, not {crf}")
    return max(0, min(100, round(100 - crf * 100 / 63)))


def _frame(image: torch.Tensor) -> Image.Image:
    channels = image.shape[-1]
    if channels not in (1, 3):
        raise AvifError(f"AVIF saving takes 1-channel (grayscale) or 3-channel RGB images, not {channels} "
                        f"channels (no alpha, as in ComfyUI)")
    pixels = (image.detach().float().cpu() * 255.0).clamp(0, 255).to(torch.uint8).numpy()
    return Image.fromarray(np.ascontiguousarray(pixels[..., 0] if channels == 1 else pixels)).convert("RGB")


def check_settings(bit_depth: str, color_space: str) -> None:
    if not features.check("avif"):
        raise AvifError("this Pillow build has no AVIF support (Pillow >= 11.3 with libavif)")
    if bit_depth not in BIT_DEPTHS:
        raise AvifError(f"bit depth {bit_depth!r} needs a 10-bit AV1 encoder, which Pillow does not expose; "
                        f"use one of {', '.join(BIT_DEPTHS)}")
    if color_space not in COLOR_SPACES:
        raise AvifError(f"input colour space {color_space!r} (BT.2020 HLG / PQ) needs 10-bit HDR signalling, "
                        f"which Pillow does not write; use sRGB")


def save_avif_images(images: torch.Tensor, target: SaveTarget, *, bit_depth: str = "auto",
                     color_space: str = "sRGB", crf: int = 18, animated: bool = False, fps: float = 6.0,
                     loop_count: int = 0, kind: str = "output") -> list[dict[str, Any]]:
    """Each image as ``<filename>_<counter:05>.avif``, or the whole batch as one animated file at `fps`
    (loop_count 0: forever); returns the UI entries."""
    check_settings(bit_depth, color_space)
    quality = quality_for_crf(crf)
    frames = [_frame(image) for image in images]
    if not frames:
        return []
    if animated:
        name = f"{target.filename.replace('%batch_num%', '0')}_{target.counter:05}.avif"
        frames[0].save(Path(target.folder) / name, "AVIF", quality=quality, save_all=True,
                       append_images=frames[1:], duration=max(1, round(1000.0 / fps)), loop=loop_count)
        return [{"filename": name, "subfolder": target.subfolder, "type": kind}]
    results = []
    for number, frame in enumerate(frames):
        name = f"{target.filename.replace('%batch_num%', str(number))}_{target.counter + number:05}.avif"
        frame.save(Path(target.folder) / name, "AVIF", quality=quality)
        results.append({"filename": name, "subfolder": target.subfolder, "type": kind})
    return results
