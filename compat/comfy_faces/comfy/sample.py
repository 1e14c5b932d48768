"""ComfyUI's ``comfy.sample`` for plugins: noise and the two sampling entry points, over sampling.noise
and the ``comfy.samplers`` face (itself over diffusion.ksampler)."""
from __future__ import annotations

from typing import Any, Callable

import torch

from diffusion.ksampler import fix_empty_latent_channels as _fix_channels
from sampling.noise import prepare_noise as _prepare_noise

from . import samplers as _samplers


def prepare_noise(latent_image: torch.Tensor, seed: int, noise_inds: Any = None) -> torch.Tensor:
    """Seeded CPU noise of the latent's shape (``noise_inds``: the LATENT's batch_index)."""
    indices = None if noise_inds is None else [int(i) for i in noise_inds]
    return _prepare_noise(latent_image, seed, indices).to(latent_image.dtype)


def fix_empty_latent_channels(model: Any, latent_image: torch.Tensor) -> torch.Tensor:
    return _fix_channels(model, latent_image)


def sample(model: Any, noise: torch.Tensor, steps: int, cfg: float, sampler_name: str, scheduler: str,
           positive: list, negative: list, latent_image: torch.Tensor, denoise: float = 1.0,
           disable_noise: bool = False, start_step: int | None = None, last_step: int | None = None,
           force_full_denoise: bool = False, noise_mask: torch.Tensor | None = None,
           sigmas: torch.Tensor | None = None, callback: Callable | None = None, disable_pbar: bool = False,
           seed: int | None = None) -> torch.Tensor:
    sampler = _samplers.KSampler(model, steps=steps, device=model.load_device, sampler=sampler_name,
                                 scheduler=scheduler, denoise=denoise, model_options=model.model_options)
    return sampler.sample(noise, positive, negative, cfg=cfg, latent_image=latent_image, start_step=start_step,
                          last_step=last_step, force_full_denoise=force_full_denoise, denoise_mask=noise_mask,
                          sigmas=sigmas, callback=callback, disable_pbar=disable_pbar, seed=seed).cpu()


def sample_custom(model: Any, noise: torch.Tensor, cfg: float, sampler: Any, sigmas: torch.Tensor, positive: list,
                  negative: list, latent_image: torch.Tensor, noise_mask: torch.Tensor | None = None,
                  callback: Callable | None = None, disable_pbar: bool = False, seed: int | None = None) -> torch.Tensor:
    return _samplers.sample(model, noise, positive, negative, cfg, model.load_device, sampler, sigmas,
                            model.model_options, latent_image=latent_image, denoise_mask=noise_mask,
                            callback=callback, disable_pbar=disable_pbar, seed=seed).cpu()
