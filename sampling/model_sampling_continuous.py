"""Continuous-time model samplings (ModelSamplingContinuousEDM / ModelSamplingContinuousV) and the EDM
prediction type.

- `EDMPrediction`: Karras et al. 2022 ("Elucidating the design space", table 1, eq. 7) preconditioning,
  x0 = c_skip x + c_out F with c_skip = sd^2 / (sigma^2 + sd^2), c_out = sigma sd / sqrt(sigma^2 + sd^2).
- `ContinuousEDMSampling`: sigma in [sigma_min, sigma_max] with Karras' noise conditioning
  c_noise = log(sigma) / 4 as the model's timestep; the table (for schedulers) is 1000 log-spaced sigmas.
- `ContinuousVSampling`: the same range with the timestep 2 atan(sigma) / pi (the cosine-schedule time
  t with sigma = tan(pi t / 2), Nichol & Dhariwal 2021, in VE terms), as SD-family continuous v models use.
- `PerChannelLatentFormat`: a latent format normalised per channel (Playground v2.5's mean / std).
Both samplings live in the VE space x = x0 + sigma n (noise scaling as DiscreteSampling).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from .latent_format import SDXL, LatentFormat
from .model_sampling import Eps, Prediction, SigmaTable, VPrediction


def _per_sample(sigma: Tensor, like: Tensor) -> Tensor:
    return sigma.reshape(sigma.shape[:1] + (1,) * (like.ndim - 1))


@dataclass(frozen=True)
class EDMPrediction:
    sigma_data: float = 0.5

    def to_x0(self, output: Tensor, x: Tensor, sigma: Tensor) -> Tensor:
        s, sd = _per_sample(sigma, x), self.sigma_data
        return x * sd ** 2 / (s ** 2 + sd ** 2) + output * s * sd / (s ** 2 + sd ** 2) ** 0.5


class ContinuousEDMSampling(SigmaTable):
    is_rectified_flow = False

    def __init__(self, prediction: Prediction | None = None, *, sigma_min: float = 0.002,
                 sigma_max: float = 120.0, sigma_data: float = 1.0) -> None:
        self.prediction = prediction if prediction is not None else Eps()
        self.sigma_data = sigma_data
        self.sigmas = torch.linspace(math.log(sigma_min), math.log(sigma_max), 1000).exp()
        self.log_sigmas = self.sigmas.log()

    def timestep(self, sigma: Tensor) -> Tensor:
        return 0.25 * sigma.log()

    def sigma(self, timestep: Tensor) -> Tensor:
        return (timestep / 0.25).exp()

    def percent_to_sigma(self, percent: float) -> float:
        """Progress 0..1 -> sigma, log-linear between sigma_max and sigma_min (0 and 1 give the
        interval-test extremes, as the discrete sampling does)."""
        if percent <= 0.0:
            return 999999999.9
        if percent >= 1.0:
            return 0.0
        log_min, log_max = math.log(float(self.sigma_min)), math.log(float(self.sigma_max))
        return math.exp((log_max - log_min) * (1.0 - percent) + log_min)

    def input_scale(self, sigma: Tensor) -> Tensor:
        """c_in = 1 / sqrt(sigma^2 + sigma_data^2) (Karras et al. 2022, table 1)."""
        return 1.0 / (sigma ** 2 + self.sigma_data ** 2) ** 0.5

    def noise_scaling(self, sigma: Tensor, noise: Tensor, latent: Tensor, is_max_denoise: bool = False) -> Tensor:
        scale = torch.sqrt(1.0 + sigma ** 2.0) if is_max_denoise else sigma
        return noise * scale + latent

    def inverse_noise_scaling(self, sigma: Tensor, latent: Tensor) -> Tensor:
        return latent


class ContinuousVSampling(ContinuousEDMSampling):
    def timestep(self, sigma: Tensor) -> Tensor:
        return sigma.atan() / math.pi * 2

    def sigma(self, timestep: Tensor) -> Tensor:
        return (timestep * math.pi / 2).tan()


@dataclass(frozen=True)
class PerChannelLatentFormat(LatentFormat):
    """z_model = (z - mean_c) * scale / std_c per channel c (diffusers' latents_mean / latents_std)."""
    channel_mean: tuple[float, ...] = ()
    channel_std: tuple[float, ...] = ()

    def _stats(self, latent: Tensor) -> tuple[Tensor, Tensor]:
        shape = (1, -1) + (1,) * (latent.ndim - 2)
        mean = torch.tensor(self.channel_mean, dtype=latent.dtype, device=latent.device).view(shape)
        std = torch.tensor(self.channel_std, dtype=latent.dtype, device=latent.device).view(shape)
        return mean, std

    def process_in(self, latent: Tensor) -> Tensor:
        mean, std = self._stats(latent)
        return (latent - mean) * self.scale_factor / std

    def process_out(self, latent: Tensor) -> Tensor:
        mean, std = self._stats(latent)
        return latent * std / self.scale_factor + mean


# Playground v2.5 (playgroundai/playground-v2.5-1024px-aesthetic, vae/config.json): the SDXL VAE with
# per-channel latent statistics and scale 0.5; SDXL's preview factors.
PLAYGROUND_V25 = PerChannelLatentFormat(
    scale_factor=0.5, rgb_factors=SDXL.rgb_factors, rgb_bias=SDXL.rgb_bias,
    taesd_decoder_name=SDXL.taesd_decoder_name,
    channel_mean=(-1.6574, 1.886, -1.383, 2.5155), channel_std=(8.4927, 5.9022, 6.5498, 5.2299))

CONTINUOUS_EDM_TYPES = ["v_prediction", "edm", "edm_playground_v2.5", "eps", "cosmos_rflow"]


def continuous_edm(sampling: str, sigma_min: float, sigma_max: float) -> tuple[ContinuousEDMSampling, LatentFormat | None]:
    """(model sampling, latent format to use or None to keep the model's) for ModelSamplingContinuousEDM."""
    if sampling == "eps":
        return ContinuousEDMSampling(Eps(), sigma_min=sigma_min, sigma_max=sigma_max, sigma_data=1.0), None
    if sampling == "v_prediction":
        return ContinuousEDMSampling(VPrediction(1.0), sigma_min=sigma_min, sigma_max=sigma_max, sigma_data=1.0), None
    if sampling in ("edm", "edm_playground_v2.5"):
        ms = ContinuousEDMSampling(EDMPrediction(0.5), sigma_min=sigma_min, sigma_max=sigma_max, sigma_data=0.5)
        return ms, (PLAYGROUND_V25 if sampling == "edm_playground_v2.5" else None)
    raise ValueError(f"ModelSamplingContinuousEDM sampling {sampling!r} is not supported (Cosmos models are not "
                     f"a Plexus family yet); choose one of {', '.join(CONTINUOUS_EDM_TYPES[:4])}")
