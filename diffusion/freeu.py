"""FreeU (Si et al. 2023, "FreeU: Free Lunch in Diffusion U-Net", arXiv:2309.11497) as an output block patch.

In the decoder stages whose width is 4x / 2x the model channels, the first half of the backbone
channels is scaled by b (v1: constant b; v2: 1 + (b - 1) * the per-sample min-max normalised channel
mean, the paper's structure-aware scaling), and the skip features' low frequencies (a 2*threshold
square around the centre of the shifted spectrum) are scaled by s (eq. 5-7).
"""
from __future__ import annotations

import torch
from torch import Tensor

from .objects import DiffusionModel


def spectral_scale(x: Tensor, threshold: int, scale: float) -> Tensor:
    """Scale the centred low-frequency square (side 2*threshold) of x's 2-D spectrum by `scale`."""
    spectrum = torch.fft.fftshift(torch.fft.fftn(x.float(), dim=(-2, -1)), dim=(-2, -1))
    h, w = x.shape[-2:]
    cy, cx = h // 2, w // 2
    gain = torch.ones(h, w, device=x.device)
    gain[max(0, cy - threshold):cy + threshold, max(0, cx - threshold):cx + threshold] = scale
    out = torch.fft.ifftn(torch.fft.ifftshift(spectrum * gain, dim=(-2, -1)), dim=(-2, -1)).real
    return out.to(x.dtype)


def freeu_patch(model_channels: int, b1: float, b2: float, s1: float, s2: float, *, version: int = 1):
    """output_block_patch `(h, skip, transformer_options) -> (h, skip)`."""
    scales = {model_channels * 4: (b1, s1), model_channels * 2: (b2, s2)}

    def patch(h: Tensor, skip: Tensor, transformer_options: dict) -> tuple[Tensor, Tensor]:
        scale = scales.get(int(h.shape[1]))
        if scale is None:
            return h, skip
        b, s = scale
        half = h.shape[1] // 2
        if version == 1:
            factor: Tensor | float = b
        else:
            mean = h.mean(1, keepdim=True)                                  # [B, 1, H, W]
            lo = mean.flatten(1).min(-1).values[:, None, None, None]
            hi = mean.flatten(1).max(-1).values[:, None, None, None]
            factor = (b - 1.0) * (mean - lo) / (hi - lo) + 1.0
        h = torch.cat([h[:, :half] * factor, h[:, half:]], dim=1)
        return h, spectral_scale(skip, 1, s)
    return patch


def with_freeu(model: DiffusionModel, b1: float, b2: float, s1: float, s2: float, version: int = 1) -> DiffusionModel:
    twin = model.clone()
    twin.set_model_output_block_patch(freeu_patch(model.module.config.model_channels, b1, b2, s1, s2,
                                                  version=version))
    return twin
