"""UniPC (Zhao et al. 2023, "UniPC: a unified predictor-corrector framework for fast sampling of
diffusion models", arXiv:2302.04867): multistep UniP predictor + UniC corrector in data prediction,
variants B(h) = h ("bh1") and B(h) = e^h - 1 ("bh2"), order 3 with lower orders at the start and end.

Written in the VE space with lambda = -log sigma (the paper's VP form divided by alpha_t; the model
evaluation made for the corrector is reused by the next step, so one evaluation per step). As in
ComfyUI, a final sigma of 0 is replaced by 0.001 (lambda must stay finite), the last step skips the
corrector, and the result is x at that last sigma.
"""
from __future__ import annotations

import torch
from torch import Tensor

from .core import Denoiser, StepHook, report


def _uni_pc_update(denoise: Denoiser, x: Tensor, x0_hist: list[Tensor], sigma_hist: list[Tensor], sigma_t: Tensor,
                   order: int, is_corrector_used: bool, variant: str) -> tuple[Tensor, Tensor | None]:
    s_in = x.new_ones([x.shape[0]])
    sigma_0, m0 = sigma_hist[-1], x0_hist[-1]
    lam_0, lam_t = sigma_0.log().neg(), sigma_t.log().neg()
    h = lam_t - lam_0

    rks, d1s = [], []
    for i in range(1, order):
        rk = (sigma_hist[-(i + 1)].log().neg() - lam_0) / h
        rks.append(float(rk))
        d1s.append((x0_hist[-(i + 1)] - m0) / rk)
    rks.append(1.0)
    rks_t = torch.tensor(rks, dtype=torch.float64)

    hh = float(-h)                       # data prediction integrates in -h
    h_phi_1 = torch.expm1(torch.tensor(hh, dtype=torch.float64))
    h_phi_k = h_phi_1 / hh - 1
    b_h = hh if variant == "bh1" else float(h_phi_1)
    rows, b = [], []
    factorial = 1
    for i in range(1, order + 1):       # UniPC eq. (8): R_p(h) rho = g_p(h) / B(h)
        rows.append(rks_t ** (i - 1))
        b.append(float(h_phi_k) * factorial / b_h)
        factorial *= i + 1
        h_phi_k = h_phi_k / hh - 1 / factorial
    big_r = torch.stack(rows)
    b_t = torch.tensor(b, dtype=torch.float64)

    x_base = (sigma_t / sigma_0) * x - float(h_phi_1) * m0
    x_t = x_base
    if d1s:
        rhos_p = [0.5] if order == 2 else torch.linalg.solve(big_r[:-1, :-1], b_t[:-1]).tolist()
        x_t = x_base - b_h * sum(r * d for r, d in zip(rhos_p, d1s))
    if not is_corrector_used:
        return x_t, None
    rhos_c = [0.5] if order == 1 else torch.linalg.solve(big_r, b_t).tolist()
    m_t = denoise(x_t, sigma_t * s_in)
    corr = sum(r * d for r, d in zip(rhos_c[:-1], d1s)) if d1s else 0
    x_t = x_base - b_h * (corr + rhos_c[-1] * (m_t - m0))
    return x_t, m_t


def _uni_pc(denoise: Denoiser, x: Tensor, sigmas: Tensor, on_step: StepHook | None, variant: str) -> Tensor:
    sigmas = sigmas.clone()
    if sigmas[-1] == 0:
        sigmas[-1] = 0.001
    steps = len(sigmas) - 1
    order = min(3, len(sigmas) - 2)
    if steps < 1:
        return x
    x0_hist = [denoise(x, sigmas[0] * x.new_ones([x.shape[0]]))]
    sigma_hist = [sigmas[0]]
    report(on_step, 0, x, sigmas[0], x0_hist[-1])
    for step_index in range(1, steps):
        if step_index < order:
            x, m = _uni_pc_update(denoise, x, x0_hist, sigma_hist, sigmas[step_index], step_index, True, variant)
            x0_hist.append(m)
            sigma_hist.append(sigmas[step_index])
        else:
            last = step_index + 1 if step_index == steps - 1 else step_index
            for step in range(step_index, last + 1):
                step_order = min(order, steps + 1 - step)
                x, m = _uni_pc_update(denoise, x, x0_hist, sigma_hist, sigmas[step], step_order, step != steps, variant)
                x0_hist = x0_hist[1:] + [m] if len(x0_hist) == order else x0_hist + [m]
                sigma_hist = sigma_hist[1:] + [sigmas[step]] if len(sigma_hist) == order else sigma_hist + [sigmas[step]]
        report(on_step, step_index, x, sigmas[step_index], x0_hist[-1] if x0_hist[-1] is not None else x)
    return x


def uni_pc(denoise: Denoiser, x: Tensor, sigmas: Tensor, *, on_step: StepHook | None = None) -> Tensor:
    return _uni_pc(denoise, x, sigmas, on_step, "bh1")


def uni_pc_bh2(denoise: Denoiser, x: Tensor, sigmas: Tensor, *, on_step: StepHook | None = None) -> Tensor:
    return _uni_pc(denoise, x, sigmas, on_step, "bh2")
