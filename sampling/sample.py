"""The sampling driver: KSampler / KSamplerAdvanced semantics in one call.

    samples = sample(model_fn, model_sampling, latent, positive, negative, seed=..., steps=20, cfg=7.0,
                     sampler_name="euler", scheduler="normal", denoise=1.0, on_progress=...)

`model_fn` follows the contract in `guidance.py` (scaled input, model timestep, conditioning dict ->
raw prediction); for the SD1.x UNet it is `lambda x, t, c: unet(x, t, c["c_crossattn"])`. `positive` /
`negative` are `Cond` lists (`guidance.conds_from_conditioning` converts a ComfyUI CONDITIONING).
`latent` is the LATENT's "samples" tensor in VAE space; pass its "batch_index" and "noise_mask" if
present. The result is in VAE space too, ready to put back into {"samples": ...}. `on_progress(value,
max, step)` runs after each model evaluation of a step (step.x0 feeds `preview.latent_to_rgb`); raising
from it (e.g. `Interrupted`) stops sampling.

Order of operations follows ComfyUI (nodes.common_ksampler -> comfy.sample.sample -> KSampler ->
CFGGuider -> KSAMPLER) so that the same seed gives the same image:
1. noise = prepare_noise(latent, seed, batch_index) (zeros with add_noise off);
2. sigmas from the scheduler (one extra step, penultimate dropped, for dpm_2*/uni_pc*; with denoise < 1,
   the last steps+1 sigmas of int(steps / denoise) steps); start/last step slicing, final sigma forced to 0
   unless leftover noise is requested;
3. latent -> model space; x = noise_scaling(sigmas[0], noise, latent) (sqrt(1 + sigma^2) at full denoise);
4. the sampler runs on a CFG denoiser; with a noise mask the known region is re-noised to the current sigma
   before, and pasted back after, every model call (ComfyUI KSamplerX0Inpaint);
5. inverse noise scaling and back to VAE space.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from .core import Step
from .guidance import (
    CFGDenoiser,
    CfgFunction,
    Cond,
    DualCFGDenoiser,
    FitsFn,
    ModelFn,
    PostCfgFunction,
    plain_cfg,
)
from .latent_format import LatentFormat
from .model_sampling import ModelSampling, is_max_denoise
from .noise import BrownianTreeNoiseSampler, gaussian_noise_sampler, inpaint_noise, prepare_noise, zero_noise
from .samplers import (
    BROWNIAN_SAMPLERS,
    CFG_PP_SAMPLERS,
    DISCARD_PENULTIMATE_SIGMA_SAMPLERS,
    HALF_LOG_SNR_SAMPLERS,
    get_sampler,
    run_sampler,
)
from .schedules import calculate_sigmas

ProgressHook = Callable[[int, int, Step], None]   # (value, max, step); may raise to interrupt
# (model_fn, ms, latent_shape, *, fits, cfg_function, post_cfg) -> a guided denoiser with `with_uncond`
# (e.g. a DualCFGDenoiser); `sample` builds a CFGDenoiser over positive/negative/cfg when none is given.
DenoiserFactory = Callable[..., CFGDenoiser | DualCFGDenoiser]
# (sigma[B], prepared noise mask [B, C, h, w], the run's sigmas) -> the mask to use at that sigma
MaskFunction = Callable[[Tensor, Tensor, Tensor], Tensor]


def compute_sigmas(ms: ModelSampling, scheduler: str, steps: int, sampler_name: str = "euler",
                   denoise: float = 1.0) -> Tensor:
    """The sigmas KSampler uses for `steps` and `denoise` (ComfyUI KSampler.set_steps)."""
    def full(n: int) -> Tensor:
        is_discarding = sampler_name in DISCARD_PENULTIMATE_SIGMA_SAMPLERS
        sigmas = calculate_sigmas(ms, scheduler, n + 1 if is_discarding else n)
        return torch.cat([sigmas[:-2], sigmas[-1:]]) if is_discarding else sigmas

    if denoise is None or denoise > 0.9999:
        return full(steps)
    if denoise <= 0.0:
        return torch.zeros(0)
    return full(int(steps / denoise))[-(steps + 1):]


def slice_sigmas(sigmas: Tensor, start_step: int | None, last_step: int | None,
                 is_full_denoise_forced: bool) -> Tensor | None:
    """KSamplerAdvanced's start/end steps; None means "nothing to do, return the input latent"."""
    if last_step is not None and last_step < len(sigmas) - 1:
        sigmas = sigmas[:last_step + 1].clone()
        if is_full_denoise_forced:
            sigmas[-1] = 0
    if start_step is not None:
        if start_step < len(sigmas) - 1:
            sigmas = sigmas[start_step:]
        else:
            return None
    return sigmas


def prepare_mask(noise_mask: Tensor, shape: Sequence[int]) -> Tensor:
    """[H, W] / [B, H, W] / [B, 1, H, W] mask (any size) -> [B, C, h, w] at latent size: a bilinear resize
    that keeps the fractional values at the edges (no rounding), the one channel repeated to C and the
    batch repeated or cut to B (ComfyUI `sampler_helpers.prepare_mask` / `utils.reshape_mask`)."""
    m = noise_mask.reshape((-1, 1, noise_mask.shape[-2], noise_mask.shape[-1])).float()
    m = F.interpolate(m, size=(shape[2], shape[3]), mode="bilinear")
    m = torch.cat([m] * shape[1], dim=1)
    if m.shape[0] < shape[0]:
        m = m.repeat([-(-shape[0] // m.shape[0]), 1, 1, 1])[:shape[0]]
    return m[:shape[0]]


def _inpainting(denoise, ms: ModelSampling, latent: Tensor, noise: Tensor, mask: Tensor, is_guided: bool,
                mask_at: Callable[[Tensor], Tensor] | None = None):
    """Keep the unmasked region on the noisy trajectory of the source latent (ComfyUI KSamplerX0Inpaint):
    before each call x = x * mask + noise_scaling(sigma, noise, latent) * (1 - mask); after it the
    x0 outside the mask is the source latent. `mask_at(sigma)`: the mask to use at this sigma instead
    (a model's denoise-mask function, e.g. Differential Diffusion)."""
    def masks(sigma: Tensor) -> tuple[Tensor, Tensor]:
        m = mask if mask_at is None else mask_at(sigma)
        return m, 1.0 - m

    def paste(x: Tensor, sigma: Tensor, m: Tensor, keep: Tensor) -> Tensor:
        s = sigma.reshape([sigma.shape[0]] + [1] * (noise.ndim - 1))
        return x * m + ms.noise_scaling(s, noise, latent) * keep

    if is_guided:
        def guided(x: Tensor, sigma: Tensor):
            m, keep = masks(sigma)
            x0, uncond = denoise(paste(x, sigma, m, keep), sigma)
            return x0 * m + latent * keep, uncond * m + latent * keep
        return guided

    def plain(x: Tensor, sigma: Tensor) -> Tensor:
        m, keep = masks(sigma)
        return denoise(paste(x, sigma, m, keep), sigma) * m + latent * keep
    return plain


def sample(model_fn: ModelFn, ms: ModelSampling, latent: Tensor, positive: Sequence[Cond], negative: Sequence[Cond],
           *, seed: int, steps: int, cfg: float, sampler_name: str, scheduler: str, denoise: float = 1.0,
           add_noise: bool = True, start_step: int | None = None, last_step: int | None = None,
           return_with_leftover_noise: bool = False, noise_mask: Tensor | None = None,
           batch_index: Sequence[int] | None = None, latent_format: LatentFormat | None = None,
           sigmas: Tensor | None = None, on_progress: ProgressHook | None = None, fits: FitsFn | None = None,
           cfg_function: CfgFunction = plain_cfg, post_cfg: Sequence[PostCfgFunction] = (),
           pre_cfg: Sequence = (), sampler_options: dict | None = None, device: torch.device | str | None = None,
           make_denoiser: DenoiserFactory | None = None, noise: Tensor | None = None,
           mask_function: MaskFunction | None = None,
           wrap_denoiser: Callable[[Any], Any] | None = None,
           on_sigmas: Callable[[Tensor], None] | None = None) -> Tensor:
    """KSampler (defaults) or KSamplerAdvanced (add_noise, start/last step, leftover noise) on a latent.

    Noise is drawn on the CPU; with `device` the sampling runs there and the result comes back to the
    latent's device. `make_denoiser` replaces the CFG denoiser (positive, negative and cfg are then
    unused), e.g. for ComfyUI's DualCFGGuider. `noise`: the initial noise to use instead of the seeded
    draw (ComfyUI's `comfy.sample.sample` takes it as an argument); the seed still drives the samplers'
    own noise. `wrap_denoiser`: puts something in front of the guided denoiser (a step cache,
    diffusion.step_cache), inside the inpainting mask's re-noising. `on_sigmas(sigmas)`: told the sigmas the
    sampler will walk before it starts (ComfyUI's sample_sigmas; hook keyframes read their largest)."""
    get_sampler(sampler_name)   # fail early, with a did-you-mean hint
    if latent_format is not None and latent.shape[1] != latent_format.latent_channels \
            and torch.count_nonzero(latent) == 0:
        latent = torch.zeros([latent.shape[0], latent_format.latent_channels, *latent.shape[2:]], dtype=latent.dtype)

    if noise is None or not add_noise:
        noise = prepare_noise(latent, seed, batch_index) if add_noise else zero_noise(latent)
    if sigmas is None:
        sigmas = compute_sigmas(ms, scheduler, steps, sampler_name, denoise)
    sliced = slice_sigmas(sigmas, start_step, last_step, is_full_denoise_forced=not return_with_leftover_noise)
    if sliced is None or len(sliced) == 0:
        return latent
    sigmas = sliced.to(torch.float32)
    if on_sigmas is not None:
        on_sigmas(sigmas)

    out_device = latent.device
    latent = latent.float().to(device) if device is not None else latent.float()
    model_latent = latent
    if latent_format is not None and torch.count_nonzero(latent) > 0:
        model_latent = latent_format.process_in(latent)
    noise = noise.float().to(latent.device)
    sigmas = sigmas.to(latent.device)
    x = ms.noise_scaling(sigmas[0], noise, model_latent, is_max_denoise(ms, sigmas))

    if make_denoiser is None:
        guider = CFGDenoiser(model_fn, ms, positive, negative, cfg, latent.shape, fits=fits,
                             cfg_function=cfg_function, post_cfg=post_cfg, pre_cfg=pre_cfg)
    else:
        guider = make_denoiser(model_fn, ms, latent.shape, fits=fits, cfg_function=cfg_function, post_cfg=post_cfg)
    if wrap_denoiser is not None:
        guider = wrap_denoiser(guider)
    is_guided = sampler_name in CFG_PP_SAMPLERS
    denoiser = guider.with_uncond if is_guided else guider
    if noise_mask is not None:
        mask = prepare_mask(noise_mask, latent.shape).to(x)
        known_noise = inpaint_noise(noise.shape, seed).to(x) if sampler_name == "ddim" else noise
        mask_at = None if mask_function is None else (lambda sigma: mask_function(sigma, mask, sigmas))
        denoiser = _inpainting(denoiser, ms, model_latent, known_noise, mask, is_guided, mask_at)

    if sampler_name in BROWNIAN_SAMPLERS:
        noise_sampler = BrownianTreeNoiseSampler(x, sigmas[sigmas > 0].min(), sigmas.max(), seed=seed,
                                                 is_on_cpu=not sampler_name.endswith("_gpu"))
    else:
        noise_sampler = gaussian_noise_sampler(x, seed)
    sampler_sigmas = sigmas
    if sampler_name in HALF_LOG_SNR_SAMPLERS and ms.is_rectified_flow and len(sigmas) > 1 and sigmas[0] >= 1:
        # lambda = log((1 - sigma) / sigma) is infinite at sigma = 1 (ComfyUI offset_first_sigma_for_snr)
        sampler_sigmas = sigmas.clone()
        sampler_sigmas[0] = ms.percent_to_sigma(1e-4)

    total = len(sigmas) - 1

    def on_step(step: Step) -> None:
        if on_progress is not None:
            on_progress(min(step.index + 1, total), total, step)

    samples = run_sampler(sampler_name, denoiser, x, sampler_sigmas, on_step=on_step, noise_sampler=noise_sampler,
                          is_rectified_flow=ms.is_rectified_flow, model_sampling=ms, seed=seed,
                          **(sampler_options or {}))
    samples = ms.inverse_noise_scaling(sigmas[-1], samples)
    if latent_format is not None:
        samples = latent_format.process_out(samples)
    return samples.to(out_device)
