"""ComfyUI's ``comfy_extras.nodes_mask``: its node classes (ImageCompositeMasked, MaskComposite, GrowMask, ...)
answered from Plexus's built-in nodes, and the module function packs call themselves,
``composite(destination, source, x, y, mask=None, multiplier=8, resize_source=False)`` (channel-first
tensors; the destination is written in place and returned, as ComfyUI does), over imaging.image_ops."""
from __future__ import annotations

import torch

from imaging.image_ops import composite_masked
from nodes.comfy_names import builtin_class as _builtin_class


def composite(destination: torch.Tensor, source: torch.Tensor, x: int, y: int, mask: torch.Tensor | None = None,
              multiplier: int = 8, resize_source: bool = False) -> torch.Tensor:
    out = composite_masked(destination, source.to(destination.device), int(x), int(y),
                           None if mask is None else mask.to(destination.device),
                           cell=int(multiplier), resize_source=bool(resize_source))
    destination.copy_(out)
    return destination


def __getattr__(name: str):
    try:
        return _builtin_class(name)
    except LookupError:
        raise AttributeError(f"comfy_extras.nodes_mask.{name} is not a node Plexus has") from None
