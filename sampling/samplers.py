"""Samplers in the k-diffusion formulation: pure functions over a `Denoiser` (x, sigma[B]) -> x0.

x lives in the variance-exploding space x = x0 + sigma * n (Karras et al. 2022) unless a sampler takes
`is_rectified_flow=True` (x = (1 - sigma) x0 + sigma n). Every sampler walks `sigmas` (descending, usually
ending in 0), calls `on_step(Step(...))` once per step (it may raise to interrupt) and returns the final x.
Stochastic samplers take a `noise_sampler(sigma, sigma_next)` (see `noise.py`); nothing here draws from
global random state (except Karras' `s_churn` without a noise sampler, kept for k-diffusion parity).

This file holds the single-step ODE and ancestral samplers and the registry `SAMPLERS`; multistep
methods are in `samplers_multistep.py`, SDE solvers (DPM-Solver++ SDEs, SEEDS, ER-SDE) in `samplers_sde.py`,
SA-Solver in `sa_solver.py`, DPM-Solver fast/adaptive in `dpm_solver.py`, UniPC in `unipc.py`.
"""
from __future__ import annotations

import difflib
import inspect
from collections.abc import Callable

import torch
from torch import Tensor

from . import dpm_solver, unipc
from . import samplers_multistep as ms
from . import samplers_sde as sde
from . import sa_solver as sa
from .core import Denoiser, GuidedDenoiser, Step, StepHook, ancestral_split, ancestral_step, flow_ancestral_step, report, to_d
from .model_sampling import sigma_to_half_log_snr
from .noise import NoiseSampler
from .samplers_custom import CUSTOM_CFG_PP_SAMPLERS, CUSTOM_SAMPLERS


def _churn(x: Tensor, sigma: Tensor, n_steps: int, s_churn: float, s_tmin: float, s_tmax: float,
           s_noise: float, noise_sampler: NoiseSampler | None) -> tuple[Tensor, Tensor]:
    """Karras et al. 2022, algorithm 2, lines 4-6: raise sigma to sigma_hat = sigma (1 + gamma)."""
    gamma = min(s_churn / n_steps, 2 ** 0.5 - 1) if s_churn > 0 and s_tmin <= sigma <= s_tmax else 0.0
    sigma_hat = sigma * (gamma + 1)
    if gamma > 0:
        eps = (noise_sampler(sigma, sigma_hat) if noise_sampler else torch.randn_like(x)) * s_noise
        x = x + eps * (sigma_hat ** 2 - sigma ** 2) ** 0.5
    return x, sigma_hat


# ---------------------------------------------------------------------------------------------
# Single-step ODE samplers
# ---------------------------------------------------------------------------------------------

def euler(denoise: Denoiser, x: Tensor, sigmas: Tensor, *, on_step: StepHook | None = None,
          s_churn: float = 0.0, s_tmin: float = 0.0, s_tmax: float = float("inf"), s_noise: float = 1.0,
          noise_sampler: NoiseSampler | None = None) -> Tensor:
    """Karras et al. 2022, algorithm 2 with Euler steps."""
    s_in = x.new_ones([x.shape[0]])
    for i in range(len(sigmas) - 1):
        x, sigma_hat = _churn(x, sigmas[i], len(sigmas) - 1, s_churn, s_tmin, s_tmax, s_noise, noise_sampler)
        x0 = denoise(x, sigma_hat * s_in)
        report(on_step, i, x, sigmas[i], x0)
        x = x + to_d(x, sigma_hat, x0) * (sigmas[i + 1] - sigma_hat)
    return x


def heun(denoise: Denoiser, x: Tensor, sigmas: Tensor, *, on_step: StepHook | None = None,
         s_churn: float = 0.0, s_tmin: float = 0.0, s_tmax: float = float("inf"), s_noise: float = 1.0,
         noise_sampler: NoiseSampler | None = None) -> Tensor:
    """Karras et al. 2022, algorithm 2 (Heun's 2nd-order method; Euler on the last step to sigma 0)."""
    s_in = x.new_ones([x.shape[0]])
    for i in range(len(sigmas) - 1):
        x, sigma_hat = _churn(x, sigmas[i], len(sigmas) - 1, s_churn, s_tmin, s_tmax, s_noise, noise_sampler)
        x0 = denoise(x, sigma_hat * s_in)
        d = to_d(x, sigma_hat, x0)
        report(on_step, i, x, sigmas[i], x0)
        dt = sigmas[i + 1] - sigma_hat
        if sigmas[i + 1] == 0:
            x = x + d * dt
        else:
            x_2 = x + d * dt
            d_2 = to_d(x_2, sigmas[i + 1], denoise(x_2, sigmas[i + 1] * s_in))
            x = x + (d + d_2) / 2 * dt
    return x


def heunpp2(denoise: Denoiser, x: Tensor, sigmas: Tensor, *, on_step: StepHook | None = None,
            s_churn: float = 0.0, s_tmin: float = 0.0, s_tmax: float = float("inf"), s_noise: float = 1.0,
            noise_sampler: NoiseSampler | None = None) -> Tensor:
    """Heun++ (Carzit/sd-webui-samplers-scheduler, as in ComfyUI): a 3-evaluation step whose
    derivative weights w2 = sigma_{i+1} / (3 sigma_0), w3 = sigma_{i+2} / (3 sigma_0), w1 = 1 - w2 - w3;
    a 2-evaluation variant (w2 = sigma_{i+1} / (2 sigma_0)) before the last step, Euler on the last."""
    s_in = x.new_ones([x.shape[0]])
    s_end = sigmas[-1]
    for i in range(len(sigmas) - 1):
        x, sigma_hat = _churn(x, sigmas[i], len(sigmas) - 1, s_churn, s_tmin, s_tmax, s_noise, noise_sampler)
        x0 = denoise(x, sigma_hat * s_in)
        d = to_d(x, sigma_hat, x0)
        report(on_step, i, x, sigmas[i], x0)
        dt = sigmas[i + 1] - sigma_hat
        if sigmas[i + 1] == s_end:
            x = x + d * dt
        elif sigmas[i + 2] == s_end:
            x_2 = x + d * dt
            d_2 = to_d(x_2, sigmas[i + 1], denoise(x_2, sigmas[i + 1] * s_in))
            w2 = sigmas[i + 1] / (2 * sigmas[0])
            x = x + (d * (1 - w2) + d_2 * w2) * dt
        else:
            x_2 = x + d * dt
            d_2 = to_d(x_2, sigmas[i + 1], denoise(x_2, sigmas[i + 1] * s_in))
            x_3 = x_2 + d_2 * (sigmas[i + 2] - sigmas[i + 1])
            d_3 = to_d(x_3, sigmas[i + 2], denoise(x_3, sigmas[i + 2] * s_in))
            w2 = sigmas[i + 1] / (3 * sigmas[0])
            w3 = sigmas[i + 2] / (3 * sigmas[0])
            x = x + ((1 - w2 - w3) * d + w2 * d_2 + w3 * d_3) * dt
    return x


def dpm_2(denoise: Denoiser, x: Tensor, sigmas: Tensor, *, on_step: StepHook | None = None,
          s_churn: float = 0.0, s_tmin: float = 0.0, s_tmax: float = float("inf"), s_noise: float = 1.0,
          noise_sampler: NoiseSampler | None = None) -> Tensor:
    """DPM-Solver-2 (Lu et al. 2022, algorithm 4, midpoint in log sigma) inside Karras' algorithm 2."""
    s_in = x.new_ones([x.shape[0]])
    for i in range(len(sigmas) - 1):
        x, sigma_hat = _churn(x, sigmas[i], len(sigmas) - 1, s_churn, s_tmin, s_tmax, s_noise, noise_sampler)
        x0 = denoise(x, sigma_hat * s_in)
        d = to_d(x, sigma_hat, x0)
        report(on_step, i, x, sigmas[i], x0)
        if sigmas[i + 1] == 0:
            x = x + d * (sigmas[i + 1] - sigma_hat)
        else:
            sigma_mid = sigma_hat.log().lerp(sigmas[i + 1].log(), 0.5).exp()
            x_2 = x + d * (sigma_mid - sigma_hat)
            d_2 = to_d(x_2, sigma_mid, denoise(x_2, sigma_mid * s_in))
            x = x + d_2 * (sigmas[i + 1] - sigma_hat)
    return x


# ---------------------------------------------------------------------------------------------
# Ancestral samplers
# ---------------------------------------------------------------------------------------------

def euler_ancestral(denoise: Denoiser, x: Tensor, sigmas: Tensor, *, noise_sampler: NoiseSampler,
                    on_step: StepHook | None = None, eta: float = 1.0, s_noise: float = 1.0,
                    is_rectified_flow: bool = False) -> Tensor:
    """Euler step to sigma_down, then fresh noise sigma_up (k-diffusion `sample_euler_ancestral`)."""
    s_in = x.new_ones([x.shape[0]])
    for i in range(len(sigmas) - 1):
        sigma, sigma_next = sigmas[i], sigmas[i + 1]
        x0 = denoise(x, sigma * s_in)
        report(on_step, i, x, sigma, x0)
        if is_rectified_flow:
            if sigma_next == 0:
                x = x0
                continue
            sigma_down, alpha_ratio, renoise = flow_ancestral_step(sigma, sigma_next, eta)
            ratio = sigma_down / sigma
            x = ratio * x + (1 - ratio) * x0
            if eta > 0:
                x = alpha_ratio * x + noise_sampler(sigma, sigma_next) * s_noise * renoise
            continue
        sigma_down, sigma_up = ancestral_step(sigma, sigma_next, eta)
        if sigma_down == 0:
            x = x0
        else:
            x = x + to_d(x, sigma, x0) * (sigma_down - sigma) + noise_sampler(sigma, sigma_next) * s_noise * sigma_up
    return x


def dpm_2_ancestral(denoise: Denoiser, x: Tensor, sigmas: Tensor, *, noise_sampler: NoiseSampler,
                    on_step: StepHook | None = None, eta: float = 1.0, s_noise: float = 1.0,
                    is_rectified_flow: bool = False) -> Tensor:
    """DPM-Solver-2 step to sigma_down, then fresh noise (k-diffusion `sample_dpm_2_ancestral`)."""
    s_in = x.new_ones([x.shape[0]])
    for i in range(len(sigmas) - 1):
        sigma, sigma_next = sigmas[i], sigmas[i + 1]
        x0 = denoise(x, sigma * s_in)
        sigma_down, sigma_up, alpha_ratio = ancestral_split(sigma, sigma_next, eta, is_rectified_flow)
        report(on_step, i, x, sigma, x0)
        d = to_d(x, sigma, x0)
        if sigma_down == 0:
            x = x + d * (sigma_down - sigma)
        else:
            sigma_mid = sigma.log().lerp(sigma_down.log(), 0.5).exp()
            x_2 = x + d * (sigma_mid - sigma)
            d_2 = to_d(x_2, sigma_mid, denoise(x_2, sigma_mid * s_in))
            x = x + d_2 * (sigma_down - sigma)
            x = alpha_ratio * x + noise_sampler(sigma, sigma_next) * s_noise * sigma_up
    return x


def dpmpp_2s_ancestral(denoise: Denoiser, x: Tensor, sigmas: Tensor, *, noise_sampler: NoiseSampler,
                       on_step: StepHook | None = None, eta: float = 1.0, s_noise: float = 1.0,
                       is_rectified_flow: bool = False) -> Tensor:
    """DPM-Solver++(2S) (Lu et al. 2022b, algorithm 1, r = 1/2, data prediction, t = -log sigma) to
    sigma_down, then fresh noise (k-diffusion `sample_dpmpp_2s_ancestral`)."""
    def evaluate(x: Tensor, sigma: Tensor) -> tuple[Tensor, Tensor, Tensor | None]:
        x0 = denoise(x, sigma)
        return x0, x0, None

    return _dpmpp_2s_ancestral(evaluate, x, sigmas, noise_sampler, on_step, eta, s_noise, is_rectified_flow)


def _dpmpp_2s_ancestral(evaluate, x: Tensor, sigmas: Tensor, noise_sampler: NoiseSampler | None,
                        on_step: StepHook | None, eta: float, s_noise: float, is_rectified_flow: bool) -> Tensor:
    """The DPM-Solver++(2S) ancestral loop. `evaluate(x, sigma)` gives (the x0 reported to `on_step`, the
    x0 that drives both substeps, a guidance vector added back after the step or None): plain sampling
    drives with the guided x0; CFG++ drives with the unconditional one and adds x0 - x0_uncond back."""
    s_in = x.new_ones([x.shape[0]])
    for i in range(len(sigmas) - 1):
        sigma, sigma_next = sigmas[i], sigmas[i + 1]
        x0, drive, guidance = evaluate(x, sigma * s_in)
        sigma_down, sigma_up, alpha_ratio = ancestral_split(sigma, sigma_next, eta, is_rectified_flow)
        report(on_step, i, x, sigma, x0)
        if (sigma_next == 0) if is_rectified_flow else (sigma_down == 0):
            x = x + to_d(x, sigma, drive) * (sigma_down - sigma)
        elif is_rectified_flow:
            # same update in flow coordinates, lambda = log((1 - sigma) / sigma) (ComfyUI ..._RF)
            if sigma == 1.0:
                sigma_s = torch.tensor(0.9999, dtype=sigma.dtype)
            else:
                lam, lam_down = ((1 - sigma) / sigma).log(), ((1 - sigma_down) / sigma_down).log()
                sigma_s = 1 / ((lam + (lam_down - lam) / 2).exp() + 1)
            u = (sigma_s / sigma) * x + (1 - sigma_s / sigma) * drive
            drive_2 = evaluate(u, sigma_s * s_in)[1]
            x = (sigma_down / sigma) * x + (1 - sigma_down / sigma) * drive_2
        else:
            t, t_next = sigma.log().neg(), sigma_down.log().neg()
            h = t_next - t
            s = t + h / 2
            x_2 = (s.neg().exp() / sigma) * x - (-h / 2).expm1() * drive
            drive_2 = evaluate(x_2, s.neg().exp() * s_in)[1]
            x = (sigma_down / sigma) * x - (-h).expm1() * drive_2
        if sigma_next > 0 and (not is_rectified_flow or eta > 0):
            x = alpha_ratio * x + noise_sampler(sigma, sigma_next) * s_noise * sigma_up
        if guidance is not None:
            x = x + ((1 - sigma_next) * guidance if is_rectified_flow else guidance)
    return x


def ddpm(denoise: Denoiser, x: Tensor, sigmas: Tensor, *, noise_sampler: NoiseSampler,
         on_step: StepHook | None = None) -> Tensor:
    """Ancestral DDPM posterior sampling (Ho et al. 2020, algorithm 2 / eq. 7) in VP coordinates:
    alpha_bar = 1 / (1 + sigma^2), x_vp = x / sqrt(1 + sigma^2) (ComfyUI `sample_ddpm`)."""
    s_in = x.new_ones([x.shape[0]])
    for i in range(len(sigmas) - 1):
        sigma, sigma_prev = sigmas[i], sigmas[i + 1]
        x0 = denoise(x, sigma * s_in)
        report(on_step, i, x, sigma, x0)
        eps = (x - x0) / sigma
        x_vp = x / torch.sqrt(1.0 + sigma ** 2.0)
        alpha_bar, alpha_bar_prev = 1 / (sigma * sigma + 1), 1 / (sigma_prev * sigma_prev + 1)
        alpha = alpha_bar / alpha_bar_prev
        mu = (1.0 / alpha).sqrt() * (x_vp - (1 - alpha) * eps / (1 - alpha_bar).sqrt())
        if sigma_prev > 0:
            mu = mu + ((1 - alpha) * (1.0 - alpha_bar_prev) / (1.0 - alpha_bar)).sqrt() * noise_sampler(sigma, sigma_prev)
            x = mu * torch.sqrt(1.0 + sigma_prev ** 2.0)
        else:
            x = mu
    return x


def lcm(denoise: Denoiser, x: Tensor, sigmas: Tensor, *, noise_sampler: NoiseSampler,
        on_step: StepHook | None = None, s_noise: float = 1.0, is_rectified_flow: bool = False) -> Tensor:
    """Multistep consistency sampling (Song et al. 2023, "Consistency models", algorithm 1; LCM):
    jump to x0, then re-noise to the next sigma."""
    s_in = x.new_ones([x.shape[0]])
    for i in range(len(sigmas) - 1):
        x0 = denoise(x, sigmas[i] * s_in)
        report(on_step, i, x, sigmas[i], x0)
        x = x0
        if sigmas[i + 1] > 0:
            noise = noise_sampler(sigmas[i], sigmas[i + 1])
            if s_noise != 1.0:
                noise = noise * s_noise
            s = sigmas[i + 1]
            x = s * noise + (1.0 - s) * x if is_rectified_flow else x + noise * s
    return x


# ---------------------------------------------------------------------------------------------
# CFG++ (Chung et al. 2024, "CFG++: manifold-constrained classifier free guidance", algorithm 1):
# the guided x0 is used for the jump, the *unconditional* x0 to re-noise.
# ---------------------------------------------------------------------------------------------

def euler_ancestral_cfg_pp(denoise: GuidedDenoiser, x: Tensor, sigmas: Tensor, *, noise_sampler: NoiseSampler | None,
                           on_step: StepHook | None = None, eta: float = 1.0, s_noise: float = 1.0,
                           is_rectified_flow: bool = False) -> Tensor:
    """ComfyUI `sample_euler_ancestral_cfg_pp`, in half-log-SNR form so it covers VE and flow:
    alpha = sigma * exp(lambda) (1 in VE, 1 - sigma in flow)."""
    s_in = x.new_ones([x.shape[0]])
    for i in range(len(sigmas) - 1):
        sigma, sigma_next = sigmas[i], sigmas[i + 1]
        x0, uncond_x0 = denoise(x, sigma * s_in)
        report(on_step, i, x, sigma, x0)
        if sigma_next == 0:
            x = x0
            continue
        alpha_s = sigma * sigma_to_half_log_snr(sigma, is_rectified_flow).exp()
        alpha_t = sigma_next * sigma_to_half_log_snr(sigma_next, is_rectified_flow).exp()
        d = to_d(x, sigma, alpha_s * uncond_x0)
        sigma_down, sigma_up = ancestral_step(sigma / alpha_s, sigma_next / alpha_t, eta)
        x = alpha_t * x0 + alpha_t * sigma_down * d
        if eta > 0 and s_noise > 0:
            x = x + alpha_t * noise_sampler(sigma, sigma_next) * s_noise * sigma_up
    return x


def euler_cfg_pp(denoise: GuidedDenoiser, x: Tensor, sigmas: Tensor, *, on_step: StepHook | None = None,
                 is_rectified_flow: bool = False) -> Tensor:
    """CFG++ with deterministic Euler steps (eta = 0)."""
    return euler_ancestral_cfg_pp(denoise, x, sigmas, noise_sampler=None, on_step=on_step, eta=0.0, s_noise=0.0,
                                  is_rectified_flow=is_rectified_flow)


def dpmpp_2s_ancestral_cfg_pp(denoise: GuidedDenoiser, x: Tensor, sigmas: Tensor, *, noise_sampler: NoiseSampler,
                              on_step: StepHook | None = None, eta: float = 1.0, s_noise: float = 1.0,
                              is_rectified_flow: bool = False) -> Tensor:
    """DPM-Solver++(2S) ancestral with CFG++ (Chung et al. 2024: the state is re-expressed with the
    unconditional noise estimate before each exponential substep).

    VE, as ComfyUI 0.3.64 `sample_dpmpp_2s_ancestral_cfg_pp` computes it: with the guided x0 `d` and the
    unconditional `u` of the last evaluation, each substep is x' = r (x + d_1 - u) + (1 - r) d, where d_1
    is the guided x0 at the step's start and u is the unconditional x0 of the latest call (so the second
    substep mixes the first call's d_1 with the midpoint's u_2); r = sigma' / sigma. Flow: both substeps
    follow the unconditional x0 in flow coordinates and the guidance d - u is added back times
    (1 - sigma_next) (ComfyUI 0.3.64 has no flow form of this sampler; docs/fidelity.md)."""
    if is_rectified_flow:
        def evaluate(x: Tensor, sigma: Tensor) -> tuple[Tensor, Tensor, Tensor]:
            x0, uncond = denoise(x, sigma)
            return x0, uncond, x0 - uncond
        return _dpmpp_2s_ancestral(evaluate, x, sigmas, noise_sampler, on_step, eta, s_noise, is_rectified_flow)

    s_in = x.new_ones([x.shape[0]])
    for i in range(len(sigmas) - 1):
        sigma, sigma_next = sigmas[i], sigmas[i + 1]
        x0, uncond = denoise(x, sigma * s_in)
        sigma_down, sigma_up = ancestral_step(sigma, sigma_next, eta)
        report(on_step, i, x, sigma, x0)
        if sigma_down == 0:
            x = x0
        else:
            t, t_next = sigma.log().neg(), sigma_down.log().neg()
            h = t_next - t
            sigma_mid = (t + h / 2).neg().exp()
            x_2 = (sigma_mid / sigma) * (x + (x0 - uncond)) - (-h / 2).expm1() * x0
            x0_2, uncond_2 = denoise(x_2, sigma_mid * s_in)
            x = (sigma_down / sigma) * (x + (x0 - uncond_2)) - (-h).expm1() * x0_2
        if sigma_next > 0:
            x = x + noise_sampler(sigma, sigma_next) * s_noise * sigma_up
    return x


# ---------------------------------------------------------------------------------------------
# Registry
# ---------------------------------------------------------------------------------------------

SamplerFn = Callable[..., Tensor]


SAMPLERS: dict[str, SamplerFn] = {
    "euler": euler,
    "euler_cfg_pp": euler_cfg_pp,
    "euler_ancestral": euler_ancestral,
    "euler_ancestral_cfg_pp": euler_ancestral_cfg_pp,
    "heun": heun,
    "heunpp2": heunpp2,
    "exp_heun_2_x0": sde.exp_heun_2_x0,
    "exp_heun_2_x0_sde": sde.exp_heun_2_x0_sde,
    "dpm_2": dpm_2,
    "dpm_2_ancestral": dpm_2_ancestral,
    "lms": ms.lms,
    "dpm_fast": dpm_solver.dpm_fast,
    "dpm_adaptive": dpm_solver.dpm_adaptive,
    "dpmpp_2s_ancestral": dpmpp_2s_ancestral,
    "dpmpp_2s_ancestral_cfg_pp": dpmpp_2s_ancestral_cfg_pp,
    "dpmpp_sde": sde.dpmpp_sde,
    "dpmpp_sde_gpu": sde.dpmpp_sde,
    "dpmpp_2m": ms.dpmpp_2m,
    "dpmpp_2m_cfg_pp": ms.dpmpp_2m_cfg_pp,
    "dpmpp_2m_sde": sde.dpmpp_2m_sde,
    "dpmpp_2m_sde_gpu": sde.dpmpp_2m_sde,
    "dpmpp_2m_sde_heun": sde.dpmpp_2m_sde_heun,
    "dpmpp_2m_sde_heun_gpu": sde.dpmpp_2m_sde_heun,
    "dpmpp_3m_sde": sde.dpmpp_3m_sde,
    "dpmpp_3m_sde_gpu": sde.dpmpp_3m_sde,
    "ddpm": ddpm,
    "lcm": lcm,
    "ipndm": ms.ipndm,
    "ipndm_v": ms.ipndm_v,
    "deis": ms.deis,
    "res_multistep": ms.res_multistep,
    "res_multistep_cfg_pp": ms.res_multistep_cfg_pp,
    "res_multistep_ancestral": ms.res_multistep_ancestral,
    "res_multistep_ancestral_cfg_pp": ms.res_multistep_ancestral_cfg_pp,
    "gradient_estimation": ms.gradient_estimation,
    "gradient_estimation_cfg_pp": ms.gradient_estimation_cfg_pp,
    "er_sde": sde.er_sde,
    "seeds_2": sde.seeds_2,
    "seeds_3": sde.seeds_3,
    "sa_solver": sa.sa_solver,
    "sa_solver_pece": sa.sa_solver_pece,
    "ddim": euler,   # ComfyUI's ddim is Euler plus seed+1 inpaint noise (see sample.py)
    "uni_pc": unipc.uni_pc,
    "uni_pc_bh2": unipc.uni_pc_bh2,
}

# Samplers whose noise comes from a Brownian tree (all others that take noise use gaussian_noise_sampler).
BROWNIAN_SAMPLERS = frozenset({"dpmpp_sde", "dpmpp_sde_gpu", "dpmpp_2m_sde", "dpmpp_2m_sde_gpu", "dpmpp_2m_sde_heun",
                               "dpmpp_2m_sde_heun_gpu", "dpmpp_3m_sde", "dpmpp_3m_sde_gpu"})
# Samplers working in half-log-SNR, infinite at sigma = 1 for flow: the driver starts them just below 1.
HALF_LOG_SNR_SAMPLERS = BROWNIAN_SAMPLERS | {"euler_ancestral_cfg_pp", "er_sde", "seeds_2", "exp_heun_2_x0",
                                             "exp_heun_2_x0_sde", "seeds_3", "sa_solver", "sa_solver_pece"}
# Samplers that need the unconditional x0 too (their first argument is a GuidedDenoiser).
CFG_PP_SAMPLERS = frozenset({"euler_cfg_pp", "euler_ancestral_cfg_pp", "dpmpp_2s_ancestral_cfg_pp", "dpmpp_2m_cfg_pp",
                             "res_multistep_cfg_pp", "res_multistep_ancestral_cfg_pp", "gradient_estimation_cfg_pp"}
                            | CUSTOM_CFG_PP_SAMPLERS)
# ComfyUI computes one extra step and drops the penultimate sigma for these (KSampler.calculate_sigmas).
DISCARD_PENULTIMATE_SIGMA_SAMPLERS = frozenset({"dpm_2", "dpm_2_ancestral", "uni_pc", "uni_pc_bh2"})


def get_sampler(name: str) -> SamplerFn:
    """SAMPLERS[name] (or a custom-sampling-only sampler), or a ValueError that suggests the closest name.
    A callable with a sampler's signature (a plugin's own sampler function) is returned as it is."""
    if callable(name):
        return name
    fn = SAMPLERS.get(name) or CUSTOM_SAMPLERS.get(name)
    if fn is None:
        hint = difflib.get_close_matches(name, list(SAMPLERS), n=1)
        extra = f"; did you mean {hint[0]!r}?" if hint else ""
        raise ValueError(f"{name!r} is not a sampler{extra}")
    return fn


def run_sampler(name: str, denoise, x: Tensor, sigmas: Tensor, **context) -> Tensor:
    """Call SAMPLERS[name] with the keyword arguments from `context` that it accepts
    (`on_step`, `noise_sampler`, `is_rectified_flow`, options such as `eta`)."""
    fn = get_sampler(name)
    params = inspect.signature(fn).parameters
    return fn(denoise, x, sigmas, **{k: v for k, v in context.items() if k in params})


__all__ = [
    "BROWNIAN_SAMPLERS",
    "CFG_PP_SAMPLERS",
    "DISCARD_PENULTIMATE_SIGMA_SAMPLERS",
    "HALF_LOG_SNR_SAMPLERS",
    "SAMPLERS",
    "Denoiser",
    "GuidedDenoiser",
    "SamplerFn",
    "Step",
    "StepHook",
    "run_sampler",
]
