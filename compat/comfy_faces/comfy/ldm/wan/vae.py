"""ComfyUI's ``comfy.ldm.wan.vae`` layers for plugins that build or recognise Wan VAE modules (KJNodes'
PatchTritonVAE checks ``isinstance(m, RMS_norm)`` and subclasses ``CausalConv3d``): both are real layers
with ComfyUI's parameter names. Plexus has no Wan VAE, so no Plexus model contains them."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

import comfy.ops


class CausalConv3d(comfy.ops.disable_weight_init.Conv3d):
    """A Conv3d padded in time on the past side only (twice the given temporal padding), and
    symmetrically in height and width. ``cache_x`` (or ``cache_list[cache_idx]``) holds the frames before
    ``x`` and replaces that much of the zero padding."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        t, h, w = self.padding
        self._padding = (w, w, h, h, 2 * t, 0)
        self.padding = (0, 0, 0)

    def forward(self, x: Tensor, cache_x: Tensor | None = None, cache_list: list | None = None,
                cache_idx: int | None = None) -> Tensor:
        if cache_list is not None:
            cache_x, cache_list[cache_idx] = cache_list[cache_idx], None
        pad = list(self._padding)
        if cache_x is not None and pad[4] > 0:
            x = torch.cat([cache_x.to(x.device), x], dim=2)
            pad[4] -= cache_x.shape[2]
        return super().forward(F.pad(x, pad))


class RMS_norm(nn.Module):
    """L2-normalise over channels, times sqrt(dim) and a learned ``gamma`` (plus ``bias`` when asked)."""

    def __init__(self, dim: int, channel_first: bool = True, images: bool = True, bias: bool = False):
        super().__init__()
        shape = (dim, *((1, 1) if images else (1, 1, 1))) if channel_first else (dim,)
        self.channel_first = channel_first
        self.scale = dim ** 0.5
        self.gamma = nn.Parameter(torch.ones(shape))
        self.bias = nn.Parameter(torch.zeros(shape)) if bias else None

    def forward(self, x: Tensor) -> Tensor:
        out = F.normalize(x, dim=1 if self.channel_first else -1) * self.scale * self.gamma.to(x)
        return out + self.bias.to(x) if self.bias is not None else out
