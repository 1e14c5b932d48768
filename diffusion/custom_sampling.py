"""The rest of ComfyUI's custom-sampling family over diffusion.ksampler's objects (SAMPLER =
`SamplerChoice`, SIGMAS = a 1-D tensor, NOISE = `NoiseSource`, GUIDER): sampler choices with options,
model-dependent schedules, AddNoise, SamplingPercentToSigma and the Perp-Neg guider.

    sampler = sampler_choice("dpmpp_2m_sde", eta=0.5, s_noise=1.0, solver_type="heun")
    sigmas = sd_turbo_schedule(model, steps=1)
    guider = PerpNegGuider(model, positive, negative, empty, cfg=7.0, neg_scale=1.0)
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from execution.errors import PlexusError
from imaging import resize
from sampling import schedules, schedules_extra, sigma_tools
from sampling.noise import prepare_noise, zero_noise
from sampling.perp_neg import PerpNegDenoiser
from sampling.samplers_sde import reverse_time_sde_noise_scaler

from .ksampler import NoiseSource, SamplerChoice, guider_conds
from .objects import DiffusionModel

ER_SDE_SOLVER_TYPES = ["ER-SDE", "Reverse-time SDE", "ODE"]
LCM_UPSCALE_METHODS = ["bislerp", "nearest-exact", "bilinear", "area", "bicubic"]


def sampler_choice(name: str, **options) -> SamplerChoice:
    """SAMPLER: a sampler name with keyword options (sorted, so equal choices compare equal)."""
    return SamplerChoice(name, tuple(sorted(options.items())))


def noise_device_sampler(name: str, noise_device: str) -> str:
    """ComfyUI's `noise_device` combo: 'gpu' picks the `*_gpu` variant (Brownian tree on the sampling
    device), 'cpu' the plain name (tree on the CPU)."""
    return name if noise_device == "cpu" else f"{name}_gpu"


def er_sde_choice(solver_type: str, max_stage: int, eta: float, s_noise: float) -> SamplerChoice:
    """SamplerER_SDE: "ER-SDE" keeps the paper's noise scale; "Reverse-time SDE" scales by
    lambda^(eta + 1); "ODE" (or eta 0) is the deterministic solver (no noise)."""
    if solver_type not in ER_SDE_SOLVER_TYPES:
        raise ValueError(f"solver_type {solver_type!r} is not one of {', '.join(ER_SDE_SOLVER_TYPES)}")
    if solver_type == "ODE" or (solver_type == "Reverse-time SDE" and eta == 0):
        eta, s_noise = 0.0, 0.0
    if solver_type == "ER-SDE":
        return sampler_choice("er_sde", s_noise=s_noise, max_stage=max_stage)
    return sampler_choice("er_sde", s_noise=s_noise, max_stage=max_stage,
                          noise_scaler=reverse_time_sde_noise_scaler(eta))


def manual_sigmas(text: str) -> Tensor:
    """ManualSigmas: the schedule written as text; a malformed entry is a PlexusError naming it."""
    try:
        return sigma_tools.parse_sigmas(text)
    except ValueError as exc:
        raise PlexusError("invalid_input", "ManualSigmas input 'sigmas' is not a list of numbers", str(exc)) from exc


@dataclass(frozen=True)
class LatentResize:
    """A latent resizer for `sampling.samplers_custom.lcm_upscale` (a value, so SAMPLERs compare and pickle)."""
    method: str

    def __call__(self, x: Tensor, width: int, height: int) -> Tensor:
        return resize.upscale(x, width, height, self.method, "disabled")


def lcm_upscale_choice(scale_ratio: float, scale_steps: int, upscale_method: str) -> SamplerChoice:
    """SamplerLCMUpscale: scale_steps -1 = the default number of resize steps (about half the steps)."""
    if upscale_method not in LCM_UPSCALE_METHODS:
        raise ValueError(f"upscale_method {upscale_method!r} is not one of {', '.join(LCM_UPSCALE_METHODS)}")
    return sampler_choice("lcm_upscale", total_upscale=scale_ratio, resize=LatentResize(upscale_method),
                          upscale_steps=None if scale_steps < 0 else scale_steps)


# --- schedules that read the model's sampling ----------------------------------------------------------

def sd_turbo_schedule(model: DiffusionModel, steps: int, denoise: float) -> Tensor:
    return schedules_extra.sd_turbo_sigmas(model.model_sampling, steps, denoise)


def beta_schedule(model: DiffusionModel, steps: int, alpha: float, beta: float) -> Tensor:
    return schedules.beta(model.model_sampling, steps, alpha=alpha, beta_=beta)


def sampling_percent_to_sigma(model: DiffusionModel, percent: float, is_actual_sigma: bool) -> float:
    """The sigma at a share of sampling progress (0 = start). At 0 and 1 the model sampling answers
    values meant for interval tests (a huge number, 0); `is_actual_sigma` gives sigma_max / sigma_min."""
    ms = model.model_sampling
    if is_actual_sigma and percent == 0.0:
        return float(ms.sigma_max)
    if is_actual_sigma and percent == 1.0:
        return float(ms.sigma_min)
    return float(ms.percent_to_sigma(percent))


# --- AddNoise -------------------------------------------------------------------------------------------

def generate_noise(noise: NoiseSource, latent: dict) -> Tensor:
    """NOISE's initial noise for a LATENT (its batch_index honoured), or zeros when disabled."""
    samples = latent["samples"]
    if not noise.is_enabled:
        return zero_noise(samples)
    return prepare_noise(samples, noise.seed, latent.get("batch_index"))


def add_noise(model: DiffusionModel, noise: NoiseSource, sigmas: Tensor, latent: dict) -> dict:
    """AddNoise: the latent noised to the span of `sigmas` (|first - last|, or the only sigma) with the
    model's noise scaling, returned in VAE space. An all-zero latent is not shifted into model space."""
    if len(sigmas) == 0:
        return latent
    samples = latent["samples"]
    drawn = generate_noise(noise, latent)
    scale = torch.abs(sigmas[0] - sigmas[-1]) if len(sigmas) > 1 else sigmas[0]
    fmt = model.latent_format
    base = fmt.process_in(samples) if torch.count_nonzero(samples) > 0 else samples
    noisy = fmt.process_out(model.model_sampling.noise_scaling(scale, drawn.float(), base.float()))
    return {**latent, "samples": torch.nan_to_num(noisy, nan=0.0, posinf=0.0, neginf=0.0)}


# --- guiders ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class PerpNegGuider:
    """GUIDER of Perp-Neg (Armandpour et al. 2023): the negative prompt enters only through its part
    perpendicular to the positive direction (formula in sampling.perp_neg)."""
    model: DiffusionModel
    positive: list
    negative: list
    empty: list
    cfg: float = 8.0
    neg_scale: float = 1.0

    def conditionings(self) -> tuple[list, ...]:
        return self.positive, self.empty, self.negative

    def make_denoiser(self, model_fn, ms, latent_shape, *, fits, cfg_function, post_cfg, seed: int = 0,
                      noise_mask=None) -> PerpNegDenoiser:
        positive, empty, negative = guider_conds(self.model, self.conditionings(), ("positive", "negative", "negative"),
                                                 tuple(latent_shape), seed, noise_mask)
        return PerpNegDenoiser(model_fn, ms, positive, negative, empty, self.cfg, self.neg_scale,
                               latent_shape, fits=fits, post_cfg=post_cfg)


def sa_solver_choice(model: DiffusionModel, eta: float, sde_start_percent: float, sde_end_percent: float,
                     s_noise: float, predictor_order: int, corrector_order: int, use_pece: bool,
                     simple_order_2: bool) -> SamplerChoice:
    """SamplerSASolver: stochastic (tau = eta) between the sigmas at the two sampling percentages."""
    from sampling.sa_solver import TauWindow
    ms = model.model_sampling
    tau = TauWindow(ms.percent_to_sigma(sde_start_percent), ms.percent_to_sigma(sde_end_percent), eta)
    return sampler_choice("sa_solver", tau_func=tau, s_noise=s_noise, predictor_order=predictor_order,
                          corrector_order=corrector_order, use_pece=use_pece, simple_order_2=simple_order_2)
