"""Reading images into IMAGE/MASK tensors and writing PNGs with workflow metadata.

Saved files are named like ComfyUI's: ``<prefix>_<counter:05>_.png`` in the folder that
``storage.Folders.save_target`` picks. Prefixes may contain ``%date:FMT%`` and ``%NodeTitle.input%``
references, which the editor substitutes before queueing; :func:`expand_prefix` does it for API
clients and the headless runner.
"""
from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from PIL import Image, ImageOps, ImageSequence, PngImagePlugin

from execution.errors import PlexusError

# Image.open refuses decompression bombs above this many pixels (Pillow's default is ~89 MP).
Image.MAX_IMAGE_PIXELS = 16384 * 16384

_DATE_TOKENS = [("yyyy", "%Y"), ("yy", "%y"), ("MM", "%m"), ("dd", "%d"), ("hh", "%H"), ("mm", "%M"), ("ss", "%S")]


def _date(fmt: str, now: time.struct_time) -> str:
    out = fmt
    for token, directive in _DATE_TOKENS:
        out = out.replace(token, time.strftime(directive, now))
    return out


def expand_prefix(prefix: str, *, prompt: dict | None = None, workflow: dict | None = None,
                  now: time.struct_time | None = None) -> str:
    """Substitute %date:FMT% and %NodeTitle.input% / %ClassType.input% in a filename prefix; other
    tokens (%width%, %year%, ...) are left for ``storage.Folders.save_target``."""
    now = now or time.localtime()
    titles = {}
    for node in (workflow or {}).get("nodes", []) if isinstance(workflow, dict) else []:
        if isinstance(node, dict) and node.get("title"):
            titles[str(node["title"])] = str(node.get("id"))

    def replace(match: re.Match) -> str:
        token = match.group(1)
        if token.startswith("date:"):
            return _date(token[5:], now)
        if "." in token and prompt:
            node_ref, input_name = token.rsplit(".", 1)
            node_id = titles.get(node_ref)
            candidates = [node_id] if node_id else []
            candidates += [nid for nid, node in prompt.items()
                           if isinstance(node, dict) and node.get("class_type") == node_ref]
            candidates.append(node_ref)
            for nid in candidates:
                value = (prompt.get(nid) or {}).get("inputs", {}).get(input_name)
                if value is not None and not isinstance(value, list):
                    return str(value)
        return match.group(0)

    return re.sub(r"%([^%]+)%", replace, prefix)


def to_pil(image: torch.Tensor) -> Image.Image:
    """One image [H, W, C] in 0..1 to an 8-bit Pillow image."""
    pixels = np.clip(255.0 * image.detach().float().cpu().numpy(), 0, 255).astype(np.uint8)
    return Image.fromarray(pixels[..., 0] if pixels.shape[-1] == 1 else pixels)


def png_metadata(prompt: dict | None, extra_pnginfo: dict | None) -> PngImagePlugin.PngInfo:
    info = PngImagePlugin.PngInfo()
    if prompt is not None:
        info.add_text("prompt", json.dumps(prompt))
    for key, value in (extra_pnginfo or {}).items():
        info.add_text(key, json.dumps(value))
    return info


class SaveTarget(Protocol):
    """Where a batch goes (storage.folders.SaveTarget): ``folder/<filename>_<counter:05>_.png``."""

    folder: Path
    filename: str
    counter: int
    subfolder: str


def save_png_batch(images: torch.Tensor, target: SaveTarget, *, kind: str, prompt: dict | None = None,
                   extra_pnginfo: dict | None = None, compress_level: int = 4,
                   with_metadata: bool = True) -> list[dict[str, Any]]:
    """Save every image of a batch; returns the ``{"filename", "subfolder", "type"}`` entries for the UI."""
    metadata = png_metadata(prompt, extra_pnginfo) if with_metadata else None
    results, counter = [], target.counter
    for number, image in enumerate(images):
        name = f"{target.filename.replace('%batch_num%', str(number))}_{counter:05}_.png"
        to_pil(image).save(target.folder / name, pnginfo=metadata, compress_level=compress_level)
        results.append({"filename": name, "subfolder": target.subfolder, "type": kind})
        counter += 1
    return results


def _frame_to_tensors(frame: Image.Image) -> tuple[torch.Tensor, torch.Tensor]:
    if frame.mode == "I":
        frame = frame.point(lambda v: v * (1 / 255))
    rgb = torch.from_numpy(np.asarray(frame.convert("RGB"), dtype=np.float32) / 255.0)
    if "A" in frame.getbands():
        mask = 1.0 - torch.from_numpy(np.asarray(frame.getchannel("A"), dtype=np.float32) / 255.0)
    else:
        mask = torch.zeros((64, 64), dtype=torch.float32)
    return rgb, mask


def open_image(path: Path) -> Image.Image:
    try:
        image = Image.open(path)
        image.load()
        return image
    except (OSError, ValueError, Image.DecompressionBombError) as exc:
        raise PlexusError("invalid_image", "The file is not an image Plexus can read",
                          f"{path.name}: {exc}") from exc


def load_image(path: Path) -> tuple[torch.Tensor, torch.Tensor]:
    """IMAGE [B, H, W, 3] and MASK [B, H, W] (1 where the image is transparent) from a file; the
    frames of an animation become a batch (frames of another size are skipped)."""
    image = open_image(path)
    images, masks = [], []
    for frame in ImageSequence.Iterator(image):
        frame = ImageOps.exif_transpose(frame)
        rgb, mask = _frame_to_tensors(frame)
        if images and rgb.shape != images[0].shape:
            continue
        images.append(rgb)
        masks.append(mask)
        if image.format == "MPO":
            break
    return torch.stack(images), torch.stack(masks)


def load_mask(path: Path, channel: str) -> torch.Tensor:
    """One channel ("alpha", "red", "green", "blue") as a MASK [1, H, W]; alpha is inverted (1 = transparent)."""
    image = ImageOps.exif_transpose(open_image(path))
    if image.getbands() != ("R", "G", "B", "A"):
        if image.mode == "I":
            image = image.point(lambda v: v * (1 / 255))
        image = image.convert("RGBA")
    band = channel[0].upper()
    mask = torch.from_numpy(np.asarray(image.getchannel(band), dtype=np.float32) / 255.0)
    if band == "A":
        mask = 1.0 - mask
    return mask.unsqueeze(0)


def png_bytes(image: torch.Tensor, compress_level: int = 1) -> bytes:
    """One image [H, W, C] in 0..1 as 8-bit PNG bytes with no metadata (SaveImageWebsocket's frames)."""
    import io
    buffer = io.BytesIO()
    to_pil(image).save(buffer, format="PNG", compress_level=compress_level)
    return buffer.getvalue()
