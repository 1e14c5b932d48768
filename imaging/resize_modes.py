"""ResizeImageMaskNode's resize modes over IMAGE [B, H, W, C] or MASK [B, H, W] tensors (the type is kept).

Each mode picks a target size, then `imaging.resize.upscale` resizes (optional centre crop first):

- "scale dimensions" (width, height, crop): a 0 side follows the other at the input's aspect ratio
  (max(1, round(...))); both 0 leaves the input as it is.
- "scale by multiplier": round(side * multiplier).
- "scale longer dimension" / "scale shorter dimension": that side becomes the size, the other keeps the
  aspect ratio (rounded); a square takes the size on both sides.
- "scale width" / "scale height": "scale dimensions" with the other side 0.
- "scale total pixels": round(side * sqrt(int(megapixels * 2^20) / (W H))).
- "match size" (match, crop): the size of another IMAGE or MASK.
- "scale to multiple" (multiple): the largest sides divisible by `multiple` (floor); the input is scaled
  to cover that box (ceil of the other side), then centre-cropped to it.
"""
from __future__ import annotations

import math
from typing import Any

import torch

from .resize import CROP_METHODS, IMAGE_METHODS, upscale

RESIZE_TYPES = ("scale dimensions", "scale by multiplier", "scale longer dimension", "scale shorter dimension",
                "scale width", "scale height", "scale total pixels", "match size", "scale to multiple")
SCALE_METHODS = IMAGE_METHODS
CROPS = CROP_METHODS


def _is_image(x: torch.Tensor) -> bool:
    return x.ndim == 4


def _size(x: torch.Tensor) -> tuple[int, int]:
    """(width, height) of an IMAGE [B, H, W, C] or MASK [B, H, W]."""
    return (x.shape[2], x.shape[1])


def resized(x: torch.Tensor, width: int, height: int, method: str, crop: str = "disabled") -> torch.Tensor:
    """x at width x height, through channel-first `upscale`, back in its own layout."""
    channels_first = x.movedim(-1, 1) if _is_image(x) else x.unsqueeze(1)
    out = upscale(channels_first, int(width), int(height), method, crop)
    return out.movedim(1, -1) if _is_image(x) else out.squeeze(1)


def _aspect_side(other_target: int, this: int, other: int) -> int:
    return max(1, round(this * other_target / other))


def _fit_side(size: int, this: int, other: int) -> int:
    """The side that keeps the aspect ratio when `other` becomes `size`."""
    return round((this / other) * size)


def _cover_multiple(x: torch.Tensor, multiple: int, method: str) -> torch.Tensor:
    if multiple <= 1:
        return x
    width, height = _size(x)
    target_w, target_h = (width // multiple) * multiple, (height // multiple) * multiple
    if target_w == 0 or target_h == 0 or (target_w, target_h) == (width, height):
        return x
    if target_w / width >= target_h / height:
        scaled_w, scaled_h = target_w, max(target_h, math.ceil(height * target_w / width))
    else:
        scaled_w, scaled_h = max(target_w, math.ceil(width * target_h / height)), target_h
    out = resized(x, scaled_w, scaled_h, method)
    left, top = (scaled_w - target_w) // 2, (scaled_h - target_h) // 2
    return out[:, top:top + target_h, left:left + target_w]


def resize_by_type(x: torch.Tensor, resize_type: str, params: dict[str, Any], method: str) -> torch.Tensor:
    """Resize an IMAGE or MASK by one of RESIZE_TYPES; `params` holds that mode's inputs."""
    width, height = _size(x)
    if resize_type == "scale dimensions" or resize_type in ("scale width", "scale height"):
        target_w = params.get("width", 0) if resize_type != "scale height" else 0
        target_h = params.get("height", 0) if resize_type != "scale width" else 0
        crop = params.get("crop", "disabled") if resize_type == "scale dimensions" else "disabled"
        if target_w == 0 and target_h == 0:
            return x
        if target_w == 0:
            target_w = _aspect_side(target_h, width, height)
        elif target_h == 0:
            target_h = _aspect_side(target_w, height, width)
        return resized(x, target_w, target_h, method, crop)
    if resize_type == "scale by multiplier":
        factor = params["multiplier"]
        return resized(x, round(width * factor), round(height * factor), method)
    if resize_type in ("scale longer dimension", "scale shorter dimension"):
        is_longer = resize_type == "scale longer dimension"
        size = params["longer_size" if is_longer else "shorter_size"]
        if width == height:
            return resized(x, size, size, method)
        if (height > width) == is_longer:                     # the height is the side to set
            return resized(x, _fit_side(size, width, height), size, method)
        return resized(x, size, _fit_side(size, height, width), method)
    if resize_type == "scale total pixels":
        factor = math.sqrt(int(params["megapixels"] * 1024 * 1024) / (width * height))
        return resized(x, round(width * factor), round(height * factor), method)
    if resize_type == "match size":
        match = params["match"]
        target_w, target_h = _size(match)
        return resized(x, target_w, target_h, method, params.get("crop", "disabled"))
    if resize_type == "scale to multiple":
        return _cover_multiple(x, params["multiple"], method)
    raise ValueError(f"unknown resize type {resize_type!r}; expected one of {', '.join(RESIZE_TYPES)}")
