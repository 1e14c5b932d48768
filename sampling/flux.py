"""FLUX.1's rectified-flow sampling: the resolution-dependent time shift (ModelSamplingFlux).

sigma(t) = e^mu / (e^mu + (1/t - 1)), mu the shift (Black Forest Labs' reference sampler `time_shift`
with sigma = 1; Esser et al. 2024, eq. 23 in log-SNR form); the model takes the timestep t = sigma. mu
grows linearly with the number of 2x2 latent patches, from base_shift at 256 patches to max_shift at
4096 (a 1024x1024 image), as BFL's `get_lin_function(x1=256, y1=0.5, x2=4096, y2=1.15)` and ComfyUI's
ModelSamplingFlux node compute it; diffusers' FlowMatchEulerDiscreteScheduler with
use_dynamic_shifting=True applies the same formula.
"""
from __future__ import annotations

import math

from torch import Tensor

from sampling.model_sampling import FlowSampling

BASE_SEQ_LEN, MAX_SEQ_LEN = 256, 4096
DEV_SHIFT = 1.15            # [dev] default (ComfyUI ModelSamplingFlux default shift)
SCHNELL_SHIFT = 1.0         # [schnell]: sampling_settings shift 1.0 of plain flow (diffusion.flux.default_sampling)


def flux_time_shift(mu: float, t: Tensor | float) -> Tensor | float:
    return math.exp(mu) / (math.exp(mu) + (1.0 / t - 1.0))


def resolution_shift(width: int, height: int, base_shift: float = 0.5, max_shift: float = 1.15) -> float:
    """mu for a width x height image: linear in the patch count (width * height / (8 * 8 * 2 * 2))."""
    slope = (max_shift - base_shift) / (MAX_SEQ_LEN - BASE_SEQ_LEN)
    return width * height / (8 * 8 * 2 * 2) * slope + (base_shift - slope * BASE_SEQ_LEN)


class FluxSampling(FlowSampling):
    """FlowSampling with FLUX's exponential shift and timestep = sigma (a table of 10,000 sigmas)."""

    def __init__(self, *, shift: float = DEV_SHIFT) -> None:
        super().__init__(shift=shift, multiplier=1.0, timesteps=10000)

    def sigma(self, timestep: Tensor) -> Tensor:
        return flux_time_shift(self.shift, timestep)

    def percent_to_sigma(self, percent: float) -> float:
        if percent <= 0.0:
            return 1.0
        if percent >= 1.0:
            return 0.0
        return float(flux_time_shift(self.shift, 1.0 - percent))
