"""ComfyUI's ``comfy.ldm.lightricks.vae.pixel_norm`` for plugins: ``PixelNorm`` (x over the root mean square
along ``dim``), a real layer. Plexus has no LTX-Video VAE that uses it."""
from __future__ import annotations

import torch
from torch import Tensor, nn


class PixelNorm(nn.Module):
    def __init__(self, dim: int = 1, eps: float = 1e-8):
        super().__init__()
        self.dim = dim
        self.eps = eps

    def forward(self, x: Tensor) -> Tensor:
        return x * torch.rsqrt(x.pow(2).mean(dim=self.dim, keepdim=True) + self.eps)
