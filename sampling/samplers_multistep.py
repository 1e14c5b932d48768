"""Linear multistep samplers: reuse earlier model evaluations, one evaluation per step."""
from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor

from .core import Denoiser, GuidedDenoiser, StepHook, ancestral_step, report, to_d
from .noise import NoiseSampler

# ---------------------------------------------------------------------------------------------
# LMS (variable-step Adams-Bashforth in sigma)
# ---------------------------------------------------------------------------------------------

def lms_coefficient(order: int, t: np.ndarray, i: int, j: int) -> float:
    """Integral over [t_i, t_{i+1}] of the Lagrange basis polynomial of node t_{i-j} through the
    nodes t_i, ..., t_{i-order+1} (linear multistep method; Karras et al. 2022 use it as "LMS")."""
    from scipy import integrate  # heavy; only LMS needs it
    if order - 1 > i:
        raise ValueError(f"order {order} is too high for step {i}")

    def basis(tau: float) -> float:
        prod = 1.0
        for k in range(order):
            if k != j:
                prod *= (tau - t[i - k]) / (t[i - j] - t[i - k])
        return prod
    return integrate.quad(basis, t[i], t[i + 1], epsrel=1e-4)[0]


def lms(denoise: Denoiser, x: Tensor, sigmas: Tensor, *, on_step: StepHook | None = None, order: int = 4) -> Tensor:
    s_in = x.new_ones([x.shape[0]])
    sigmas_np = sigmas.detach().cpu().numpy()
    ds: list[Tensor] = []
    for i in range(len(sigmas) - 1):
        x0 = denoise(x, sigmas[i] * s_in)
        ds.append(to_d(x, sigmas[i], x0))
        if len(ds) > order:
            ds.pop(0)
        report(on_step, i, x, sigmas[i], x0)
        if sigmas[i + 1] == 0:
            x = x0
        else:
            cur_order = min(i + 1, order)
            coeffs = [lms_coefficient(cur_order, sigmas_np, i, j) for j in range(cur_order)]
            x = x + sum(c * d for c, d in zip(coeffs, reversed(ds)))
    return x


# ---------------------------------------------------------------------------------------------
# DPM-Solver++(2M) (Lu et al. 2022b, "DPM-Solver++", algorithm 2), t = -log sigma
# ---------------------------------------------------------------------------------------------

def dpmpp_2m(denoise: Denoiser, x: Tensor, sigmas: Tensor, *, on_step: StepHook | None = None) -> Tensor:
    s_in = x.new_ones([x.shape[0]])
    old_x0 = None
    for i in range(len(sigmas) - 1):
        x0 = denoise(x, sigmas[i] * s_in)
        report(on_step, i, x, sigmas[i], x0)
        t, t_next = sigmas[i].log().neg(), sigmas[i + 1].log().neg()
        h = t_next - t
        if old_x0 is None or sigmas[i + 1] == 0:
            x0_d = x0
        else:
            r = (t - sigmas[i - 1].log().neg()) / h
            x0_d = (1 + 1 / (2 * r)) * x0 - (1 / (2 * r)) * old_x0
        x = (sigmas[i + 1] / sigmas[i]) * x - (-h).expm1() * x0_d
        old_x0 = x0
    return x


def dpmpp_2m_cfg_pp(denoise: GuidedDenoiser, x: Tensor, sigmas: Tensor, *, on_step: StepHook | None = None) -> Tensor:
    """DPM-Solver++(2M) with CFG++ (Chung et al. 2024): renoise along the unconditional prediction
    (ComfyUI `sample_dpmpp_2m_cfg_pp`)."""
    s_in = x.new_ones([x.shape[0]])
    old_uncond = None
    for i in range(len(sigmas) - 1):
        x0, uncond = denoise(x, sigmas[i] * s_in)
        report(on_step, i, x, sigmas[i], x0)
        t, t_next = sigmas[i].log().neg(), sigmas[i + 1].log().neg()
        h = t_next - t
        if old_uncond is None or sigmas[i + 1] == 0:
            mix = -torch.exp(-h) * uncond
        else:
            r = (t - sigmas[i - 1].log().neg()) / h
            mix = -torch.exp(-h) * uncond - torch.expm1(-h) * (1 / (2 * r)) * (x0 - old_uncond)
        x = x0 + mix + torch.exp(-h) * x
        old_uncond = uncond
    return x


# ---------------------------------------------------------------------------------------------
# iPNDM (Zhang & Chen 2023, "Fast sampling of diffusion models with exponential integrator",
# improved pseudo numerical methods; zju-pi/diff-sampler solvers.py) in sigma
# ---------------------------------------------------------------------------------------------

def ipndm(denoise: Denoiser, x: Tensor, sigmas: Tensor, *, on_step: StepHook | None = None, max_order: int = 4) -> Tensor:
    """Fixed Adams-Bashforth coefficients (orders 1-4) on the derivative history."""
    s_in = x.new_ones([x.shape[0]])
    history: list[Tensor] = []
    for i in range(len(sigmas) - 1):
        sigma, sigma_next = sigmas[i], sigmas[i + 1]
        x0 = denoise(x, sigma * s_in)
        report(on_step, i, x, sigma, x0)
        d = (x - x0) / sigma
        order = min(max_order, i + 1)
        h = sigma_next - sigma
        if sigma_next == 0:
            x_next = x0
        elif order == 1:
            x_next = x + h * d
        elif order == 2:
            x_next = x + h * (3 * d - history[-1]) / 2
        elif order == 3:
            x_next = x + h * (23 * d - 16 * history[-1] + 5 * history[-2]) / 12
        else:
            x_next = x + h * (55 * d - 59 * history[-1] + 37 * history[-2] - 9 * history[-3]) / 24
        history = (history + [d])[-(max_order - 1):] if max_order > 1 else []
        x = x_next
    return x


def ipndm_v(denoise: Denoiser, x: Tensor, sigmas: Tensor, *, on_step: StepHook | None = None, max_order: int = 4) -> Tensor:
    """iPNDM with variable-step Adams-Bashforth coefficients (diff-sampler `ipndm_v`)."""
    s_in = x.new_ones([x.shape[0]])
    t = sigmas
    history: list[Tensor] = []
    for i in range(len(sigmas) - 1):
        x0 = denoise(x, t[i] * s_in)
        report(on_step, i, x, t[i], x0)
        d = (x - x0) / t[i]
        order = min(max_order, i + 1)
        h = t[i + 1] - t[i]
        if t[i + 1] == 0:
            x_next = x0
        elif order == 1:
            x_next = x + h * d
        else:
            h1 = t[i] - t[i - 1]
            if order == 2:
                c1, c2 = (2 + h / h1) / 2, -(h / h1) / 2
                x_next = x + h * (c1 * d + c2 * history[-1])
            elif order == 3:
                h2 = t[i - 1] - t[i - 2]
                tmp = (1 - h / (3 * (h + h1)) * (h * (h + h1)) / (h1 * (h1 + h2))) / 2
                c1 = (2 + h / h1) / 2 + tmp
                c2 = -(h / h1) / 2 - (1 + h1 / h2) * tmp
                c3 = tmp * h1 / h2
                x_next = x + h * (c1 * d + c2 * history[-1] + c3 * history[-2])
            else:
                h2, h3 = t[i - 1] - t[i - 2], t[i - 2] - t[i - 3]
                tmp1 = (1 - h / (3 * (h + h1)) * (h * (h + h1)) / (h1 * (h1 + h2))) / 2
                tmp2 = ((1 - h / (3 * (h + h1))) / 2 + (1 - h / (2 * (h + h1))) * h / (6 * (h + h1 + h2))) \
                    * (h * (h + h1) * (h + h1 + h2)) / (h1 * (h1 + h2) * (h1 + h2 + h3))
                q = h1 * (h1 + h2) / (h2 * (h2 + h3))
                c1 = (2 + h / h1) / 2 + tmp1 + tmp2
                c2 = -(h / h1) / 2 - (1 + h1 / h2) * tmp1 - (1 + h1 / h2 + q) * tmp2
                c3 = tmp1 * h1 / h2 + (h1 / h2 + q * (1 + h2 / h3)) * tmp2
                c4 = -tmp2 * q * h1 / h2
                x_next = x + h * (c1 * d + c2 * history[-1] + c3 * history[-2] + c4 * history[-3])
        history = (history + [d])[-(max_order - 1):] if max_order > 1 else []
        x = x_next
    return x


# ---------------------------------------------------------------------------------------------
# DEIS (Zhang & Chen 2023, "Fast sampling ... exponential integrator", tAB-DEIS), in sigma
# ---------------------------------------------------------------------------------------------

def deis_coefficients(sigmas: Tensor, max_order: int, n_points: int = 10000,
                      sigma_min: float = 0.002, sigma_max: float = 80.0, eps_s: float = 1e-3) -> list[list[float]]:
    """tAB-DEIS coefficients: map sigma to the time t of a linear VP-SDE fitted to
    [sigma_min, sigma_max] (Song et al. 2021, VP-SDE: alpha_bar(t) = exp(-beta_0 t - (beta_1 - beta_0) t^2 / 2)),
    then C_ij = integral over [t_i, t_{i+1}] of dsigma/dt * L_j(t), L_j the Lagrange basis through
    t_i, ..., t_{i-order+1}; integrated with a left Riemann sum on `n_points` (as diff-sampler does)."""
    beta_d = 2 * (math.log(sigma_min ** 2 + 1) / eps_s - math.log(sigma_max ** 2 + 1)) / (eps_s - 1)
    beta_0 = math.log(sigma_max ** 2 + 1) - 0.5 * beta_d
    beta_1 = beta_d + beta_0
    s = sigmas.detach().cpu().double().numpy()
    t_steps = (np.sqrt(beta_0 ** 2 + 2 * beta_d * np.log(s ** 2 + 1)) - beta_0) / beta_d
    coeffs: list[list[float]] = []
    for i in range(len(t_steps) - 1):
        order = min(i + 1, max_order)
        if order == 1:
            coeffs.append([])
            continue
        t_cur, t_next = t_steps[i], t_steps[i + 1]
        taus = np.linspace(t_cur, t_next, n_points)
        dtau = (t_next - t_cur) / n_points
        alpha_bar = np.exp(-0.5 * taus ** 2 * (beta_1 - beta_0) - taus * beta_0)
        d_log_alpha = -(taus * (beta_1 - beta_0) + beta_0)
        dsigma_dtau = -0.5 * d_log_alpha / np.sqrt(alpha_bar * (1 - alpha_bar))
        nodes = [t_steps[i - k] for k in range(order)]
        row = []
        for j in range(order):
            basis = np.ones_like(taus)
            for k in range(order):
                if k != j:
                    basis = basis * (taus - nodes[k]) / (nodes[j] - nodes[k])
            row.append(float(np.sum(dsigma_dtau * basis) * dtau))
        coeffs.append(row)
    return coeffs


def deis(denoise: Denoiser, x: Tensor, sigmas: Tensor, *, on_step: StepHook | None = None, max_order: int = 3) -> Tensor:
    s_in = x.new_ones([x.shape[0]])
    coeffs = deis_coefficients(sigmas, max_order)
    history: list[Tensor] = []
    for i in range(len(sigmas) - 1):
        sigma, sigma_next = sigmas[i], sigmas[i + 1]
        x0 = denoise(x, sigma * s_in)
        report(on_step, i, x, sigma, x0)
        d = (x - x0) / sigma
        order = 1 if sigma_next <= 0 else min(max_order, i + 1)
        if order == 1:
            x_next = x + (sigma_next - sigma) * d
        else:
            c = coeffs[i]
            x_next = x + c[0] * d + sum(c[k] * history[-k] for k in range(1, order))
        history = (history + [d])[-(max_order - 1):] if max_order > 1 else []
        x = x_next
    return x


# ---------------------------------------------------------------------------------------------
# RES multistep (Zhang et al. 2023, "Improved order analysis and design of exponential integrator
# for diffusion models sampling", arXiv:2308.02157, 2nd-order multistep), t = -log sigma
# ---------------------------------------------------------------------------------------------

def _res_multistep(denoise, x: Tensor, sigmas: Tensor, *, on_step: StepHook | None, noise_sampler: NoiseSampler | None,
                   eta: float, s_noise: float, is_cfg_pp: bool) -> Tensor:
    s_in = x.new_ones([x.shape[0]])

    def phi1(t):
        return torch.expm1(t) / t

    def phi2(t):
        return (phi1(t) - 1.0) / t

    old_sigma_down = old_x0 = None
    for i in range(len(sigmas) - 1):
        if is_cfg_pp:
            x0, uncond = denoise(x, sigmas[i] * s_in)
        else:
            x0, uncond = denoise(x, sigmas[i] * s_in), None
        sigma_down, sigma_up = ancestral_step(sigmas[i], sigmas[i + 1], eta)
        report(on_step, i, x, sigmas[i], x0)
        if sigma_down == 0 or old_x0 is None:
            if is_cfg_pp:
                x = x0 + to_d(x, sigmas[i], uncond) * sigma_down
            else:
                x = x + to_d(x, sigmas[i], x0) * (sigma_down - sigmas[i])
        else:
            t, t_old = sigmas[i].log().neg(), old_sigma_down.log().neg()
            t_next, t_prev = sigma_down.log().neg(), sigmas[i - 1].log().neg()
            h = t_next - t
            c2 = (t_prev - t_old) / h
            p1, p2 = phi1(-h), phi2(-h)
            b1 = torch.nan_to_num(p1 - p2 / c2, nan=0.0)
            b2 = torch.nan_to_num(p2 / c2, nan=0.0)
            if is_cfg_pp:
                x = x + (x0 - uncond)
                x = (-h).exp() * x + h * (b1 * uncond + b2 * old_x0)
            else:
                x = (-h).exp() * x + h * (b1 * x0 + b2 * old_x0)
        if sigmas[i + 1] > 0 and eta > 0:
            x = x + noise_sampler(sigmas[i], sigmas[i + 1]) * s_noise * sigma_up
        old_x0 = uncond if is_cfg_pp else x0
        old_sigma_down = sigma_down
    return x


def res_multistep(denoise: Denoiser, x: Tensor, sigmas: Tensor, *, on_step: StepHook | None = None) -> Tensor:
    return _res_multistep(denoise, x, sigmas, on_step=on_step, noise_sampler=None, eta=0.0, s_noise=1.0, is_cfg_pp=False)


def res_multistep_cfg_pp(denoise: GuidedDenoiser, x: Tensor, sigmas: Tensor, *, on_step: StepHook | None = None) -> Tensor:
    return _res_multistep(denoise, x, sigmas, on_step=on_step, noise_sampler=None, eta=0.0, s_noise=1.0, is_cfg_pp=True)


def res_multistep_ancestral(denoise: Denoiser, x: Tensor, sigmas: Tensor, *, noise_sampler: NoiseSampler,
                            on_step: StepHook | None = None, eta: float = 1.0, s_noise: float = 1.0) -> Tensor:
    return _res_multistep(denoise, x, sigmas, on_step=on_step, noise_sampler=noise_sampler, eta=eta, s_noise=s_noise,
                          is_cfg_pp=False)


def res_multistep_ancestral_cfg_pp(denoise: GuidedDenoiser, x: Tensor, sigmas: Tensor, *, noise_sampler: NoiseSampler,
                                   on_step: StepHook | None = None, eta: float = 1.0, s_noise: float = 1.0) -> Tensor:
    return _res_multistep(denoise, x, sigmas, on_step=on_step, noise_sampler=noise_sampler, eta=eta, s_noise=s_noise,
                          is_cfg_pp=True)


# ---------------------------------------------------------------------------------------------
# Gradient estimation (Permenter & Yuan 2024, "Interpreting and improving diffusion models from an
# optimization perspective", algorithm 2): Euler plus (gamma - 1) times the change in the derivative
# ---------------------------------------------------------------------------------------------

def _gradient_estimation(denoise, x: Tensor, sigmas: Tensor, on_step: StepHook | None, ge_gamma: float,
                         is_cfg_pp: bool) -> Tensor:
    s_in = x.new_ones([x.shape[0]])
    old_d = None
    for i in range(len(sigmas) - 1):
        if is_cfg_pp:
            x0, uncond = denoise(x, sigmas[i] * s_in)
            d = to_d(x, sigmas[i], uncond)
        else:
            x0 = denoise(x, sigmas[i] * s_in)
            d = to_d(x, sigmas[i], x0)
        report(on_step, i, x, sigmas[i], x0)
        dt = sigmas[i + 1] - sigmas[i]
        if sigmas[i + 1] == 0:
            x = x0
        else:
            x = x0 + d * sigmas[i + 1] if is_cfg_pp else x + d * dt
            if i >= 1:
                x = x + (ge_gamma - 1) * (d - old_d) * dt
        old_d = d
    return x


def gradient_estimation(denoise: Denoiser, x: Tensor, sigmas: Tensor, *, on_step: StepHook | None = None,
                        ge_gamma: float = 2.0) -> Tensor:
    return _gradient_estimation(denoise, x, sigmas, on_step, ge_gamma, is_cfg_pp=False)


def gradient_estimation_cfg_pp(denoise: GuidedDenoiser, x: Tensor, sigmas: Tensor, *,
                               on_step: StepHook | None = None, ge_gamma: float = 2.0) -> Tensor:
    return _gradient_estimation(denoise, x, sigmas, on_step, ge_gamma, is_cfg_pp=True)
