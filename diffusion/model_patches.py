"""MODEL clones with a different model sampling or guidance function (ModelSamplingDiscrete, RescaleCFG,
ModelSamplingLTXV, ModelSamplingStableCascade)."""
from __future__ import annotations

import math

from sampling.guidance import rescale_cfg
from sampling.flux import FluxSampling
from sampling.model_sampling import (X0, DiscreteSampling, DistilledDiscreteSampling, Eps, StableCascadeSampling,
                                     VPrediction)
from sampling.schedules_extra import ltxv_shift

from .objects import DiffusionModel

DISCRETE_SAMPLING_TYPES = ["eps", "v_prediction", "lcm", "x0", "img_to_img"]


def discrete_sampling(sampling: str, zsnr: bool = False):
    """The SD1.x/SD2.x DDPM table with another prediction type; zsnr rescales it to zero terminal SNR
    (Lin et al. 2023, algorithm 1); lcm keeps only the 50 distilled timesteps (Luo et al. 2023)."""
    if sampling == "eps":
        return DiscreteSampling(Eps(), zero_terminal_snr=zsnr)
    if sampling == "v_prediction":
        return DiscreteSampling(VPrediction(), zero_terminal_snr=zsnr)
    if sampling == "x0":
        return DiscreteSampling(X0(), zero_terminal_snr=zsnr)
    if sampling == "lcm":
        return DistilledDiscreteSampling(zero_terminal_snr=zsnr)
    raise ValueError(f"ModelSamplingDiscrete sampling {sampling!r} is not supported yet; choose one of "
                     f"{', '.join(DISCRETE_SAMPLING_TYPES[:4])}")


def with_discrete_sampling(model: DiffusionModel, sampling: str, zsnr: bool = False) -> DiffusionModel:
    return model.with_model_sampling(discrete_sampling(sampling, zsnr))


def with_rescale_cfg(model: DiffusionModel, multiplier: float) -> DiffusionModel:
    """RescaleCFG (Lin et al. 2023, section 3.4) as the clone's CFG function."""
    twin = model.clone()
    twin.set_cfg_function(rescale_cfg(multiplier))
    return twin


def latent_tokens(latent: dict | None) -> int:
    """The number of latent cells past batch and channels (LTX-Video's token count); 4096 without a latent."""
    if latent is None:
        return 4096
    return math.prod(latent["samples"].shape[2:])


def with_ltxv_sampling(model: DiffusionModel, max_shift: float, base_shift: float,
                       latent: dict | None = None) -> DiffusionModel:
    """ModelSamplingLTXV: rectified flow with FLUX.1's exponential shift, mu from the latent's token count
    (sampling.schedules_extra.ltxv_shift)."""
    return model.with_model_sampling(FluxSampling(shift=ltxv_shift(latent_tokens(latent), max_shift, base_shift)))


def with_stable_cascade_sampling(model: DiffusionModel, shift: float) -> DiffusionModel:
    """ModelSamplingStableCascade: eps prediction on Stable Cascade's shifted cosine schedule."""
    return model.with_model_sampling(StableCascadeSampling(Eps(), shift=shift))
