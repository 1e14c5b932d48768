"""ComfyUI's ``node_helpers`` for plugins: conditioning values, Pillow loading, hashing, dtypes."""
from __future__ import annotations

import hashlib
from typing import Any, Callable

import torch
from PIL import ImageFile, UnidentifiedImageError


def conditioning_set_values(conditioning: list, values: dict | None = None, append: bool = False) -> list:
    """A new CONDITIONING with ``values`` set on every entry (``append``: added to an existing value)."""
    out = []
    for cond, options in conditioning:
        options = dict(options)
        for key, value in (values or {}).items():
            if append and options.get(key) is not None:
                value = options[key] + value
            options[key] = value
        out.append([cond, options])
    return out


def pillow(fn: Callable, arg: Any) -> Any:
    """``fn(arg)``, retried with truncated images allowed when Pillow refuses the file."""
    try:
        return fn(arg)
    except (OSError, UnidentifiedImageError, ValueError):
        previous = ImageFile.LOAD_TRUNCATED_IMAGES
        ImageFile.LOAD_TRUNCATED_IMAGES = True
        try:
            return fn(arg)
        finally:
            ImageFile.LOAD_TRUNCATED_IMAGES = previous


def hasher() -> Callable:
    from comfy.cli_args import args
    return {"md5": hashlib.md5, "sha1": hashlib.sha1, "sha256": hashlib.sha256,
            "sha512": hashlib.sha512}[getattr(args, "default_hashing_function", None) or "sha256"]


def string_to_torch_dtype(string: str) -> torch.dtype | None:
    return {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}.get(string)


def image_alpha_fix(destination: torch.Tensor, source: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Match the channel counts of two images: drop source's alpha, or give destination an opaque one."""
    if destination.shape[-1] < source.shape[-1]:
        source = source[..., :destination.shape[-1]]
    elif destination.shape[-1] > source.shape[-1]:
        destination = torch.nn.functional.pad(destination, (0, 1), value=1.0)
    return destination, source
