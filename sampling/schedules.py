"""Noise schedules: functions returning a 1-D float32 tensor of sigmas, descending, ending in 0.

`SCHEDULERS` maps ComfyUI's scheduler names (in ComfyUI's order) to `fn(model_sampling, steps)`.
The `karras`, `exponential` and `kl_optimal` families only need (n, sigma_min, sigma_max) and are
also exported in that form, as in k-diffusion.
"""
from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch
from torch import Tensor

from .model_sampling import ModelSampling

Scheduler = Callable[[ModelSampling, int], Tensor]


def _append_zero(x: Tensor) -> Tensor:
    return torch.cat([x, x.new_zeros([1])])


def karras_sigmas(n: int, sigma_min: float, sigma_max: float, rho: float = 7.0) -> Tensor:
    """Karras et al. 2022, eq. 5: sigma_i = (max^(1/rho) + i/(n-1) (min^(1/rho) - max^(1/rho)))^rho."""
    ramp = torch.linspace(0, 1, n)
    min_inv_rho = sigma_min ** (1 / rho)
    max_inv_rho = sigma_max ** (1 / rho)
    return _append_zero((max_inv_rho + ramp * (min_inv_rho - max_inv_rho)) ** rho)


def exponential_sigmas(n: int, sigma_min: float, sigma_max: float) -> Tensor:
    """Evenly spaced in log sigma (k-diffusion `get_sigmas_exponential`)."""
    return _append_zero(torch.linspace(math.log(sigma_max), math.log(sigma_min), n).exp())


def kl_optimal_sigmas(n: int, sigma_min: float, sigma_max: float) -> Tensor:
    """"Align your steps" KL-optimal schedule (Sabour et al. 2024, eq. 11 / AUTOMATIC1111 PR #15608):
    sigma_i = tan((1 - i/(n-1)) atan(sigma_max) + i/(n-1) atan(sigma_min))."""
    adj = torch.arange(n, dtype=torch.float).div_(n - 1) if n > 1 else torch.zeros(1)
    sigmas = adj.new_zeros(n + 1)
    sigmas[:-1] = (adj * math.atan(sigma_min) + (1 - adj) * math.atan(sigma_max)).tan_()
    return sigmas


def karras(ms: ModelSampling, steps: int) -> Tensor:
    return karras_sigmas(steps, float(ms.sigma_min), float(ms.sigma_max))


def exponential(ms: ModelSampling, steps: int) -> Tensor:
    return exponential_sigmas(steps, float(ms.sigma_min), float(ms.sigma_max))


def kl_optimal(ms: ModelSampling, steps: int) -> Tensor:
    return kl_optimal_sigmas(steps, float(ms.sigma_min), float(ms.sigma_max))


def normal(ms: ModelSampling, steps: int, *, is_sgm: bool = False) -> Tensor:
    """Timesteps evenly spaced from the model's largest to smallest (ComfyUI `normal`); `is_sgm`
    drops the last one instead (Stability's sgm "uniform" discretisation)."""
    start, end = ms.timestep(ms.sigma_max), ms.timestep(ms.sigma_min)
    is_zero_appended = True
    if is_sgm:
        timesteps = torch.linspace(start, end, steps + 1)[:-1]
    else:
        if math.isclose(float(ms.sigma(end)), 0, abs_tol=0.00001):
            steps += 1
            is_zero_appended = False
        timesteps = torch.linspace(start, end, steps)
    sigs = [float(ms.sigma(t)) for t in timesteps]
    if is_zero_appended:
        sigs.append(0.0)
    return torch.tensor(sigs, dtype=torch.float32)


def sgm_uniform(ms: ModelSampling, steps: int) -> Tensor:
    return normal(ms, steps, is_sgm=True)


def simple(ms: ModelSampling, steps: int) -> Tensor:
    """Every (len/steps)-th entry of the sigma table from the top (ComfyUI `simple`)."""
    stride = len(ms.sigmas) / steps
    sigs = [float(ms.sigmas[-(1 + int(i * stride))]) for i in range(steps)] + [0.0]
    return torch.tensor(sigs, dtype=torch.float32)


def ddim_uniform(ms: ModelSampling, steps: int) -> Tensor:
    """DDIM's uniform timestep skipping (Song et al. 2021, section 4.2): table entries 1, 1+c, 1+2c, ...
    with c = len // steps, reversed (ComfyUI `ddim_uniform`)."""
    sigs: list[float] = []
    if math.isclose(float(ms.sigmas[1]), 0, abs_tol=0.00001):
        steps += 1
    else:
        sigs = [0.0]
    stride = max(len(ms.sigmas) // steps, 1)
    sigs += [float(s) for s in ms.sigmas[1::stride]]
    return torch.tensor(sigs[::-1], dtype=torch.float32)


def beta(ms: ModelSampling, steps: int, alpha: float = 0.6, beta_: float = 0.6) -> Tensor:
    """Beta-distribution timestep spacing (Lee et al. 2024, "Beta sampling is all you need",
    arXiv:2407.12173): timesteps at the Beta(alpha, beta) quantiles, duplicates dropped."""
    import scipy.stats  # heavy; only this scheduler needs it
    total_timesteps = len(ms.sigmas) - 1
    ts = 1 - np.linspace(0, 1, steps, endpoint=False)
    ts = np.rint(scipy.stats.beta.ppf(ts, alpha, beta_) * total_timesteps)
    sigs: list[float] = []
    last_t = -1
    for t in ts:
        if t != last_t:
            sigs.append(float(ms.sigmas[int(t)]))
        last_t = t
    sigs.append(0.0)
    return torch.tensor(sigs, dtype=torch.float32)


def linear_quadratic(ms: ModelSampling, steps: int, threshold_noise: float = 0.025,
                     linear_steps: int | None = None) -> Tensor:
    """Mochi's schedule (genmoai/models, mochi_preview/infer.py): linear up to `threshold_noise` for
    the first half of the steps, then quadratic to 1; expressed as 1 - t and scaled by sigma_max."""
    if steps == 1:
        schedule = [1.0, 0.0]
    else:
        if linear_steps is None:
            linear_steps = steps // 2
        linear = [i * threshold_noise / linear_steps for i in range(linear_steps)]
        step_diff = linear_steps - threshold_noise * steps
        quadratic_steps = steps - linear_steps
        quadratic_coef = step_diff / (linear_steps * quadratic_steps ** 2)
        linear_coef = threshold_noise / linear_steps - 2 * step_diff / (quadratic_steps ** 2)
        const = quadratic_coef * (linear_steps ** 2)
        quadratic = [quadratic_coef * (i ** 2) + linear_coef * i + const for i in range(linear_steps, steps)]
        schedule = [1.0 - t for t in linear + quadratic + [1.0]]
    return torch.tensor(schedule, dtype=torch.float32) * ms.sigma_max.cpu()


SCHEDULERS: dict[str, Scheduler] = {
    "simple": simple,
    "sgm_uniform": sgm_uniform,
    "karras": karras,
    "exponential": exponential,
    "ddim_uniform": ddim_uniform,
    "beta": beta,
    "normal": normal,
    "linear_quadratic": linear_quadratic,
    "kl_optimal": kl_optimal,
}


def calculate_sigmas(ms: ModelSampling, scheduler: str, steps: int) -> Tensor:
    """Look up a scheduler by its ComfyUI name."""
    fn = SCHEDULERS.get(scheduler)
    if fn is None:
        import difflib
        hint = difflib.get_close_matches(scheduler, SCHEDULERS, n=1)
        extra = f"; did you mean {hint[0]!r}?" if hint else f"; choose one of {', '.join(SCHEDULERS)}"
        raise ValueError(f"{scheduler!r} is not a scheduler{extra}")
    return fn(ms, steps)
