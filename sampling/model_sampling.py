"""How a model family maps noise levels: sigma tables, sigma <-> timestep, prediction types.

Samplers only ever see sigmas and a `Denoiser` (x, sigma[B]) -> x0. Everything model-specific lives
here, in two small pieces:

- a *prediction type* (`Eps`, `VPrediction`, `X0`, `Lcm`, `Velocity`): maps raw model output to x0;
- a *model sampling* (`DiscreteSampling` for SD1.x/SD2.x DDPM betas, `FlowSampling` for SD3-style
  rectified flow with a shift): the sigma table, sigma <-> the model's timestep, the input scale
  c_in, and how a clean latent plus unit noise becomes the sampler's starting point.

Two noise spaces exist (ComfyUI calls the second CONST):
- variance exploding (Karras et al. 2022, "Elucidating the design space", eq. 1):  x = x0 + sigma * n
- rectified flow (Liu et al. 2022; Esser et al. 2024, SD3 paper eq. 2):          x = (1 - sigma) * x0 + sigma * n
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Protocol

import torch
from torch import Tensor


def _per_sample(sigma: Tensor, like: Tensor) -> Tensor:
    """sigma[B] -> [B, 1, 1, ...] so it broadcasts over a latent `like`."""
    return sigma.reshape(sigma.shape[:1] + (1,) * (like.ndim - 1))


# ---------------------------------------------------------------------------------------------
# Prediction types: raw model output -> x0
# ---------------------------------------------------------------------------------------------

class Prediction(Protocol):
    def to_x0(self, output: Tensor, x: Tensor, sigma: Tensor) -> Tensor: ...


@dataclass(frozen=True)
class Eps:
    """The model predicts the added noise: x0 = x - sigma * eps (Ho et al. 2020, in VE form)."""
    def to_x0(self, output: Tensor, x: Tensor, sigma: Tensor) -> Tensor:
        return x - output * _per_sample(sigma, x)


@dataclass(frozen=True)
class VPrediction:
    """v-prediction (Salimans & Ho 2022, "Progressive distillation", appendix D), in Karras' VE
    preconditioning with sigma_data (Karras et al. 2022, table 1, "VP" column generalised):
    x0 = x * sd^2 / (sigma^2 + sd^2) - v * sigma * sd / sqrt(sigma^2 + sd^2)."""
    sigma_data: float = 1.0

    def to_x0(self, output: Tensor, x: Tensor, sigma: Tensor) -> Tensor:
        s, sd = _per_sample(sigma, x), self.sigma_data
        return x * sd ** 2 / (s ** 2 + sd ** 2) - output * s * sd / (s ** 2 + sd ** 2) ** 0.5


@dataclass(frozen=True)
class X0:
    """The model predicts the clean sample directly."""
    def to_x0(self, output: Tensor, x: Tensor, sigma: Tensor) -> Tensor:
        return output


@dataclass(frozen=True)
class Velocity:
    """Rectified flow: the model predicts v = n - x0 for x = (1 - sigma) x0 + sigma n, hence
    x0 = x - sigma * v (Esser et al. 2024, SD3, section 2)."""
    def to_x0(self, output: Tensor, x: Tensor, sigma: Tensor) -> Tensor:
        return x - output * _per_sample(sigma, x)


@dataclass(frozen=True)
class Lcm:
    """Latent consistency model output (Luo et al. 2023, LCM, eq. 9, consistency-model boundary
    scalings of Song et al. 2023 with sigma_data = 0.5 and timestep scaling 10, as ComfyUI's LCM):
    x0_eps = x - sigma * eps;  x0 = c_out(t) * x0_eps + c_skip(t) * x."""
    timestep_of: object = field(compare=False)  # callable sigma -> timestep of the model sampling
    sigma_data: float = 0.5
    timestep_scaling: float = 10.0

    def to_x0(self, output: Tensor, x: Tensor, sigma: Tensor) -> Tensor:
        t = _per_sample(self.timestep_of(sigma).to(x.dtype), x) * self.timestep_scaling
        x0 = x - output * _per_sample(sigma, x)
        sd2 = self.sigma_data ** 2
        c_skip = sd2 / (t ** 2 + sd2)
        c_out = t / (t ** 2 + sd2) ** 0.5
        return c_out * x0 + c_skip * x


# ---------------------------------------------------------------------------------------------
# Beta schedules (discrete DDPM)
# ---------------------------------------------------------------------------------------------

def make_betas(schedule: str = "linear", timesteps: int = 1000, linear_start: float = 0.00085,
               linear_end: float = 0.012) -> Tensor:
    """DDPM betas in float64. "linear" is the latent-diffusion "scaled linear" schedule (linear in
    sqrt(beta), Rombach et al. 2022 / CompVis ldm `make_beta_schedule`); "sqrt_linear" is linear in
    beta (Ho et al. 2020)."""
    if schedule == "linear":
        return torch.linspace(linear_start ** 0.5, linear_end ** 0.5, timesteps, dtype=torch.float64) ** 2
    if schedule == "sqrt_linear":
        return torch.linspace(linear_start, linear_end, timesteps, dtype=torch.float64)
    raise ValueError(f"unknown beta schedule {schedule!r}; expected 'linear' or 'sqrt_linear'")


def rescale_zero_terminal_snr(sigmas: Tensor) -> Tensor:
    """Lin et al. 2023, "Common diffusion noise schedules and sample steps are flawed", algorithm 1:
    shift and scale sqrt(alpha_bar) so the last step has zero SNR (the last alpha_bar is set to a tiny
    positive value, as ComfyUI does, so sigma stays finite)."""
    alphas_bar_sqrt = (1.0 / (sigmas * sigmas + 1.0)).sqrt()
    first, last = alphas_bar_sqrt[0].clone(), alphas_bar_sqrt[-1].clone()
    alphas_bar_sqrt = (alphas_bar_sqrt - last) * (first / (first - last))
    alphas_bar = alphas_bar_sqrt ** 2
    alphas_bar[-1] = 4.8973451890853435e-08
    return ((1 - alphas_bar) / alphas_bar) ** 0.5


# ---------------------------------------------------------------------------------------------
# Model samplings
# ---------------------------------------------------------------------------------------------

class ModelSampling(Protocol):
    """What the driver, the schedules and the CFG wrapper need to know about a model family."""
    sigmas: Tensor              # ascending table of the model's trained noise levels
    prediction: Prediction
    is_rectified_flow: bool

    @property
    def sigma_min(self) -> Tensor: ...
    @property
    def sigma_max(self) -> Tensor: ...
    def timestep(self, sigma: Tensor) -> Tensor: ...
    def sigma(self, timestep: Tensor) -> Tensor: ...
    def percent_to_sigma(self, percent: float) -> float: ...
    def input_scale(self, sigma: Tensor) -> Tensor: ...
    def noise_scaling(self, sigma: Tensor, noise: Tensor, latent: Tensor, is_max_denoise: bool = False) -> Tensor: ...
    def inverse_noise_scaling(self, sigma: Tensor, latent: Tensor) -> Tensor: ...


class SigmaTable:
    """A sampling's ascending table of trained noise levels and its two ends (what schedulers read)."""
    sigmas: Tensor
    log_sigmas: Tensor

    @property
    def sigma_min(self) -> Tensor:
        return self.sigmas[0]

    @property
    def sigma_max(self) -> Tensor:
        return self.sigmas[-1]


class DiscreteSampling(SigmaTable):
    """SD1.x / SD2.x: 1000 discrete DDPM steps, sigma_t = sqrt((1 - alpha_bar_t) / alpha_bar_t)
    (Karras et al. 2022, appendix C.1, the VP -> VE change of variables)."""
    is_rectified_flow = False

    def __init__(self, prediction: Prediction | None = None, *, beta_schedule: str = "linear",
                 linear_start: float = 0.00085, linear_end: float = 0.012, timesteps: int = 1000,
                 zero_terminal_snr: bool = False, sigma_data: float = 1.0) -> None:
        betas = make_betas(beta_schedule, timesteps, linear_start, linear_end)
        alphas_cumprod = torch.cumprod(1.0 - betas, dim=0)
        sigmas = ((1 - alphas_cumprod) / alphas_cumprod) ** 0.5
        if zero_terminal_snr:
            sigmas = rescale_zero_terminal_snr(sigmas)
        self.prediction = prediction if prediction is not None else Eps()
        self.sigma_data = sigma_data
        self._set_sigmas(sigmas)

    def _set_sigmas(self, sigmas: Tensor) -> None:
        self.sigmas = sigmas.float()
        self.log_sigmas = sigmas.log().float()

    def timestep(self, sigma: Tensor) -> Tensor:
        """Nearest trained step in log-sigma (the UNet takes integer-valued timesteps)."""
        dists = sigma.log().to(self.log_sigmas.device) - self.log_sigmas[:, None]
        return dists.abs().argmin(dim=0).view(sigma.shape).to(sigma.device)

    def sigma(self, timestep: Tensor) -> Tensor:
        """Fractional timesteps interpolate linearly in log sigma."""
        t = torch.clamp(timestep.float().to(self.log_sigmas.device), min=0, max=len(self.sigmas) - 1)
        low, high, w = t.floor().long(), t.ceil().long(), t.frac()
        log_sigma = (1 - w) * self.log_sigmas[low] + w * self.log_sigmas[high]
        return log_sigma.exp().to(timestep.device)

    def percent_to_sigma(self, percent: float) -> float:
        """Sampling progress (0 = start, 1 = end) -> sigma; used for conditioning timestep ranges."""
        if percent <= 0.0:
            return 999999999.9
        if percent >= 1.0:
            return 0.0
        return self.sigma(torch.tensor((1.0 - percent) * 999.0)).item()

    def input_scale(self, sigma: Tensor) -> Tensor:
        """c_in = 1 / sqrt(sigma^2 + sigma_data^2) (Karras et al. 2022, table 1)."""
        return 1.0 / (sigma ** 2 + self.sigma_data ** 2) ** 0.5

    def noise_scaling(self, sigma: Tensor, noise: Tensor, latent: Tensor, is_max_denoise: bool = False) -> Tensor:
        """x = latent + sigma * noise. At full denoise ComfyUI scales by sqrt(1 + sigma^2) instead,
        the exact std of x_T under the VP forward process mapped to VE."""
        scale = torch.sqrt(1.0 + sigma ** 2.0) if is_max_denoise else sigma
        return noise * scale + latent

    def inverse_noise_scaling(self, sigma: Tensor, latent: Tensor) -> Tensor:
        return latent


class DistilledDiscreteSampling(DiscreteSampling):
    """LCM-distilled SD1.x/SDXL: only `original_timesteps` of the 1000 steps are valid (Luo et al. 2023,
    skipping-step schedule; ComfyUI ModelSamplingDiscreteDistilled)."""

    def __init__(self, prediction: Prediction | None = None, *, original_timesteps: int = 50, **kwargs) -> None:
        super().__init__(Eps(), **kwargs)
        total = len(self.sigmas)
        self.skip_steps = total // original_timesteps
        valid = torch.zeros(original_timesteps)
        for i in range(original_timesteps):
            valid[original_timesteps - 1 - i] = self.sigmas[total - 1 - i * self.skip_steps]
        self._set_sigmas(valid)
        self.prediction = prediction if prediction is not None else Lcm(self.timestep)

    def timestep(self, sigma: Tensor) -> Tensor:
        dists = sigma.log().to(self.log_sigmas.device) - self.log_sigmas[:, None]
        idx = dists.abs().argmin(dim=0).view(sigma.shape)
        return (idx * self.skip_steps + (self.skip_steps - 1)).to(sigma.device)

    def sigma(self, timestep: Tensor) -> Tensor:
        t = ((timestep.float().to(self.log_sigmas.device) - (self.skip_steps - 1)) / self.skip_steps)
        return super().sigma(t).to(timestep.device)


class StableCascadeSampling(DiscreteSampling):
    """Stable Cascade (Wuerstchen v3, Pernias et al. 2023): a continuous cosine schedule, t in [0, 1],
    alpha_bar(t) = cos((t + s) / (1 + s) * pi / 2)^2 / cos(s / (1 + s) * pi / 2)^2 with s = 0.008
    (Nichol & Dhariwal 2021, eq. 17), clamped to [1e-4, 0.9999]; a shift moves log SNR by -2 log(shift)
    (its GDF's shifted schedule). The model's timestep is the unshifted inverse of the cosine, as ComfyUI
    computes it (StableCascadeSampling.timestep ignores the shift), so a workflow matches ComfyUI's.
    The table (what schedulers read) holds sigma(t) at t = 1/10000 ... 1."""

    def __init__(self, prediction: Prediction | None = None, *, shift: float = 1.0, cosine_s: float = 8e-3,
                 timesteps: int = 10000) -> None:
        self.prediction = prediction if prediction is not None else Eps()
        self.sigma_data = 1.0
        self.shift = shift
        self.cosine_s = cosine_s
        s = torch.tensor(cosine_s)     # float32 throughout, as ComfyUI computes it
        self._alpha_bar_0 = torch.cos(s / (1 + s) * math.pi * 0.5) ** 2
        ts = torch.arange(1, timesteps + 1, dtype=torch.float64) / timesteps
        self._set_sigmas(self.sigma(ts.float()))

    def sigma(self, timestep: Tensor) -> Tensor:
        t = torch.as_tensor(timestep, dtype=torch.float32)
        s = torch.tensor(self.cosine_s)
        alpha_bar = torch.cos((t + s) / (1 + s) * math.pi * 0.5) ** 2 / self._alpha_bar_0.to(t.device)
        if self.shift != 1.0:
            alpha_bar = torch.sigmoid(torch.log(alpha_bar / (1 - alpha_bar)) + 2 * torch.log(1.0 / torch.tensor(self.shift)))
        alpha_bar = alpha_bar.clamp(1e-4, 0.9999)
        return ((1 - alpha_bar) / alpha_bar) ** 0.5

    def timestep(self, sigma: Tensor) -> Tensor:
        alpha_bar = (1 / (sigma * sigma + 1)).clamp(0, 1.0)
        s = torch.tensor(self.cosine_s, device=sigma.device)
        return ((alpha_bar * self._alpha_bar_0.to(sigma.device)) ** 0.5).acos() / (math.pi * 0.5) * (1 + s) - s

    def percent_to_sigma(self, percent: float) -> float:
        if percent <= 0.0:
            return 999999999.9
        if percent >= 1.0:
            return 0.0
        return float(self.sigma(torch.tensor(1.0 - percent)))


def time_snr_shift(shift: float, t: Tensor | float) -> Tensor | float:
    """SD3's resolution-dependent timestep shift (Esser et al. 2024, eq. 23):
    t_shifted = shift * t / (1 + (shift - 1) * t)."""
    if shift == 1.0:
        return t
    return shift * t / (1 + (shift - 1) * t)


class FlowSampling(SigmaTable):
    """Rectified flow (SD3/3.5): sigma = t in [0, 1], shifted; the model takes timestep = sigma * 1000."""
    is_rectified_flow = True

    def __init__(self, prediction: Prediction | None = None, *, shift: float = 3.0, multiplier: float = 1000.0,
                 timesteps: int = 1000) -> None:
        self.prediction = prediction if prediction is not None else Velocity()
        self.shift = shift
        self.multiplier = multiplier
        ts = torch.arange(1, timesteps + 1, dtype=torch.float32) / timesteps
        self.sigmas = self.sigma(ts * multiplier)
        self.log_sigmas = self.sigmas.log()

    def timestep(self, sigma: Tensor) -> Tensor:
        return sigma * self.multiplier

    def sigma(self, timestep: Tensor) -> Tensor:
        return time_snr_shift(self.shift, timestep / self.multiplier)

    def percent_to_sigma(self, percent: float) -> float:
        if percent <= 0.0:
            return 1.0
        if percent >= 1.0:
            return 0.0
        return float(time_snr_shift(self.shift, 1.0 - percent))

    def input_scale(self, sigma: Tensor) -> Tensor:
        return torch.ones_like(sigma)

    def noise_scaling(self, sigma: Tensor, noise: Tensor, latent: Tensor, is_max_denoise: bool = False) -> Tensor:
        """x = sigma * noise + (1 - sigma) * latent (the rectified-flow interpolation)."""
        return sigma * noise + (1.0 - sigma) * latent

    def inverse_noise_scaling(self, sigma: Tensor, latent: Tensor) -> Tensor:
        return latent / (1.0 - sigma)


def sigma_to_half_log_snr(sigma: Tensor, is_rectified_flow: bool) -> Tensor:
    """lambda = log(alpha / sigma_vp): -log(sigma) in VE; log((1 - sigma) / sigma) in rectified flow
    (Lu et al. 2022, DPM-Solver, section 3.1, with alpha = 1 - sigma for flow)."""
    return sigma.logit().neg() if is_rectified_flow else sigma.log().neg()


def half_log_snr_to_sigma(half_log_snr: Tensor, is_rectified_flow: bool) -> Tensor:
    return half_log_snr.neg().sigmoid() if is_rectified_flow else half_log_snr.neg().exp()


def is_max_denoise(model_sampling: ModelSampling, sigmas: Tensor) -> bool:
    """True when sampling starts at (or above) the model's largest sigma (ComfyUI Sampler.max_denoise)."""
    sigma_max, sigma = float(model_sampling.sigma_max), float(sigmas[0])
    return math.isclose(sigma_max, sigma, rel_tol=1e-05) or sigma > sigma_max
