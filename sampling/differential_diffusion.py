"""Differential Diffusion (Levin & Fried 2023, "Differential Diffusion: giving each pixel its strength",
arXiv:2306.00950, algorithm 1): a soft inpainting mask becomes a per-step binary mask. At each step a
pixel is regenerated once the sampling progress reaches its mask value: with progress threshold
tau = (t - t_end) / (t_start - t_end) in the model's timesteps, the mask is [m >= tau]. `strength` < 1
blends that binary mask with the soft one (ComfyUI's extension).
"""
from __future__ import annotations

from torch import Tensor

from .model_sampling import ModelSampling


def differential_mask(ms: ModelSampling, strength: float = 1.0):
    """A sampling.sample MaskFunction (sigma, mask, sigmas) -> mask for this step."""
    def mask_at(sigma: Tensor, mask: Tensor, sigmas: Tensor) -> Tensor:
        sigma_to = max(float(ms.sigma_min), float(sigmas[-1]))
        ts_from = ms.timestep(sigmas[0].reshape(1).float())
        ts_to = ms.timestep(sigmas.new_tensor([sigma_to]).float())
        current = ms.timestep(sigma[:1].float())
        threshold = (current - ts_to) / (ts_from - ts_to)
        binary = (mask >= threshold.to(mask.device)).to(mask.dtype)
        if strength and strength < 1:
            return strength * binary + (1 - strength) * mask
        return binary
    return mask_at
