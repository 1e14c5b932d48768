"""ComfyUI's ``comfy.samplers`` for plugins, over Plexus's sampling registry and diffusion.ksampler.

- ``KSAMPLER_NAMES`` / ``SAMPLER_NAMES`` / ``SCHEDULER_NAMES`` and ``KSampler.SAMPLERS`` / ``SCHEDULERS``
  are the names Plexus runs (sampling.SAMPLERS / sampling.schedules.SCHEDULERS, ComfyUI's order), so a
  pack's combo lists what its sampler can run.
- A SAMPLER (``sampler_object(name)``, ``ksampler(name, extra_options)``, ``KSAMPLER(fn)``) is Plexus's
  ``diffusion.ksampler.SamplerChoice``: it goes into Plexus's SamplerCustom and back. ``KSAMPLER(fn)``
  takes a k-diffusion style function ``fn(model, x, sigmas, extra_args=, callback=, disable=, **options)``
  (what packs write) and runs it as a Plexus sampler.
- ``KSampler(model, steps, device, sampler, scheduler, denoise).sample(noise, positive, negative, cfg,
  latent_image, ...)`` and ``CFGGuider`` (a GUIDER Plexus's SamplerCustomAdvanced takes) run
  diffusion.ksampler.run_sampling.
"""
from __future__ import annotations

from typing import Any, Callable

import torch

from diffusion import ksampler as _ks
from sampling.core import Step
from sampling.samplers import DISCARD_PENULTIMATE_SIGMA_SAMPLERS, SAMPLERS
from sampling.schedules import SCHEDULERS
from sampling.schedules import calculate_sigmas as _calculate_sigmas

_NOT_K = ("ddim", "uni_pc", "uni_pc_bh2")
KSAMPLER_NAMES = [name for name in SAMPLERS if name not in _NOT_K]
SAMPLER_NAMES = KSAMPLER_NAMES + [name for name in _NOT_K if name in SAMPLERS]
SCHEDULER_NAMES = list(SCHEDULERS)


def calculate_sigmas(model_sampling: Any, scheduler_name: str, steps: int) -> torch.Tensor:
    if scheduler_name not in SCHEDULERS:
        raise ValueError(f"error invalid scheduler {scheduler_name}")
    return _calculate_sigmas(model_sampling, scheduler_name, steps)


NOISE_SAMPLER_KEY = "plexus_noise_sampler"


def _plexus_sampler(fn: Callable) -> Callable:
    """A k-diffusion style sampler function as a Plexus sampler (denoise, x, sigmas, *, on_step, ...)."""

    def run(denoise, x, sigmas, *, on_step=None, noise_sampler=None, **options):
        def model(x_in, sigma, **_):
            return denoise(x_in, sigma)

        def callback(info: dict) -> None:
            if on_step is not None:
                on_step(Step(index=int(info["i"]), x=info["x"], sigma=info["sigma"], x0=info["denoised"]))

        extra = {"noise_sampler": noise_sampler} if noise_sampler is not None and _takes(fn, "noise_sampler") else {}
        # the run's seeded noise, for comfy.k_diffusion.sampling functions the plugin's sampler calls
        extra_args = {NOISE_SAMPLER_KEY: noise_sampler} if noise_sampler is not None else {}
        return fn(model, x, sigmas, extra_args=extra_args, callback=callback, disable=True, **extra, **options)

    run.__name__ = getattr(fn, "__name__", "plugin_sampler")
    run.plugin_function = fn
    return run


def _takes(fn: Callable, name: str) -> bool:
    import inspect
    try:
        parameters = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False
    return name in parameters or any(p.kind is p.VAR_KEYWORD for p in parameters.values())


class Sampler:
    """ComfyUI's base class of samplers (packs subclass KSAMPLER or check isinstance)."""


class KSAMPLER(_ks.SamplerChoice, Sampler):
    """SAMPLER from a sampler function (``sampler_function``, ``extra_options``, ``inpaint_options``)."""

    def __init__(self, sampler_function: Callable | str, extra_options: dict | None = None,
                 inpaint_options: dict | None = None):
        name = sampler_function if isinstance(sampler_function, str) else _plexus_sampler(sampler_function)
        object.__setattr__(self, "name", name)
        object.__setattr__(self, "options", tuple((extra_options or {}).items()))
        object.__setattr__(self, "sampler_function", sampler_function)
        object.__setattr__(self, "extra_options", dict(extra_options or {}))
        object.__setattr__(self, "inpaint_options", dict(inpaint_options or {}))

    def __hash__(self) -> int:
        return id(self)


def ksampler(sampler_name: str, extra_options: dict | None = None, inpaint_options: dict | None = None) -> KSAMPLER:
    if sampler_name not in SAMPLERS:
        raise ValueError(f"{sampler_name!r} is not a sampler Plexus runs")
    return KSAMPLER(sampler_name, extra_options, inpaint_options)


def sampler_object(name: str) -> KSAMPLER:
    return ksampler(name)


def _reporter(callback: Callable | None):
    """A StepReporter that also calls ComfyUI's ``callback(step, x0, x, total_steps)``."""
    if callback is None:
        return None

    class Reporter(_ks.StepReporter):
        def __call__(self, value: int, maximum: int, step: Step) -> None:
            super().__call__(value, maximum, step)
            callback(step.index, step.x0, step.x, maximum)

    return Reporter()


class CFGGuider:
    """ComfyUI's CFGGuider over Plexus's run_sampling; also a GUIDER for Plexus's SamplerCustomAdvanced."""

    def __init__(self, model_patcher: Any):
        self.model_patcher = model_patcher
        self.model_options = model_patcher.model_options
        self.original_conds: dict[str, list] = {}
        self.cfg = 1.0

    model = property(lambda self: self.model_patcher)
    positive = property(lambda self: self.original_conds.get("positive", []))
    negative = property(lambda self: self.original_conds.get("negative"))

    def set_conds(self, positive: list, negative: list | None) -> None:
        self.inner_set_conds({"positive": positive, "negative": negative})

    def inner_set_conds(self, conds: dict) -> None:
        self.original_conds.update(conds)

    def set_cfg(self, cfg: float) -> None:
        self.cfg = float(cfg)

    def sample(self, noise: torch.Tensor, latent_image: torch.Tensor, sampler: Any, sigmas: torch.Tensor,
               denoise_mask: torch.Tensor | None = None, callback: Callable | None = None,
               disable_pbar: bool = False, seed: int | None = None) -> torch.Tensor:
        if sigmas.shape[-1] == 0:
            return latent_image
        sampler = sampler if isinstance(sampler, _ks.SamplerChoice) else sampler_object(str(sampler))
        latent = {"samples": latent_image}
        if denoise_mask is not None:
            latent["noise_mask"] = denoise_mask
        out = _ks.run_sampling(self.model_patcher, latent, self.positive, self.negative, seed=int(seed or 0),
                               cfg=self.cfg, sampler_name=sampler.name, sigmas=sigmas.float(),
                               sampler_options=dict(sampler.options), reporter=_reporter(callback), noise=noise)
        return out["samples"]


def sample(model: Any, noise: torch.Tensor, positive: list, negative: list, cfg: float, device: Any, sampler: Any,
           sigmas: torch.Tensor, model_options: dict | None = None, latent_image: torch.Tensor | None = None,
           denoise_mask: torch.Tensor | None = None, callback: Callable | None = None, disable_pbar: bool = False,
           seed: int | None = None) -> torch.Tensor:
    guider = CFGGuider(model)
    guider.set_conds(positive, negative)
    guider.set_cfg(cfg)
    return guider.sample(noise, latent_image, sampler, sigmas, denoise_mask, callback, disable_pbar, seed)


class KSampler:
    SCHEDULERS = SCHEDULER_NAMES
    SAMPLERS = SAMPLER_NAMES
    DISCARD_PENULTIMATE_SIGMA_SAMPLERS = set(DISCARD_PENULTIMATE_SIGMA_SAMPLERS)

    def __init__(self, model: Any, steps: int, device: Any, sampler: str | None = None, scheduler: str | None = None,
                 denoise: float | None = None, model_options: dict | None = None):
        self.model = model
        self.device = device
        self.scheduler = scheduler if scheduler in self.SCHEDULERS else self.SCHEDULERS[0]
        self.sampler = sampler if sampler in self.SAMPLERS else self.SAMPLERS[0]
        self.denoise = denoise
        self.model_options = model_options or {}
        self.set_steps(steps, denoise)

    def calculate_sigmas(self, steps: int) -> torch.Tensor:
        is_discarding = self.sampler in self.DISCARD_PENULTIMATE_SIGMA_SAMPLERS
        sigmas = calculate_sigmas(self.model.get_model_object("model_sampling"), self.scheduler,
                                  steps + 1 if is_discarding else steps)
        return torch.cat([sigmas[:-2], sigmas[-1:]]) if is_discarding else sigmas

    def set_steps(self, steps: int, denoise: float | None = None) -> None:
        self.steps = steps
        if denoise is None or denoise > 0.9999:
            self.sigmas = self.calculate_sigmas(steps)
        elif denoise <= 0.0:
            self.sigmas = torch.FloatTensor([])
        else:
            self.sigmas = self.calculate_sigmas(int(steps / denoise))[-(steps + 1):]

    def sample(self, noise: torch.Tensor, positive: list, negative: list, cfg: float,
               latent_image: torch.Tensor | None = None, start_step: int | None = None, last_step: int | None = None,
               force_full_denoise: bool = False, denoise_mask: torch.Tensor | None = None,
               sigmas: torch.Tensor | None = None, callback: Callable | None = None, disable_pbar: bool = False,
               seed: int | None = None) -> torch.Tensor:
        sigmas = (self.sigmas if sigmas is None else sigmas).clone()
        if last_step is not None and last_step < len(sigmas) - 1:
            sigmas = sigmas[:last_step + 1]
            if force_full_denoise:
                sigmas[-1] = 0
        if start_step is not None:
            if start_step < len(sigmas) - 1:
                sigmas = sigmas[start_step:]
            else:
                return latent_image if latent_image is not None else torch.zeros_like(noise)
        return sample(self.model, noise, positive, negative, cfg, self.device, sampler_object(self.sampler), sigmas,
                      self.model_options, latent_image=latent_image, denoise_mask=denoise_mask, callback=callback,
                      disable_pbar=disable_pbar, seed=seed)


_GUIDANCE_INTERNALS = ("Plexus builds its CFG denoiser inside diffusion.ksampler.run_sampling and does not expose "
                       "ComfyUI's per-step guidance internals yet (comfy.samplers.{what}); use CFGGuider / "
                       "KSampler, or a model patch (set_model_sampler_cfg_function)")


def sampling_function(model: Any, x: torch.Tensor, timestep: torch.Tensor, uncond: Any, cond: Any,
                      cond_scale: float, model_options: dict | None = None, seed: int | None = None) -> torch.Tensor:
    """ComfyUI's one CFG step (packs' CFGGuider subclasses call it from ``predict_noise``); named so those
    packs import, raises when called."""
    raise NotImplementedError(_GUIDANCE_INTERNALS.format(what="sampling_function"))


def calc_cond_batch(model: Any, conds: list, x_in: torch.Tensor, timestep: torch.Tensor,
                    model_options: dict) -> list:
    raise NotImplementedError(_GUIDANCE_INTERNALS.format(what="calc_cond_batch"))
