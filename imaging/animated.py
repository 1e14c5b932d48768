"""Animated PNG (APNG) and animated WebP files from an IMAGE batch, one frame per image.

Workflow metadata goes where ComfyUI puts it, so that dropping the file on the editor restores the
graph: in the APNG as ``comf`` chunks after the image data (``b"<key>\\0<json>"``), in the WebP as EXIF
strings ``"<key>:<json>"`` (the prompt in tag 0x0110 "Model", the other entries counting down from
0x010F "Make").
"""
from __future__ import annotations

import json
from typing import Any

import torch
from PIL import PngImagePlugin

from imaging.files import SaveTarget, to_pil

WEBP_METHODS = {"default": 4, "fastest": 0, "slowest": 6}
_EXIF_MODEL, _EXIF_MAKE = 0x0110, 0x010F


def _frame_ms(fps: float) -> int:
    return int(1000.0 / fps)


def apng_metadata(prompt: dict | None, extra_pnginfo: dict | None) -> PngImagePlugin.PngInfo:
    info = PngImagePlugin.PngInfo()
    entries = ([("prompt", prompt)] if prompt is not None else []) + list((extra_pnginfo or {}).items())
    for key, value in entries:
        info.add(b"comf", key.encode("latin-1") + b"\0" + json.dumps(value).encode("latin-1"), after_idat=True)
    return info


def save_apng(images: torch.Tensor, target: SaveTarget, *, kind: str, fps: float, compress_level: int,
              prompt: dict | None = None, extra_pnginfo: dict | None = None,
              with_metadata: bool = True) -> list[dict[str, Any]]:
    frames = [to_pil(image) for image in images]
    name = f"{target.filename}_{target.counter:05}_.png"
    frames[0].save(target.folder / name, pnginfo=apng_metadata(prompt, extra_pnginfo) if with_metadata else None,
                   compress_level=compress_level, save_all=True, duration=_frame_ms(fps),
                   append_images=frames[1:])
    return [{"filename": name, "subfolder": target.subfolder, "type": kind}]


def save_webp(images: torch.Tensor, target: SaveTarget, *, kind: str, fps: float, lossless: bool, quality: int,
              method: str, prompt: dict | None = None, extra_pnginfo: dict | None = None,
              with_metadata: bool = True) -> list[dict[str, Any]]:
    frames = [to_pil(image) for image in images]
    exif = frames[0].getexif()
    if with_metadata:
        if prompt is not None:
            exif[_EXIF_MODEL] = f"prompt:{json.dumps(prompt)}"
        for offset, (key, value) in enumerate((extra_pnginfo or {}).items()):
            exif[_EXIF_MAKE - offset] = f"{key}:{json.dumps(value)}"
    name = f"{target.filename}_{target.counter:05}_.webp"
    frames[0].save(target.folder / name, save_all=True, duration=_frame_ms(fps), append_images=frames[1:],
                   exif=exif, lossless=lossless, quality=quality, method=WEBP_METHODS[method])
    return [{"filename": name, "subfolder": target.subfolder, "type": kind}]
