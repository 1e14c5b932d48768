"""UPSCALE_MODEL: loading an ESRGAN-family file into a handle, and tiled upscaling of IMAGE tensors.

`upscale_tiled` is ComfyUI's ImageUpscaleWithModel scheme (512-px tiles, 32-px overlap, halving the tile
when memory runs out) with one difference: instead of feather-blending overlapping tile outputs, each
tile is run with `overlap_px` of context on every side and only its core is kept, so with an overlap at
least the network's receptive radius the result equals the untiled one.
"""
from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from models.files import load_state_dict
from models.upscale import RRDBNet, rrdbnet_from_state_dict

from .loading import cached_load
from .objects import ManagedHandle

DEFAULT_TILE_PX = 512
DEFAULT_OVERLAP_PX = 32
MIN_TILE_PX = 128

TileHook = Callable[[int, int], None]      # (tiles done, tiles in all); may raise to interrupt


class UpscaleModel(ManagedHandle):
    """UPSCALE_MODEL: an RRDBNet (images [B, 3, H, W] in [0, 1] -> x scale)."""

    @property
    def scale(self) -> int:
        return self.module.config.scale

    def eval(self) -> UpscaleModel:
        """Itself (the call plugins make on the model descriptor ComfyUI's loaders return)."""
        return self


def load_upscale_model_file(path: str | os.PathLike, manager: Any) -> UpscaleModel:
    path = Path(path)

    def load() -> tuple:
        with load_state_dict(path) as source:
            module = rrdbnet_from_state_dict(source)
        handle = UpscaleModel(module, manager=manager, name=f"{path.name} (upscale)", source_key=str(path))
        manager.register(handle, dtype=torch.float32)
        return (handle,)

    return cached_load(manager, "upscale_model", path, load)[0]


def upscale_model_from_state_dict(state: Any, manager: Any, name: str = "state dict") -> UpscaleModel:
    """An UPSCALE_MODEL from tensors already in memory (plugins that load the file themselves)."""
    module = rrdbnet_from_state_dict(state)
    handle = UpscaleModel(module, manager=manager, name=f"{name} (upscale)")
    manager.register(handle, dtype=torch.float32)
    return handle


def _spans(length: int, core_px: int) -> list[tuple[int, int]]:
    return [(start, min(start + core_px, length)) for start in range(0, length, core_px)]


def upscale_tiled(net: Callable[[Tensor], Tensor], images: Tensor, scale: int, *, tile_px: int = DEFAULT_TILE_PX,
                  overlap_px: int = DEFAULT_OVERLAP_PX, multiple: int = 1, on_tile: TileHook | None = None) -> Tensor:
    """images [B, C, H, W] -> [B, C', H*scale, W*scale] through `net`, one tile at a time.

    A tile is at most `tile_px` square: a core of `tile_px - 2*overlap_px` (rounded down to `multiple`, the
    model's input alignment) plus `overlap_px` of context on each side, clipped at the image edges."""
    b, _, h, w = images.shape
    core = max(multiple, (tile_px - 2 * overlap_px) // multiple * multiple)
    margin = -(-overlap_px // multiple) * multiple
    spans = [(y, x) for y in _spans(h, core) for x in _spans(w, core)]
    out: Tensor | None = None
    for done, ((y0, y1), (x0, x1)) in enumerate(spans, 1):
        ty0, tx0 = max(0, y0 - margin), max(0, x0 - margin)
        ty1, tx1 = min(h, y1 + margin), min(w, x1 + margin)
        result = net(images[:, :, ty0:ty1, tx0:tx1])                      # [B, C', (ty1-ty0)*s, (tx1-tx0)*s]
        if out is None:
            out = torch.empty(b, result.shape[1], h * scale, w * scale, dtype=result.dtype, device=images.device)
        oy, ox = (y0 - ty0) * scale, (x0 - tx0) * scale
        out[:, :, y0 * scale:y1 * scale, x0 * scale:x1 * scale] = \
            result[:, :, oy:oy + (y1 - y0) * scale, ox:ox + (x1 - x0) * scale].to(out.device)
        if on_tile:
            on_tile(done, len(spans))
    if out is None:                                                        # an empty image: nothing to run
        return images.new_zeros(b, images.shape[1], h * scale, w * scale)
    return out


def _is_oom(exc: BaseException) -> bool:
    return isinstance(exc, torch.OutOfMemoryError) or "out of memory" in str(exc).lower()


def upscale_image(model: UpscaleModel, image: Tensor, *, tile_px: int = DEFAULT_TILE_PX,
                  overlap_px: int = DEFAULT_OVERLAP_PX, on_tile: TileHook | None = None) -> Tensor:
    """IMAGE [B, H, W, C] in [0, 1] -> IMAGE [B, H*s, W*s, 3], tiled; the tile halves (down to 128 px) on OOM."""
    model.manager.load_models_for([model])
    module: RRDBNet = model.module
    device = model.manager.device
    pixels = image[..., :module.config.in_channels].movedim(-1, 1)         # [B, C, H, W]
    config = module.config

    def net(tile: Tensor) -> Tensor:
        return module(tile.to(device=device, dtype=torch.float32)).cpu()

    while True:
        try:
            with torch.inference_mode():
                result = upscale_tiled(net, pixels, config.scale, tile_px=tile_px, overlap_px=overlap_px,
                                       multiple=config.input_multiple, on_tile=on_tile)
            break
        except (torch.OutOfMemoryError, RuntimeError) as exc:
            if not _is_oom(exc) or tile_px // 2 < MIN_TILE_PX:
                raise
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
            tile_px //= 2
    return result.clamp(0.0, 1.0).movedim(1, -1).float()                   # [B, H*s, W*s, C]
