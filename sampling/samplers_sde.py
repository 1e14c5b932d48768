"""Stochastic DPM-Solver++ samplers (Lu et al. 2022b, "DPM-Solver++", section 5 / appendix; k-diffusion).

Written in half-log-SNR lambda = log(alpha / sigma_vp) with alpha = sigma * exp(lambda), so one formula
serves the VE space (alpha = 1, lambda = -log sigma) and rectified flow (alpha = 1 - sigma). They take a
Brownian-tree `noise_sampler` (see `noise.BrownianTreeNoiseSampler`) so results do not depend on step size.
For flow models the driver moves a first sigma of 1 to just below 1 (lambda would be infinite).
"""
from __future__ import annotations

import torch
from torch import Tensor

from .core import Denoiser, StepHook, ancestral_step, report
from .model_sampling import half_log_snr_to_sigma, sigma_to_half_log_snr
from .noise import NoiseSampler


def dpmpp_sde(denoise: Denoiser, x: Tensor, sigmas: Tensor, *, noise_sampler: NoiseSampler,
              on_step: StepHook | None = None, eta: float = 1.0, s_noise: float = 1.0, r: float = 0.5,
              is_rectified_flow: bool = False) -> Tensor:
    """DPM-Solver++(2S)-SDE: an intermediate point at lambda_s + r h, ancestral noise in both substeps."""
    if len(sigmas) <= 1:
        return x
    s_in = x.new_ones([x.shape[0]])
    fac = 1 / (2 * r)
    for i in range(len(sigmas) - 1):
        x0 = denoise(x, sigmas[i] * s_in)
        report(on_step, i, x, sigmas[i], x0)
        if sigmas[i + 1] == 0:
            x = x0
            continue
        lam_s = sigma_to_half_log_snr(sigmas[i], is_rectified_flow)
        lam_t = sigma_to_half_log_snr(sigmas[i + 1], is_rectified_flow)
        h = lam_t - lam_s
        lam_s1 = lam_s + r * h
        sigma_s1 = half_log_snr_to_sigma(lam_s1, is_rectified_flow)
        alpha_s = sigmas[i] * lam_s.exp()
        alpha_s1 = sigma_s1 * lam_s1.exp()
        alpha_t = sigmas[i + 1] * lam_t.exp()

        # step 1: to lambda_s1, ancestral in the VE-equivalent noise level exp(-lambda)
        sd, su = ancestral_step(lam_s.neg().exp(), lam_s1.neg().exp(), eta)
        h_ = sd.log().neg() - lam_s
        x_2 = (alpha_s1 / alpha_s) * (-h_).exp() * x - alpha_s1 * (-h_).expm1() * x0
        if eta > 0 and s_noise > 0:
            x_2 = x_2 + alpha_s1 * noise_sampler(sigmas[i], sigma_s1) * s_noise * su
        x0_2 = denoise(x_2, sigma_s1 * s_in)

        # step 2: to lambda_t with the first-order-corrected x0
        sd, su = ancestral_step(lam_s.neg().exp(), lam_t.neg().exp(), eta)
        h_ = sd.log().neg() - lam_s
        x0_d = (1 - fac) * x0 + fac * x0_2
        x = (alpha_t / alpha_s) * (-h_).exp() * x - alpha_t * (-h_).expm1() * x0_d
        if eta > 0 and s_noise > 0:
            x = x + alpha_t * noise_sampler(sigmas[i], sigmas[i + 1]) * s_noise * su
    return x


def _exponential_step(x: Tensor, x0: Tensor, sigma: Tensor, sigma_next: Tensor, eta: float,
                      is_rectified_flow: bool) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """The first-order data-prediction step of the DPM-Solver++ SDEs (Lu et al. 2022b) from sigma to
    sigma_next, before multistep corrections and noise: returns (x, h, h * (1 + eta), alpha_next)."""
    lam_s = sigma_to_half_log_snr(sigma, is_rectified_flow)
    lam_t = sigma_to_half_log_snr(sigma_next, is_rectified_flow)
    h = lam_t - lam_s
    h_eta = h * (eta + 1)
    alpha_t = sigma_next * lam_t.exp()
    x = sigma_next / sigma * (-h * eta).exp() * x + alpha_t * (-h_eta).expm1().neg() * x0
    return x, h, h_eta, alpha_t


def _sde_noise(noise_sampler: NoiseSampler, sigma: Tensor, sigma_next: Tensor, h: Tensor, eta: float) -> Tensor:
    """The noise those SDE steps add: sigma_next * sqrt(1 - exp(-2 h eta)) times a Brownian increment."""
    return noise_sampler(sigma, sigma_next) * sigma_next * (-2 * h * eta).expm1().neg().sqrt()


def dpmpp_2m_sde(denoise: Denoiser, x: Tensor, sigmas: Tensor, *, noise_sampler: NoiseSampler,
                 on_step: StepHook | None = None, eta: float = 1.0, s_noise: float = 1.0,
                 solver_type: str = "midpoint", is_rectified_flow: bool = False) -> Tensor:
    """DPM-Solver++(2M) SDE (Lu et al. 2022b, eq. 18 with the SDE variant; k-diffusion)."""
    if solver_type not in {"heun", "midpoint"}:
        raise ValueError(f"solver_type must be 'heun' or 'midpoint', got {solver_type!r}")
    if len(sigmas) <= 1:
        return x
    s_in = x.new_ones([x.shape[0]])
    old_x0, h_last, h = None, None, None
    for i in range(len(sigmas) - 1):
        x0 = denoise(x, sigmas[i] * s_in)
        report(on_step, i, x, sigmas[i], x0)
        if sigmas[i + 1] == 0:
            x = x0
        else:
            x, h, h_eta, alpha_t = _exponential_step(x, x0, sigmas[i], sigmas[i + 1], eta, is_rectified_flow)
            if old_x0 is not None:
                r = h_last / h
                if solver_type == "heun":
                    x = x + alpha_t * ((-h_eta).expm1().neg() / (-h_eta) + 1) * (1 / r) * (x0 - old_x0)
                else:
                    x = x + 0.5 * alpha_t * (-h_eta).expm1().neg() * (1 / r) * (x0 - old_x0)
            if eta > 0 and s_noise > 0:
                x = x + _sde_noise(noise_sampler, sigmas[i], sigmas[i + 1], h, eta) * s_noise
        old_x0 = x0
        h_last = h
    return x


def dpmpp_2m_sde_heun(denoise: Denoiser, x: Tensor, sigmas: Tensor, *, noise_sampler: NoiseSampler,
                      on_step: StepHook | None = None, eta: float = 1.0, s_noise: float = 1.0,
                      is_rectified_flow: bool = False) -> Tensor:
    return dpmpp_2m_sde(denoise, x, sigmas, noise_sampler=noise_sampler, on_step=on_step, eta=eta, s_noise=s_noise,
                        solver_type="heun", is_rectified_flow=is_rectified_flow)


def dpmpp_3m_sde(denoise: Denoiser, x: Tensor, sigmas: Tensor, *, noise_sampler: NoiseSampler,
                 on_step: StepHook | None = None, eta: float = 1.0, s_noise: float = 1.0,
                 is_rectified_flow: bool = False) -> Tensor:
    """DPM-Solver++(3M) SDE: third-order multistep with two history points (k-diffusion)."""
    if len(sigmas) <= 1:
        return x
    s_in = x.new_ones([x.shape[0]])
    x0_1 = x0_2 = None
    h = h_1 = h_2 = None
    for i in range(len(sigmas) - 1):
        x0 = denoise(x, sigmas[i] * s_in)
        report(on_step, i, x, sigmas[i], x0)
        if sigmas[i + 1] == 0:
            x = x0
        else:
            x, h, h_eta, alpha_t = _exponential_step(x, x0, sigmas[i], sigmas[i + 1], eta, is_rectified_flow)
            if h_2 is not None:
                r0, r1 = h_1 / h, h_2 / h
                d1_0 = (x0 - x0_1) / r0
                d1_1 = (x0_1 - x0_2) / r1
                d1 = d1_0 + (d1_0 - d1_1) * r0 / (r0 + r1)
                d2 = (d1_0 - d1_1) / (r0 + r1)
                phi_2 = h_eta.neg().expm1() / h_eta + 1
                phi_3 = phi_2 / h_eta - 0.5
                x = x + (alpha_t * phi_2) * d1 - (alpha_t * phi_3) * d2
            elif h_1 is not None:
                r = h_1 / h
                phi_2 = h_eta.neg().expm1() / h_eta + 1
                x = x + (alpha_t * phi_2) * ((x0 - x0_1) / r)
            if eta > 0 and s_noise > 0:
                x = x + _sde_noise(noise_sampler, sigmas[i], sigmas[i + 1], h, eta) * s_noise
        x0_1, x0_2 = x0, x0_1
        h_1, h_2 = h, h_1
    return x


# ---------------------------------------------------------------------------------------------
# SEEDS-2 (Gonzalez et al. 2023, "SEEDS: exponential SDE solvers for fast high-quality sampling from
# diffusion models", arXiv:2305.14267, VP data prediction, stage 2) and the exponential Heun it reduces to
# ---------------------------------------------------------------------------------------------

def seeds_2(denoise: Denoiser, x: Tensor, sigmas: Tensor, *, noise_sampler: NoiseSampler | None,
            on_step: StepHook | None = None, eta: float = 1.0, s_noise: float = 1.0, r: float = 0.5,
            solver_type: str = "phi_1", is_rectified_flow: bool = False) -> Tensor:
    if solver_type not in {"phi_1", "phi_2"}:
        raise ValueError(f"solver_type must be 'phi_1' or 'phi_2', got {solver_type!r}")
    s_in = x.new_ones([x.shape[0]])
    is_noise_injected = eta > 0 and s_noise > 0
    fac = 1 / (2 * r)
    for i in range(len(sigmas) - 1):
        x0 = denoise(x, sigmas[i] * s_in)
        report(on_step, i, x, sigmas[i], x0)
        if sigmas[i + 1] == 0:
            x = x0
            continue
        lam_s = sigma_to_half_log_snr(sigmas[i], is_rectified_flow)
        lam_t = sigma_to_half_log_snr(sigmas[i + 1], is_rectified_flow)
        h = lam_t - lam_s
        h_eta = h * (eta + 1)
        lam_s1 = torch.lerp(lam_s, lam_t, r)
        sigma_s1 = half_log_snr_to_sigma(lam_s1, is_rectified_flow)
        alpha_s1 = sigma_s1 * lam_s1.exp()
        alpha_t = sigmas[i + 1] * lam_t.exp()
        # stage 1: h * phi_1(h) = expm1(h)
        x_2 = sigma_s1 / sigmas[i] * (-r * h * eta).exp() * x - alpha_s1 * torch.expm1(-r * h_eta) * x0
        if is_noise_injected:
            sde_noise = (-2 * r * h * eta).expm1().neg().sqrt() * noise_sampler(sigmas[i], sigma_s1)
            x_2 = x_2 + sde_noise * sigma_s1 * s_noise
        x0_2 = denoise(x_2, sigma_s1 * s_in)
        # stage 2
        if solver_type == "phi_1":
            x = sigmas[i + 1] / sigmas[i] * (-h * eta).exp() * x - alpha_t * torch.expm1(-h_eta) * torch.lerp(x0, x0_2, fac)
        else:
            b2 = ((torch.expm1(-h_eta) + h_eta) / (-h_eta)) / r      # h * phi_2(h) = (e^h - 1 - h) / h at -h_eta
            b1 = torch.expm1(-h_eta) - b2
            x = sigmas[i + 1] / sigmas[i] * (-h * eta).exp() * x - alpha_t * (b1 * x0 + b2 * x0_2)
        if is_noise_injected:
            segment = (r - 1) * h * eta
            sde_noise = sde_noise * segment.exp() + segment.mul(2).expm1().neg().sqrt() * noise_sampler(sigma_s1, sigmas[i + 1])
            x = x + sde_noise * sigmas[i + 1] * s_noise
    return x


def _h_phi_2(z: Tensor) -> Tensor:
    """h * phi_2(h) at z = h: (e^z - 1 - z) / z (the second exponential-integrator weight)."""
    return (torch.expm1(z) - z) / z


def seeds_3(denoise: Denoiser, x: Tensor, sigmas: Tensor, *, noise_sampler: NoiseSampler | None,
            on_step: StepHook | None = None, eta: float = 1.0, s_noise: float = 1.0, r_1: float = 1.0 / 3,
            r_2: float = 2.0 / 3, is_rectified_flow: bool = False) -> Tensor:
    """SEEDS-3 (Gonzalez et al. 2023, VP data prediction, stage 3): two intermediate points at
    lambda_s + r_1 h and lambda_s + r_2 h; the second uses the phi_2 correction from the first, the final
    step the phi_2 correction from the second. The SDE noise of the three segments is one chained
    Brownian-like increment (each segment decays the previous noise and adds a fresh draw)."""
    s_in = x.new_ones([x.shape[0]])
    is_noise_injected = eta > 0 and s_noise > 0
    for i in range(len(sigmas) - 1):
        x0 = denoise(x, sigmas[i] * s_in)
        report(on_step, i, x, sigmas[i], x0)
        if sigmas[i + 1] == 0:
            x = x0
            continue
        sigma_s, sigma_t = sigmas[i], sigmas[i + 1]
        lam_s = sigma_to_half_log_snr(sigma_s, is_rectified_flow)
        lam_t = sigma_to_half_log_snr(sigma_t, is_rectified_flow)
        h = lam_t - lam_s
        h_eta = h * (eta + 1)
        lam_1, lam_2 = torch.lerp(lam_s, lam_t, r_1), torch.lerp(lam_s, lam_t, r_2)
        sigma_1 = half_log_snr_to_sigma(lam_1, is_rectified_flow)
        sigma_2 = half_log_snr_to_sigma(lam_2, is_rectified_flow)
        alpha_1, alpha_2, alpha_t = sigma_1 * lam_1.exp(), sigma_2 * lam_2.exp(), sigma_t * lam_t.exp()

        # stage 1: first order to lambda_1
        x_1 = sigma_1 / sigma_s * (-r_1 * h * eta).exp() * x - alpha_1 * torch.expm1(-r_1 * h_eta) * x0
        if is_noise_injected:
            sde_noise = (-2 * r_1 * h * eta).expm1().neg().sqrt() * noise_sampler(sigma_s, sigma_1)
            x_1 = x_1 + sde_noise * sigma_1 * s_noise
        x0_1 = denoise(x_1, sigma_1 * s_in)

        # stage 2: to lambda_2, x0 linear between lambda_s and lambda_1
        w_1 = r_2 / r_1 * _h_phi_2(-r_2 * h_eta)
        w_0 = torch.expm1(-r_2 * h_eta) - w_1
        x_2 = sigma_2 / sigma_s * (-r_2 * h * eta).exp() * x - alpha_2 * (w_0 * x0 + w_1 * x0_1)
        if is_noise_injected:
            segment = (r_1 - r_2) * h * eta
            sde_noise = sde_noise * segment.exp() + segment.mul(2).expm1().neg().sqrt() * noise_sampler(sigma_1, sigma_2)
            x_2 = x_2 + sde_noise * sigma_2 * s_noise
        x0_2 = denoise(x_2, sigma_2 * s_in)

        # stage 3: to lambda_t, x0 linear between lambda_s and lambda_2
        w_2 = _h_phi_2(-h_eta) / r_2
        w_0 = torch.expm1(-h_eta) - w_2
        x = sigma_t / sigma_s * (-h * eta).exp() * x - alpha_t * (w_0 * x0 + w_2 * x0_2)
        if is_noise_injected:
            segment = (r_2 - 1) * h * eta
            sde_noise = sde_noise * segment.exp() + segment.mul(2).expm1().neg().sqrt() * noise_sampler(sigma_2, sigma_t)
            x = x + sde_noise * sigma_t * s_noise
    return x


def exp_heun_2_x0(denoise: Denoiser, x: Tensor, sigmas: Tensor, *, on_step: StepHook | None = None,
                  is_rectified_flow: bool = False) -> Tensor:
    """Deterministic exponential Heun (2nd order) in data prediction and log-SNR time: SEEDS-2 with
    eta = 0, r = 1, phi_2 weights."""
    return seeds_2(denoise, x, sigmas, noise_sampler=None, on_step=on_step, eta=0.0, s_noise=0.0, r=1.0,
                   solver_type="phi_2", is_rectified_flow=is_rectified_flow)


def exp_heun_2_x0_sde(denoise: Denoiser, x: Tensor, sigmas: Tensor, *, noise_sampler: NoiseSampler,
                      on_step: StepHook | None = None, eta: float = 1.0, s_noise: float = 1.0,
                      is_rectified_flow: bool = False) -> Tensor:
    return seeds_2(denoise, x, sigmas, noise_sampler=noise_sampler, on_step=on_step, eta=eta, s_noise=s_noise, r=1.0,
                   solver_type="phi_2", is_rectified_flow=is_rectified_flow)


# ---------------------------------------------------------------------------------------------
# ER-SDE-Solver-3 (Cui et al. 2023, "Elucidating the solution space of extended reverse-time SDE for
# diffusion models", arXiv:2309.06169, VP version), lambda_er = sigma / alpha = exp(-half log SNR)
# ---------------------------------------------------------------------------------------------

def _er_noise_scaler(v: Tensor) -> Tensor:
    """The paper's default noise-scale function (ER-SDE-Solver repository): v * (e^(v^0.3) + 10)."""
    return v * ((v ** 0.3).exp() + 10.0)


def er_sde(denoise: Denoiser, x: Tensor, sigmas: Tensor, *, noise_sampler: NoiseSampler,
           on_step: StepHook | None = None, s_noise: float = 1.0, max_stage: int = 3,
           is_rectified_flow: bool = False) -> Tensor:
    s_in = x.new_ones([x.shape[0]])
    n_points = 200.0
    points = torch.arange(0, n_points, dtype=torch.float32, device=x.device)
    er_lambdas = sigma_to_half_log_snr(sigmas, is_rectified_flow).neg().exp()
    old_x0 = old_x0_d = None
    for i in range(len(sigmas) - 1):
        x0 = denoise(x, sigmas[i] * s_in)
        report(on_step, i, x, sigmas[i], x0)
        stage = min(max_stage, i + 1)
        if sigmas[i + 1] == 0:
            x = x0
        else:
            er_s, er_t = er_lambdas[i], er_lambdas[i + 1]
            alpha_s, alpha_t = sigmas[i] / er_s, sigmas[i + 1] / er_t
            r = _er_noise_scaler(er_t) / _er_noise_scaler(er_s)
            x = (alpha_t / alpha_s) * r * x + alpha_t * (1 - r) * x0           # stage 1 (Euler)
            if stage >= 2:
                dt = er_t - er_s
                step = -dt / n_points
                lam_pos = er_t + points * step
                scaled = _er_noise_scaler(lam_pos)
                integral = torch.sum(1 / scaled) * step
                x0_d = (x0 - old_x0) / (er_s - er_lambdas[i - 1])
                x = x + alpha_t * (dt + integral * _er_noise_scaler(er_t)) * x0_d
                if stage >= 3:
                    integral_u = torch.sum((lam_pos - er_s) / scaled) * step
                    x0_u = (x0_d - old_x0_d) / ((er_s - er_lambdas[i - 2]) / 2)
                    x = x + alpha_t * ((dt ** 2) / 2 + integral_u * _er_noise_scaler(er_t)) * x0_u
                old_x0_d = x0_d
            if s_noise > 0:
                std = (er_t ** 2 - er_s ** 2 * r ** 2).sqrt().nan_to_num(nan=0.0)
                x = x + alpha_t * noise_sampler(sigmas[i], sigmas[i + 1]) * s_noise * std
        old_x0 = x0
    return x
