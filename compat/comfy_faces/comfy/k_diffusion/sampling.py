"""ComfyUI's ``comfy.k_diffusion.sampling`` for plugins: ``sample_<name>(model, x, sigmas, extra_args=None,
callback=None, disable=None, **options)`` for every sampler Plexus runs (sampling.SAMPLERS), plus the
schedule and step helpers packs call. Each function calls the Plexus sampler with ``model(x, sigma,
**extra_args)`` as its denoiser; ``callback`` receives k-diffusion's ``{"x", "i", "sigma", "sigma_hat",
"denoised"}``; noise is seeded from ``extra_args["seed"]`` as ComfyUI seeds it (or ``noise_sampler``)."""
from __future__ import annotations

from typing import Any, Callable

import torch

from sampling import core as _core
from sampling import schedules as _schedules
from sampling.noise import BrownianTreeNoiseSampler, gaussian_noise_sampler
from sampling.samplers import BROWNIAN_SAMPLERS, SAMPLERS, run_sampler

to_d = _core.to_d
get_ancestral_step = _core.ancestral_step


def append_zero(x: torch.Tensor) -> torch.Tensor:
    return torch.cat([x, x.new_zeros([1])])


def get_sigmas_karras(n: int, sigma_min: float, sigma_max: float, rho: float = 7.0, device: Any = "cpu"):
    return _schedules.karras_sigmas(n, sigma_min, sigma_max, rho).to(device)


def get_sigmas_exponential(n: int, sigma_min: float, sigma_max: float, device: Any = "cpu"):
    return _schedules.exponential_sigmas(n, sigma_min, sigma_max).to(device)


def default_noise_sampler(x: torch.Tensor, seed: int | None = None) -> Callable:
    return gaussian_noise_sampler(x, int(seed) if seed is not None else 0)


def _k_function(name: str) -> Callable:
    def sample(model, x, sigmas, extra_args=None, callback=None, disable=None, noise_sampler=None, **options):
        extra_args = dict(extra_args or {})
        seed = int(extra_args.get("seed") or 0)
        noise_sampler = noise_sampler or extra_args.pop("plexus_noise_sampler", None)

        def denoise(x_in, sigma):
            return model(x_in, sigma, **extra_args)

        def on_step(step: _core.Step) -> None:
            if callback is not None:
                callback({"x": step.x, "i": step.index, "sigma": step.sigma, "sigma_hat": step.sigma,
                          "denoised": step.x0})

        if noise_sampler is None:
            if name in BROWNIAN_SAMPLERS:
                noise_sampler = BrownianTreeNoiseSampler(x, sigmas[sigmas > 0].min(), sigmas.max(), seed=seed,
                                                         is_on_cpu=not name.endswith("_gpu"))
            else:
                noise_sampler = gaussian_noise_sampler(x, seed)
        return run_sampler(name, denoise, x, sigmas, on_step=on_step, noise_sampler=noise_sampler, **options)

    sample.__name__ = f"sample_{name}"
    return sample


def __getattr__(attribute: str) -> Any:
    if attribute.startswith("sample_") and attribute[len("sample_"):] in SAMPLERS:
        return _k_function(attribute[len("sample_"):])
    raise AttributeError(f"module 'comfy.k_diffusion.sampling' has no attribute {attribute!r} in Plexus")
