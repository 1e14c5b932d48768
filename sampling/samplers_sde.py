"""Stochastic DPM-Solver++ samplers (Lu et al. 2022b, "DPM-Solver++", section 5 / appendix; k-diffusion).

Written in half-log-SNR lambda = log(alpha / sigma_vp) with alpha = sigma * exp(lambda), so one formula
serves the VE space (alpha = 1, lambda = -log sigma) and rectified flow (alpha = 1 - sigma). They take a
Brownian-tree `noise_sampler` (see `noise.BrownianTreeNoiseSampler`) so results do not depend on step size.
For flow models the driver moves a first sigma of 1 to just below 1 (lambda would be infinite).
"""
from __future__ import annotations

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
            lam_s = sigma_to_half_log_snr(sigmas[i], is_rectified_flow)
            lam_t = sigma_to_half_log_snr(sigmas[i + 1], is_rectified_flow)
            h = lam_t - lam_s
            h_eta = h * (eta + 1)
            alpha_t = sigmas[i + 1] * lam_t.exp()
            x = sigmas[i + 1] / sigmas[i] * (-h * eta).exp() * x + alpha_t * (-h_eta).expm1().neg() * x0
            if old_x0 is not None:
                r = h_last / h
                if solver_type == "heun":
                    x = x + alpha_t * ((-h_eta).expm1().neg() / (-h_eta) + 1) * (1 / r) * (x0 - old_x0)
                else:
                    x = x + 0.5 * alpha_t * (-h_eta).expm1().neg() * (1 / r) * (x0 - old_x0)
            if eta > 0 and s_noise > 0:
                x = x + noise_sampler(sigmas[i], sigmas[i + 1]) * sigmas[i + 1] * (-2 * h * eta).expm1().neg().sqrt() * s_noise
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
            lam_s = sigma_to_half_log_snr(sigmas[i], is_rectified_flow)
            lam_t = sigma_to_half_log_snr(sigmas[i + 1], is_rectified_flow)
            h = lam_t - lam_s
            h_eta = h * (eta + 1)
            alpha_t = sigmas[i + 1] * lam_t.exp()
            x = sigmas[i + 1] / sigmas[i] * (-h * eta).exp() * x + alpha_t * (-h_eta).expm1().neg() * x0
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
                x = x + noise_sampler(sigmas[i], sigmas[i + 1]) * sigmas[i + 1] * (-2 * h * eta).expm1().neg().sqrt() * s_noise
        x0_1, x0_2 = x0, x0_1
        h_1, h_2 = h, h_1
    return x
