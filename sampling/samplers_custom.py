"""Samplers reachable only through custom-sampling SAMPLER nodes (not in KSampler's list, so not in
`SAMPLERS`); `samplers.get_sampler` finds them by these names.

- `euler_cfg_pp_alternative` (SamplerEulerCFG++ "alternative"): Euler with the CFG++ idea of
  Chung et al. 2024 ("CFG++: manifold-constrained classifier free guidance", algorithm 1) written as a
  derivative: d = (x - 2 x0_guided + x0_uncond) / sigma, i.e. the ODE direction taken from the point
  x - x0_guided + x0_uncond, whose noise estimate is the unconditional one.
"""
from __future__ import annotations

from torch import Tensor

from .core import GuidedDenoiser, StepHook, report, to_d


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


CUSTOM_SAMPLERS = {
    "euler_cfg_pp_alternative": euler_cfg_pp_alternative,
}
# the custom samplers whose first argument is a GuidedDenoiser (x0 and the unconditional x0)
CUSTOM_CFG_PP_SAMPLERS = frozenset({"euler_cfg_pp_alternative"})
