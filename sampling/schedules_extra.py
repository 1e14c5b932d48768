"""The custom-sampling schedules beyond KSampler's list: functions returning a 1-D float32 tensor of
sigmas, descending (ending in 0 unless the formula says otherwise).

- `polyexponential_sigmas`, `vp_sigmas`: k-diffusion's `get_sigmas_polyexponential` / `get_sigmas_vp`.
- `laplace_sigmas`: the Laplace schedule of Hang et al. 2024 ("Improved noise schedule for diffusion
  training", arXiv:2407.03297): log sigma follows the quantiles of a Laplace(mu, beta) distribution.
- `sd_turbo_sigmas`: SD-Turbo / SDXL-Turbo's timesteps 999, 899, ..., 99 (Sauer et al. 2023, ADD,
  section 4: the student samples at four fixed timesteps).
- `tabled_sigmas`: published per-model noise levels, log-linearly interpolated to the step count:
  Align Your Steps (Sabour et al. 2024, NVIDIA's "how to" page) and OptimalSteps (Pei et al. 2025,
  arXiv:2503.23307, github.com/bebebe666/OptimalSteps).
- `gits_sigmas`: GITS (Chen et al. 2024, "On the trajectory regularity of ODE-based diffusion sampling",
  arXiv:2405.11326): time steps searched per "coeff" for 2..20 steps, in `data/gits_levels.json` (the
  published table, read when first used); more steps resample the 20-step levels log-linearly.
- `ltxv_shift`, `ltxv_sigmas`: LTX-Video's token-count-dependent shift (HaCohen et al. 2024, "LTX-Video",
  arXiv:2501.00103, section 2.4 / its reference scheduler): mu grows linearly from base_shift at 1024 tokens
  to max_shift at 4096 tokens (FLUX.1's rule, sampling.flux.resolution_shift, over video tokens), the
  linear t schedule is shifted by sigma = e^mu / (e^mu + 1/t - 1), and optionally stretched so that its
  last nonzero sigma is `terminal`.
"""
from __future__ import annotations

import functools
import json
import math
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from .model_sampling import ModelSampling


def _append_zero(x: Tensor) -> Tensor:
    return torch.cat([x, x.new_zeros([1])])


def polyexponential_sigmas(n: int, sigma_min: float, sigma_max: float, rho: float = 1.0) -> Tensor:
    """log sigma_i = log sigma_min + (1 - i/(n-1))^rho (log sigma_max - log sigma_min); rho = 1 is the
    exponential schedule."""
    ramp = torch.linspace(1, 0, n) ** rho
    log_min, log_max = math.log(sigma_min), math.log(sigma_max)
    return _append_zero(torch.exp(ramp * (log_max - log_min) + log_min))


def vp_sigmas(n: int, beta_d: float = 19.9, beta_min: float = 0.1, eps_s: float = 1e-3) -> Tensor:
    """The continuous VP-SDE (Song et al. 2021, appendix B) in VE terms:
    sigma(t) = sqrt(exp(beta_d t^2 / 2 + beta_min t) - 1) for t from 1 down to eps_s."""
    t = torch.linspace(1, eps_s, n)
    return _append_zero(torch.sqrt(torch.special.expm1(beta_d * t ** 2 / 2 + beta_min * t)))


def laplace_sigmas(n: int, sigma_min: float, sigma_max: float, mu: float = 0.0, beta: float = 0.5) -> Tensor:
    """lambda(u) = mu - beta sign(1/2 - u) log(1 - 2 |1/2 - u|) for u evenly spaced in [0, 1]: the inverse
    CDF of a Laplace(mu, beta) in log sigma (1e-5 keeps the log finite at the ends), clamped to
    [sigma_min, sigma_max]. No zero is appended: the last sigma is sigma_min (as in ComfyUI)."""
    u = torch.linspace(0, 1, n)
    lam = mu - beta * torch.sign(0.5 - u) * torch.log(1 - 2 * torch.abs(0.5 - u) + 1e-5)
    return torch.clamp(torch.exp(lam), min=sigma_min, max=sigma_max)


def sd_turbo_sigmas(ms: ModelSampling, steps: int, denoise: float = 1.0) -> Tensor:
    """`steps` of the ten timesteps 999, 899, ..., 99, starting 10 - int(10 denoise) entries in."""
    start = 10 - int(10 * denoise)
    timesteps = (torch.arange(10, 0, -1) * 100 - 1)[start:start + steps]
    return _append_zero(ms.sigma(timesteps).float().cpu())


def loglinear_interp(levels: list[float] | np.ndarray, count: int) -> np.ndarray:
    """`count` values interpolating a descending list linearly in log space (AYS's recipe for other
    step counts than the published one)."""
    ys = np.log(np.asarray(levels, dtype=np.float64)[::-1])
    new = np.interp(np.linspace(0, 1, count), np.linspace(0, 1, len(ys)), ys)
    return np.exp(new)[::-1].copy()


# Align Your Steps: 10-step noise levels (sigmas) per model family (NVIDIA, AlignYourSteps how-to page).
ALIGN_YOUR_STEPS_LEVELS: dict[str, tuple[float, ...]] = {
    "SD1": (14.6146412293, 6.4745760956, 3.8636745985, 2.6946151520, 1.8841921177, 1.3943805092,
            0.9642583904, 0.6523686016, 0.3977456272, 0.1515232662, 0.0291671582),
    "SDXL": (14.6146412293, 6.3184485287, 3.7681790315, 2.1811480769, 1.3405244945, 0.8620721141,
             0.5550693289, 0.3798540708, 0.2332364134, 0.1114188177, 0.0291671582),
    "SVD": (700.00, 54.5, 15.886, 7.977, 4.248, 1.789, 0.981, 0.403, 0.173, 0.034, 0.002),
}

# OptimalSteps: searched flow-matching sigmas per model (bebebe666/OptimalSteps).
OPTIMAL_STEPS_LEVELS: dict[str, tuple[float, ...]] = {
    "FLUX": (0.9968, 0.9886, 0.9819, 0.975, 0.966, 0.9471, 0.9158, 0.8287, 0.5512, 0.2808, 0.001),
    "Wan": (1.0, 0.997, 0.995, 0.993, 0.991, 0.989, 0.987, 0.985, 0.98, 0.975, 0.973, 0.968, 0.96, 0.946,
            0.927, 0.902, 0.864, 0.776, 0.539, 0.208, 0.001),
    "Chroma": (0.992, 0.99, 0.988, 0.985, 0.982, 0.978, 0.973, 0.968, 0.961, 0.953, 0.943, 0.931, 0.917,
               0.9, 0.881, 0.858, 0.832, 0.802, 0.769, 0.731, 0.69, 0.646, 0.599, 0.55, 0.501, 0.451,
               0.402, 0.355, 0.311, 0.27, 0.232, 0.199, 0.169, 0.143, 0.12, 0.101, 0.084, 0.07, 0.058,
               0.048, 0.001),
}


def tabled_sigmas(levels: tuple[float, ...], steps: int, denoise: float = 1.0) -> Tensor:
    """A published table resampled to steps + 1 levels; with denoise < 1 the last round(steps * denoise)
    steps; the final level set to 0. Empty at denoise 0."""
    total = steps
    if denoise < 1.0:
        if denoise <= 0.0:
            return torch.zeros(0)
        total = round(steps * denoise)
    sigmas = np.asarray(levels, dtype=np.float64)
    if len(sigmas) != steps + 1:
        sigmas = loglinear_interp(sigmas, steps + 1)
    sigmas = sigmas[-(total + 1):].copy()
    sigmas[-1] = 0.0
    return torch.tensor(sigmas, dtype=torch.float32)


GITS_TABLE = Path(__file__).with_name("data") / "gits_levels.json"
GITS_MAX_TABLED_STEPS = 20


@functools.cache
def _gits_levels() -> dict[str, list[list[float]]]:
    return json.loads(GITS_TABLE.read_text(encoding="utf-8"))["levels"]


def gits_sigmas(coeff: float, steps: int, denoise: float = 1.0) -> Tensor:
    """GITSScheduler: the searched levels of `coeff` (0.80 ... 1.50 in steps of 0.05) for `steps`
    (2 ... 20 tabled; more steps interpolate the 20-step levels), then the tail for denoise as
    `tabled_sigmas` does (last round(steps * denoise) steps, final level 0)."""
    table = _gits_levels().get(f"{round(coeff, 2):.2f}")
    if table is None:
        raise ValueError(f"GITS coeff {coeff} is not one of {', '.join(_gits_levels())}")
    if steps < 2:
        raise ValueError(f"GITS needs at least 2 steps, got {steps}")
    levels = table[steps - 2] if steps <= GITS_MAX_TABLED_STEPS else table[-1]
    return tabled_sigmas(tuple(levels), steps, denoise)


def ltxv_shift(tokens: int, max_shift: float, base_shift: float) -> float:
    """mu for `tokens` latent cells (frames x height x width): the line through (1024, base_shift) and
    (4096, max_shift), extrapolated beyond them."""
    slope = (max_shift - base_shift) / (4096 - 1024)
    return tokens * slope + base_shift - slope * 1024


def ltxv_sigmas(steps: int, max_shift: float, base_shift: float, stretch: bool, terminal: float,
                tokens: int = 4096) -> Tensor:
    """LTXVScheduler: steps + 1 sigmas from 1 to 0."""
    mu = ltxv_shift(tokens, max_shift, base_shift)
    t = torch.linspace(1.0, 0.0, steps + 1)
    nonzero = t != 0
    sigmas = torch.zeros_like(t)
    sigmas[nonzero] = math.exp(mu) / (math.exp(mu) + (1.0 / t[nonzero] - 1.0))
    if stretch:
        # scale 1 - sigma so the last nonzero sigma lands on `terminal` (the first stays at 1)
        one_minus = 1.0 - sigmas[nonzero]
        sigmas[nonzero] = 1.0 - one_minus * (1.0 - terminal) / one_minus[-1]
    return sigmas
