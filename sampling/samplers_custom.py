"""Samplers reachable only through custom-sampling SAMPLER nodes (not in KSampler's list, so not in
`SAMPLERS`); `samplers.get_sampler` finds them by these names.

- `euler_cfg_pp_alternative` (SamplerEulerCFG++ "alternative"): Euler with the CFG++ idea of
  Chung et al. 2024 ("CFG++: manifold-constrained classifier free guidance", algorithm 1) written as a
  derivative: d = (x - 2 x0_guided + x0_uncond) / sigma, i.e. the ODE direction taken from the point
  x - x0_guided + x0_uncond, whose noise estimate is the unconditional one.
- `lcm_upscale` (SamplerLCMUpscale): LCM's multistep consistency sampling (Song et al. 2023, algorithm 1)
  whose x0 is resized a little at each of the first steps, so the sample grows to `total_upscale` times
  its size while it is denoised (ComfyUI's nodes_advanced_samplers idea: resize x0, then re-noise).
"""
from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from torch import Tensor

from .core import Denoiser, GuidedDenoiser, StepHook, report, to_d

Resize = Callable[[Tensor, int, int], Tensor]        # (x [B, C, H, W], width, height) -> resized x


def euler_cfg_pp_alternative(denoise: GuidedDenoiser, x: Tensor, sigmas: Tensor, *,
                             on_step: StepHook | None = None) -> Tensor:
    s_in = x.new_ones([x.shape[0]])
    for i in range(len(sigmas) - 1):
        sigma = sigmas[i]
        x0, uncond_x0 = denoise(x, sigma * s_in)
        report(on_step, i, x, sigma, x0)
        d = to_d(x - x0 + uncond_x0, sigma, x0)
        x = x + d * (sigmas[i + 1] - sigma)
    return x


def upscale_factors(step_count: int, total_upscale: float, upscale_steps: int | None) -> np.ndarray:
    """The size factor after each of the first steps: linspace(1, total_upscale, n)[1:], with n =
    max(len(sigmas) // 2 + 1, 2) by default (len(sigmas) = step_count + 1), else min(upscale_steps + 1,
    len(sigmas) + 1)."""
    count = step_count + 1
    n = max(count // 2 + 1, 2) if upscale_steps is None else min(upscale_steps + 1, count + 1)
    return np.linspace(1.0, total_upscale, n)[1:]


def lcm_upscale(denoise: Denoiser, x: Tensor, sigmas: Tensor, *, resize: Resize, seed: int = 0,
                on_step: StepHook | None = None, total_upscale: float = 2.0,
                upscale_steps: int | None = None) -> Tensor:
    """x0 = denoise(x); for the first steps x0 is resized to round(factor * the start size); then
    x = x0 + sigma_next * noise. The noise is drawn at x's current size from one generator seeded with
    `seed` (so with total_upscale 1 this is `samplers.lcm` with its default noise exactly)."""
    generator = torch.Generator(device=x.device).manual_seed(seed)
    height, width = x.shape[-2:]
    factors = upscale_factors(len(sigmas) - 1, total_upscale, upscale_steps)
    s_in = x.new_ones([x.shape[0]])
    for i in range(len(sigmas) - 1):
        x0 = denoise(x, sigmas[i] * s_in)
        report(on_step, i, x, sigmas[i], x0)
        x = x0
        if i < len(factors):
            x = resize(x, round(width * factors[i]), round(height * factors[i]))
        if sigmas[i + 1] > 0:
            noise = torch.randn(x.size(), dtype=x.dtype, layout=x.layout, device=x.device, generator=generator)
            x = x + sigmas[i + 1] * noise
    return x


CUSTOM_SAMPLERS = {
    "euler_cfg_pp_alternative": euler_cfg_pp_alternative,
    "lcm_upscale": lcm_upscale,
}
# the custom samplers whose first argument is a GuidedDenoiser (x0 and the unconditional x0)
CUSTOM_CFG_PP_SAMPLERS = frozenset({"euler_cfg_pp_alternative"})
