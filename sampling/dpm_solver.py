"""DPM-Solver (Lu et al. 2022, "DPM-Solver: a fast ODE solver for diffusion probabilistic model
sampling", arXiv:2206.00927) in noise prediction with t = -log sigma, as k-diffusion's `DPMSolver`:
`dpm_fast` (algorithm 3-style fixed steps, orders 3,...,3,2,1) and `dpm_adaptive` (algorithm 5,
DPM-Solver-12/23 with a PID step-size controller, Söderlind 2003).

Both take the usual `sigmas` and use only its first and last non-zero entries; the result is x at the
smallest non-zero sigma (ComfyUI wraps them the same way).
"""
from __future__ import annotations

import math

import torch
from torch import Tensor

from .core import Denoiser, StepHook, ancestral_step, report
from .noise import NoiseSampler


def _sigma(t: Tensor) -> Tensor:
    return t.neg().exp()


def _t(sigma: Tensor) -> Tensor:
    return sigma.log().neg()


class _Eps:
    """Noise prediction eps = (x - x0) / sigma, cached per step by key (the first evaluation is shared
    between the low- and high-order solutions)."""

    def __init__(self, denoise: Denoiser) -> None:
        self.denoise = denoise
        self.calls = 0

    def __call__(self, cache: dict, key: str, x: Tensor, t: Tensor) -> Tensor:
        if key not in cache:
            sigma = _sigma(t)
            cache[key] = (x - self.denoise(x, sigma * x.new_ones([x.shape[0]]))) / sigma
            self.calls += 1
        return cache[key]


def _step_1(eps: _Eps, x, t, t_next, cache):
    """DPM-Solver-1 (= DDIM): x_t = x_s - sigma_t (e^h - 1) eps (Lu et al. 2022, eq. 3.7)."""
    h = t_next - t
    return x - _sigma(t_next) * h.expm1() * eps(cache, "eps", x, t)


def _step_2(eps: _Eps, x, t, t_next, cache, r1: float = 1 / 2):
    """DPM-Solver-2 (Lu et al. 2022, algorithm 1)."""
    h = t_next - t
    e = eps(cache, "eps", x, t)
    s1 = t + r1 * h
    u1 = x - _sigma(s1) * (r1 * h).expm1() * e
    e_r1 = eps(cache, "eps_r1", u1, s1)
    return x - _sigma(t_next) * h.expm1() * e - _sigma(t_next) / (2 * r1) * h.expm1() * (e_r1 - e)


def _step_3(eps: _Eps, x, t, t_next, cache, r1: float = 1 / 3, r2: float = 2 / 3):
    """DPM-Solver-3 (Lu et al. 2022, algorithm 2)."""
    h = t_next - t
    e = eps(cache, "eps", x, t)
    s1, s2 = t + r1 * h, t + r2 * h
    u1 = x - _sigma(s1) * (r1 * h).expm1() * e
    e_r1 = eps(cache, "eps_r1", u1, s1)
    u2 = x - _sigma(s2) * (r2 * h).expm1() * e - _sigma(s2) * (r2 / r1) * ((r2 * h).expm1() / (r2 * h) - 1) * (e_r1 - e)
    e_r2 = eps(cache, "eps_r2", u2, s2)
    return x - _sigma(t_next) * h.expm1() * e - _sigma(t_next) / r2 * (h.expm1() / h - 1) * (e_r2 - e)


def _ends(sigmas: Tensor) -> tuple[Tensor, Tensor]:
    sigma_min = sigmas[-1] if sigmas[-1] != 0 else sigmas[-2]
    return sigma_min, sigmas[0]


def dpm_fast(denoise: Denoiser, x: Tensor, sigmas: Tensor, *, on_step: StepHook | None = None,
             noise_sampler: NoiseSampler | None = None, eta: float = 0.0, s_noise: float = 1.0) -> Tensor:
    """`len(sigmas) - 1` model evaluations spread over floor(nfe / 3) + 1 steps uniform in t."""
    if len(sigmas) <= 1:
        return x
    sigma_min, sigma_max = _ends(sigmas)
    nfe = len(sigmas) - 1
    t_start, t_end = _t(sigma_max), _t(sigma_min)
    if sigma_min <= 0 or sigma_max <= 0:
        raise ValueError("dpm_fast needs positive sigma_min and sigma_max")
    eps = _Eps(denoise)
    m = math.floor(nfe / 3) + 1
    ts = torch.linspace(float(t_start), float(t_end), m + 1, device=x.device)
    orders = [3] * (m - 2) + [2, 1] if nfe % 3 == 0 else [3] * (m - 1) + [nfe % 3]
    for i, order in enumerate(orders):
        cache: dict = {}
        t, t_next = ts[i], ts[i + 1]
        if eta:
            sd, _ = ancestral_step(_sigma(t), _sigma(t_next), eta)
            t_next_ = torch.minimum(t_end, _t(sd))
            su = (_sigma(t_next) ** 2 - _sigma(t_next_) ** 2) ** 0.5
        else:
            t_next_, su = t_next, 0.0
        e = eps(cache, "eps", x, t)
        report(on_step, i, x, _sigma(t), x - _sigma(t) * e)
        step = {1: _step_1, 2: _step_2, 3: _step_3}[order]
        x = step(eps, x, t, t_next_, cache)
        if su:
            x = x + su * s_noise * noise_sampler(_sigma(t), _sigma(t_next))
    return x


class PIDStepSizeController:
    """Step-size control h <- h * limiter(prod errs^b) (Söderlind 2003; k-diffusion)."""

    def __init__(self, h: float, pcoeff: float, icoeff: float, dcoeff: float, order: float = 1,
                 accept_safety: float = 0.81, eps: float = 1e-8) -> None:
        self.h = h
        self.b1 = (pcoeff + icoeff + dcoeff) / order
        self.b2 = -(pcoeff + 2 * dcoeff) / order
        self.b3 = dcoeff / order
        self.accept_safety = accept_safety
        self.eps = eps
        self.errs: list[float] = []

    def propose_step(self, error: Tensor | float) -> bool:
        inv_error = 1 / (float(error) + self.eps)
        if not self.errs:
            self.errs = [inv_error, inv_error, inv_error]
        self.errs[0] = inv_error
        factor = self.errs[0] ** self.b1 * self.errs[1] ** self.b2 * self.errs[2] ** self.b3
        factor = 1 + math.atan(factor - 1)
        is_accepted = factor >= self.accept_safety
        if is_accepted:
            self.errs[2] = self.errs[1]
            self.errs[1] = self.errs[0]
        self.h *= factor
        return is_accepted


def dpm_adaptive(denoise: Denoiser, x: Tensor, sigmas: Tensor, *, on_step: StepHook | None = None,
                 noise_sampler: NoiseSampler | None = None, order: int = 3, rtol: float = 0.05, atol: float = 0.0078,
                 h_init: float = 0.05, pcoeff: float = 0.0, icoeff: float = 1.0, dcoeff: float = 0.0,
                 accept_safety: float = 0.81, eta: float = 0.0, s_noise: float = 1.0) -> Tensor:
    """Embedded pair (orders order-1 / order) with error control in mixed absolute/relative norm
    (Lu et al. 2022, algorithm 5). `on_step` fires on each attempt, accepted or not."""
    if len(sigmas) <= 1:
        return x
    if order not in {2, 3}:
        raise ValueError(f"dpm_adaptive order must be 2 or 3, got {order}")
    sigma_min, sigma_max = _ends(sigmas)
    t_start, t_end = _t(sigma_max), _t(sigma_min)
    is_forward = t_end > t_start
    if not is_forward and eta:
        raise ValueError("eta must be 0 for reverse sampling")
    eps = _Eps(denoise)
    h_init = abs(h_init) * (1 if is_forward else -1)
    atol_t, rtol_t = torch.tensor(atol), torch.tensor(rtol)
    s = t_start
    x_prev = x
    pid = PIDStepSizeController(h_init, pcoeff, icoeff, dcoeff, 1.5 if eta else order, accept_safety)
    attempts = 0
    while s < t_end - 1e-5 if is_forward else s > t_end + 1e-5:
        cache: dict = {}
        t = torch.minimum(t_end, s + pid.h) if is_forward else torch.maximum(t_end, s + pid.h)
        if eta:
            sd, _ = ancestral_step(_sigma(s), _sigma(t), eta)
            t_ = torch.minimum(t_end, _t(sd))
            su = (_sigma(t) ** 2 - _sigma(t_) ** 2) ** 0.5
        else:
            t_, su = t, 0.0
        e = eps(cache, "eps", x, s)
        x0 = x - _sigma(s) * e
        if order == 2:
            x_low = _step_1(eps, x, s, t_, cache)
            x_high = _step_2(eps, x, s, t_, cache)
        else:
            x_low = _step_2(eps, x, s, t_, cache, r1=1 / 3)
            x_high = _step_3(eps, x, s, t_, cache)
        delta = torch.maximum(atol_t, rtol_t * torch.maximum(x_low.abs(), x_prev.abs()))
        error = torch.linalg.norm((x_low - x_high) / delta) / x.numel() ** 0.5
        if pid.propose_step(error):
            x_prev = x_low
            x = x_high + (su * s_noise * noise_sampler(_sigma(s), _sigma(t)) if su else 0)
            s = t
        report(on_step, attempts, x, _sigma(s), x0)
        attempts += 1
    return x
