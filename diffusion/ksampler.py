"""Sampling with a MODEL: load it with a working-memory estimate, build the raw model function, run
sampling.sample, and report progress, previews and interruption through the executor's node context.

    latent = ksample(model, latent, positive, negative, seed=..., steps=20, cfg=8.0,
                     sampler_name="euler", scheduler="normal", denoise=1.0)

KSampler, KSamplerAdvanced, SamplerCustom and SamplerCustomAdvanced all end in `run_sampling`; the
custom-sampler objects (SAMPLER, SIGMAS, NOISE, GUIDER) are the small dataclasses at the bottom.

Out of memory is retried through model_management's sampling fall-backs (sub-quadratic attention,
CFG batch split, partial load, streaming); the CFG pair is batched into one forward unless the
estimate says the batch does not fit on the device. With `--compile-unet` the UNet runs through
torch.compile where it can (diffusion.compile.sampling_forward); on the CPU an eager UNet runs its
convolutions on weights packed once per run (diffusion.prepacking).
"""
from __future__ import annotations

import contextvars
import functools
import io
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from execution.protocol import Preview, current_context
from imaging.resize import upscale
from model_management import SAMPLING_FALLBACKS, ModelPart, estimate_working_memory, with_oom_fallbacks
from model_management.oom import ATTENTION_BACKEND, IS_CFG_SPLIT, VRAM_MODE
from models import unet_patches
from models.attention import DEFAULT_ATTENTION, attention_backend_name, set_attention_backend
from sampling import sample as sampling_driver
from sampling.core import Step
from sampling.guidance import DualCFGDenoiser, conds_from_conditioning
from sampling.schedules import calculate_sigmas

from models.compute_cast import computing_in

from . import controlnet, gligen, deep_cache, hook_sampling, patch_api, previews, sdxl, step_cache
from .compile import UNetForward, sampling_forward
from .objects import DiffusionModel

PREVIEW_MAX_PX = 512

# keyword arguments added to every model call made while set (Skip Layer Guidance: {"skip_blocks": ...})
MODEL_CALL_OPTIONS: contextvars.ContextVar[dict] = contextvars.ContextVar("plexus_model_call_options", default={})
PREVIEW_JPEG_QUALITY = 85


# --- the raw model function --------------------------------------------------------------------------

def _inpaint_concat(model: DiffusionModel, x: Tensor, inputs: dict) -> Tensor:
    """[mask (1), masked-image latent (C)] for an inpainting UNet (in = 2C + 1 channels): from the
    conditioning's concat_mask / concat_latent_image, else a full mask and a zero latent."""
    b, c, h, w = x.shape
    mask = inputs.get("concat_mask")
    if mask is None:
        mask = x.new_ones(b, 1, h, w)
    else:
        mask = F.interpolate(mask.reshape(-1, 1, *mask.shape[-2:]).to(x), size=(h, w), mode="bilinear").round()
        mask = mask.repeat(math.ceil(b / mask.shape[0]), 1, 1, 1)[:b]
    image = inputs.get("concat_latent_image")
    if image is None:
        image = x.new_zeros(b, c, h, w)
    else:
        image = model.latent_format.process_in(image.to(x))
        if image.shape[-2:] != (h, w):
            image = F.interpolate(image, size=(h, w), mode="bilinear")
        image = image.repeat(math.ceil(b / image.shape[0]), 1, 1, 1)[:b]
    return torch.cat([mask, image], dim=1)                                  # [B, 1 + C, h, w]


def _ip2p_concat(x: Tensor, inputs: dict) -> Tensor:
    """The source image's latent for an InstructPix2Pix UNet (in = 2C channels): the conditioning's
    concat_latent_image as the VAE gave it (not scaled into the model's space, as ComfyUI's SD1.5 IP2P),
    resized (bilinear, centre crop) to x and repeated to its batch; zeros without one."""
    image = inputs.get("concat_latent_image")
    if image is None:
        return torch.zeros_like(x)
    image = image.to(x)
    if image.shape[1:] != x.shape[1:]:
        image = upscale(image, x.shape[-1], x.shape[-2], "bilinear", "center")
    return image.repeat(math.ceil(x.shape[0] / image.shape[0]), 1, 1, 1)[:x.shape[0]]


def _conds(model: DiffusionModel, conditioning: list, prompt_type: str,
           latent_shape: tuple[int, ...] | None = None, seed: int = 0, noise_mask: Tensor | None = None) -> list:
    """CONDITIONING -> sampling Conds, with SDXL's ADM vector `y` added where the model takes one (its default
    size from `latent_shape`); unCLIP image embeddings become `y` / SDXL's pooled vector (noise from `seed`)."""
    from . import flux, unclip          # FLUX: the guidance value (and Fill's fallback mask) as model inputs
    config = model.options.get("model_config")
    conditioning = flux.model_inputs(config, conditioning, noise_mask, latent_shape)
    conditioning = unclip.with_adm(config, conditioning, seed=seed)
    return conds_from_conditioning(sdxl.with_adm(config, conditioning, prompt_type, latent_shape))


def model_function(model: DiffusionModel, unet: UNetForward | None = None,
                   cache: step_cache.StepCacheRun | None = None,
                   weights: hook_sampling.SamplingWeights | None = None) -> Callable[[Tensor, Tensor, dict], Tensor]:
    """sampling.guidance's ModelFn for `model`: (scaled x, timestep, inputs) -> raw prediction.
    `unet`: what computes the forward (default the module itself; its compiled forward with --compile-unet).
    `cache`: a step cache's run state (EasyCache sits around the diffusion model's call).
    `weights`: the run's hook-aware weights (diffusion.hook_sampling), switched to each batch's hook group."""
    unet = unet if unet is not None else model.module

    return _model_function(model, unet, model.options.get(patch_api.TRANSFORMER_OPTIONS) or {}, cache, weights)


def _model_function(model: DiffusionModel, unet, transformer_options: dict,
                    cache: step_cache.StepCacheRun | None = None,
                    weights: hook_sampling.SamplingWeights | None = None):
    """The model function with these patch options (models/unet_patches); `.with_options(other)` gives
    the same function with other options (a guidance pass with a perturbed attention)."""
    from . import flux          # FLUX Fill / Depth / Canny concatenate their own way; Kontext's references
    extra_channels = model.in_channels - model.latent_format.latent_channels
    config = model.options.get("model_config")
    if config is not None and config.family == "flux":
        concat = flux.concat_inputs
    else:   # InstructPix2Pix (extra = C channels): the source image's latent; inpainting: mask + image
        def concat(model: DiffusionModel, x: Tensor, inputs: dict) -> Tensor:
            return _ip2p_concat(x, inputs) if extra_channels == x.shape[1] else _inpaint_concat(model, x, inputs)
    device = model.manager.device
    is_patched = unet_patches.has_patches(transformer_options)
    # conditioning inputs the architecture takes by keyword (MM-DiT: y <- pooled_output; SDXL UNet: y <- y)
    extra_inputs = dict(getattr(model.module, "EXTRA_INPUTS", {}))
    compute_dtype = model.options.get(hook_sampling.COMPUTE_DTYPE_OPTION)      # ModelComputeDtype

    def apply_model(x: Tensor, timestep: Tensor, inputs: dict) -> Tensor:
        if weights is not None:                   # the weights of this batch's hook group (diffusion.hooks)
            weights.activate(inputs.get("hooks"), inputs.get("transformer_options", {}).get("sigmas", timestep))
        if compute_dtype is not None:             # eager, every layer's weights cast to the compute dtype
            with computing_in(model.module, compute_dtype):
                return _call(x, timestep, inputs, getattr(unet, "module", model.module))
        return _call(x, timestep, inputs, unet)

    def _call(x: Tensor, timestep: Tensor, inputs: dict, unet) -> Tensor:
        x_in = x
        if extra_channels > 0:
            x_in = torch.cat([x, concat(model, x, inputs)], dim=1)
        extra = {arg: inputs[name].to(device) for arg, name in extra_inputs.items() if name in inputs}
        extra.update(flux.reference_call_inputs(model, inputs, device))
        extra.update(MODEL_CALL_OPTIONS.get())
        args = (x_in.to(device), timestep.to(device), inputs["c_crossattn"].to(device))
        if "y" in inputs and not extra_inputs:                              # SDXL: label_emb input
            args += (inputs["y"].to(device),)
        call = unet
        if "control" in inputs:                   # ControlNet / T2I-Adapter residuals (diffusion.controlnet)
            residuals = controlnet.residuals_for_call(x.to(device), timestep.to(device), inputs, model.model_sampling)
            if residuals is not None:
                extra["control"] = residuals
                call = getattr(unet, "module", unet)            # eager: a compiled forward takes tensors only
        options = {**transformer_options, **inputs.get("transformer_options", {})}
        if "model_patch" in inputs:               # GLIGEN boxes of this batch (diffusion.gligen): a middle patch
            options = gligen.transformer_options_for(inputs["model_patch"], tuple(x.shape), options)
            call = getattr(unet, "module", unet)                # eager: patches are not compiled
        elif not is_patched:
            return call(*args, **extra).to(x.dtype)
        with unet_patches.patched_call(options):
            return call(*args, **extra).to(x.dtype)

    inner = apply_model if cache is None else cache.wrap_model_function(apply_model)
    wrapper = model.options.get("model_function_wrapper")
    fn = inner if wrapper is None else \
        (lambda x, t, inputs: wrapper(inner, {"input": x, "timestep": t, "c": inputs}))
    fn.with_options = lambda options: _model_function(model, unet, options, cache, weights)
    return fn


def working_memory_bytes(model: DiffusionModel, latent_shape: Sequence[int], batch_factor: int = 2,
                         attention: str = DEFAULT_ATTENTION) -> int:
    """Working memory of one forward with the CFG pair batched (`batch_factor` x the latent batch)."""
    shape = (latent_shape[0] * batch_factor, *latent_shape[1:])
    dtype = model.manager.dtype_choices()[ModelPart.DIFFUSION].dtype
    return estimate_working_memory(shape, dtype, attention_backend=attention)


def _fits(model: DiffusionModel, attention: str, is_cfg_split: bool) -> Callable[[tuple[int, ...]], bool]:
    def fits(shape: tuple[int, ...]) -> bool:
        if is_cfg_split:
            return False
        available = model.manager.device_available_bytes()
        return available is None or working_memory_bytes(model, shape, 1, attention) <= available
    return fits


# --- progress and previews ------------------------------------------------------------------------------

def encode_jpeg(rgb: Tensor) -> bytes:
    """[H, W, 3] uint8 -> JPEG bytes (Pillow, through imaging)."""
    from imaging.files import to_pil
    buffer = io.BytesIO()
    to_pil(rgb.float() / 255.0).save(buffer, format="JPEG", quality=PREVIEW_JPEG_QUALITY)
    return buffer.getvalue()


def _previewer(model: DiffusionModel, folders: Sequence) -> previews.Previewer | None:
    """Only inside a node that reports progress (no preview work in library calls and tests), and only
    when the prompt asked for previews (its preview method; ComfyUI's default is none)."""
    context = current_context()
    if context is None:
        return None
    return previews.previewer_for(model, folders, getattr(context, "preview_method", "none"))


class StepReporter:
    """sampling.sample's on_progress: progress, a preview of x0, and the interruption check, per step.
    Outside the executor (no node context) it only records the last x0."""

    def __init__(self, previewer: previews.Previewer | None = None) -> None:
        self.context = current_context()
        self.previewer = previewer
        self.last_x0: Tensor | None = None

    def __call__(self, value: int, maximum: int, step: Step) -> None:
        self.last_x0 = step.x0
        context = self.context
        if context is None:
            return
        context.check_interrupted()
        preview = None
        if self.previewer is not None:
            preview = Preview("JPEG", encode_jpeg(self.previewer(step.x0)), PREVIEW_MAX_PX)
        context.report_progress(value, maximum, preview=preview)


# --- sampling --------------------------------------------------------------------------------------------

def fix_empty_latent_channels(model: DiffusionModel, latent: Tensor) -> Tensor:
    """An all-zero latent with the wrong channel count (e.g. EmptyLatentImage's 4 for a 16-channel
    model) becomes zeros of the model's channel count."""
    channels = model.latent_format.latent_channels
    if latent.shape[1] != channels and torch.count_nonzero(latent) == 0:
        return latent.new_zeros(latent.shape[0], channels, *latent.shape[2:])
    return latent


def run_sampling(model: DiffusionModel, latent: dict, positive, negative, *, seed: int, cfg: float,
                 sampler_name: str, steps: int = 0, scheduler: str = "normal", denoise: float = 1.0,
                 add_noise: bool = True, start_step: int | None = None, last_step: int | None = None,
                 return_with_leftover_noise: bool = False, sigmas: Tensor | None = None,
                 sampler_options: dict | None = None, reporter: StepReporter | None = None,
                 preview_folders: Sequence = (), make_denoiser: sampling_driver.DenoiserFactory | None = None,
                 noise: Tensor | None = None, guider_conditionings: Sequence = ()) -> dict:
    """One sampling run on a LATENT dict; returns a new LATENT dict (other keys kept).
    `preview_folders`: where to look for TAESD decoders (models/vae_approx); `make_denoiser`: see
    sampling.sample (a GUIDER's own denoiser); `noise`: explicit initial noise instead of the seeded draw;
    `guider_conditionings`: that GUIDER's conditionings, whose control and GLIGEN models load with the model."""
    samples = fix_empty_latent_channels(model, latent["samples"])
    reporter = reporter or StepReporter(_previewer(model, preview_folders))
    negative = controlnet.share_with_uncond(positive, negative)
    negative = gligen.share_with_uncond(positive, negative)
    handles = [model, *controlnet.control_models(positive, negative, *guider_conditionings, base_model=model),
               *gligen.gligen_models(positive, negative, *guider_conditionings)]           # one budget
    mask = latent.get("noise_mask")
    positive_conds = _conds(model, positive, "positive", tuple(samples.shape), seed, mask)
    negative_conds = (_conds(model, negative, "negative", tuple(samples.shape), seed, mask)
                      if negative is not None else [])
    shape = tuple(samples.shape)
    manager = model.manager

    configured_attention = attention_backend_name(model.module)
    cfg_function, post_cfg, pre_cfg = patch_api.guidance_functions(model)

    def attempt(options: dict[str, Any]) -> Tensor:
        attention = options.get(ATTENTION_BACKEND, configured_attention)
        manager.load_models_for(handles, working_memory_bytes(model, shape, 2, attention),
                                vram_mode=options.get(VRAM_MODE))
        if ATTENTION_BACKEND in options:
            set_attention_backend(model.module, attention)
        try:
            with torch.inference_mode():
                unet = sampling_forward(model, is_fallback=bool(options))
                cache = step_cache.StepCacheRun.for_model(model)
                weights = hook_sampling.SamplingWeights(
                    model, unet, groups=hook_sampling.hook_groups(positive_conds, negative_conds),
                    load=lambda handle: manager.load_models_for([handle], working_memory_bytes(model, shape, 2, attention),
                                                                vram_mode=options.get(VRAM_MODE)))
                with weights, step_cache.reporting(cache), deep_cache.reused_blocks(model, unet) as unet:
                    return sampling_driver.sample(
                        model_function(model, unet, cache, weights), model.model_sampling, samples, positive_conds,
                        negative_conds,
                        seed=seed, steps=steps, cfg=cfg, sampler_name=sampler_name, scheduler=scheduler,
                        denoise=denoise, add_noise=add_noise, start_step=start_step, last_step=last_step,
                        return_with_leftover_noise=return_with_leftover_noise, noise_mask=latent.get("noise_mask"),
                        batch_index=latent.get("batch_index"), latent_format=model.latent_format, sigmas=sigmas,
                        on_progress=reporter, fits=_fits(model, attention, bool(options.get(IS_CFG_SPLIT))),
                        cfg_function=cfg_function, post_cfg=post_cfg, pre_cfg=pre_cfg, sampler_options=sampler_options,
                        device=manager.device, make_denoiser=make_denoiser, noise=noise,
                        mask_function=model.options.get("denoise_mask_function"),
                        wrap_denoiser=None if cache is None else cache.wrap_denoiser,
                        on_sigmas=lambda walked: (weights.set_sample_sigmas(walked), controlnet.tell_sample_sigmas(
                            walked, positive, negative, *guider_conditionings)))
        finally:
            if ATTENTION_BACKEND in options:
                set_attention_backend(model.module, configured_attention)

    try:
        with manager.graph_needs(handles):
            result = with_oom_fallbacks(attempt, SAMPLING_FALLBACKS, free=manager.free, what="sampling")
    finally:
        controlnet.finish_controls(positive, negative, *guider_conditionings)
    # contiguous: packed convolutions (diffusion.prepacking) hand back channels-last activations
    return {**latent, "samples": result.float().cpu().contiguous()}


def ksample(model: DiffusionModel, latent: dict, positive, negative, *, seed: int, steps: int, cfg: float,
            sampler_name: str, scheduler: str, denoise: float = 1.0, add_noise: bool = True,
            start_step: int | None = None, last_step: int | None = None,
            return_with_leftover_noise: bool = False, preview_folders: Sequence = ()) -> dict:
    """KSampler / KSamplerAdvanced."""
    return run_sampling(model, latent, positive, negative, seed=seed, steps=steps, cfg=cfg,
                        sampler_name=sampler_name, scheduler=scheduler, denoise=denoise, add_noise=add_noise,
                        start_step=start_step, last_step=last_step,
                        return_with_leftover_noise=return_with_leftover_noise, preview_folders=preview_folders)


# --- custom sampling objects (SAMPLER, SIGMAS = a 1-D tensor, NOISE, GUIDER) ------------------------------

@dataclass(frozen=True)
class SamplerChoice:
    """SAMPLER: a sampling.SAMPLERS name plus keyword options for it."""
    name: str
    options: tuple[tuple[str, Any], ...] = ()


@dataclass(frozen=True)
class NoiseSource:
    """NOISE: the seeded initial noise (ComfyUI prepare_noise), or none at all."""
    seed: int = 0
    is_enabled: bool = True


@dataclass(frozen=True)
class Guider:
    """GUIDER: a model with its conditionings and CFG scale (negative None = no guidance)."""
    model: DiffusionModel
    positive: list
    negative: list | None = None
    cfg: float = 1.0


@dataclass(frozen=True)
class DualCFGGuider:
    """GUIDER of ComfyUI's DualCFGGuider: positive (cond1) and middle (cond2) conditionings guided
    against each other with `cfg_conds` and the middle against the negative with `cfg_cond2_negative`
    (formulas in sampling.guidance.DualCFGDenoiser)."""
    model: DiffusionModel
    positive: list
    middle: list
    negative: list
    cfg_conds: float = 8.0
    cfg_cond2_negative: float = 8.0
    is_nested: bool = False

    def conditionings(self) -> tuple[list, ...]:
        return self.positive, self.middle, self.negative

    def make_denoiser(self, model_fn, ms, latent_shape, *, fits, cfg_function, post_cfg, seed: int = 0,
                      noise_mask: Tensor | None = None) -> DualCFGDenoiser:
        """`seed`: the noise seed (unCLIP's noise augmentation is drawn from it, as for every guider)."""
        conds = guider_conds(self.model, self.conditionings(), ("positive", "positive", "negative"),
                             tuple(latent_shape), seed, noise_mask)
        return DualCFGDenoiser(model_fn, ms, *conds, self.cfg_conds, self.cfg_cond2_negative, latent_shape,
                               is_nested=self.is_nested, fits=fits, cfg_function=cfg_function, post_cfg=post_cfg)


def guider_conds(model: DiffusionModel, conditionings: Sequence[list], prompt_types: Sequence[str],
                 latent_shape: tuple[int, ...], seed: int, noise_mask: Tensor | None) -> list[list]:
    """A GUIDER's conditionings (the first the positive, the last the negative) as sampling Conds: the
    positive's ControlNetApply controls and GLIGEN boxes shared with the negative as for KSampler, each
    with the noise seed's unCLIP augmentation and the latent's sizes."""
    conditionings = list(conditionings)
    conditionings[-1] = gligen.share_with_uncond(conditionings[0],
                                                 controlnet.share_with_uncond(conditionings[0], conditionings[-1]))
    return [_conds(model, c, kind, latent_shape, seed, noise_mask) for c, kind in zip(conditionings, prompt_types)]


def sigmas_for(model: DiffusionModel, scheduler: str, steps: int, denoise: float = 1.0) -> Tensor:
    """BasicScheduler: the last steps+1 sigmas of int(steps / denoise) steps; empty at denoise 0."""
    total = steps
    if denoise < 1.0:
        if denoise <= 0.0:
            return torch.zeros(0)
        total = int(steps / denoise)
    return calculate_sigmas(model.model_sampling, scheduler, total).cpu()[-(steps + 1):]


def sample_custom(guider: Guider | DualCFGGuider, noise: NoiseSource, sampler: SamplerChoice, sigmas: Tensor,
                  latent: dict, preview_folders: Sequence = ()) -> tuple[dict, dict]:
    """SamplerCustom(Advanced): (output, denoised_output = the last x0 prediction in VAE space)."""
    model = guider.model
    if len(sigmas) == 0:
        return latent, latent
    reporter = StepReporter(_previewer(model, preview_folders))
    if hasattr(guider, "make_denoiser"):        # DualCFGGuider, custom_sampling.PerpNegGuider
        make_denoiser = functools.partial(guider.make_denoiser, seed=noise.seed, noise_mask=latent.get("noise_mask"))
        guidance = {"positive": [], "negative": None, "cfg": 1.0, "make_denoiser": make_denoiser,
                    "guider_conditionings": getattr(guider, "conditionings", tuple)()}
    else:
        guidance = {"positive": guider.positive, "negative": guider.negative, "cfg": guider.cfg}
    out = run_sampling(model, latent, seed=noise.seed, sampler_name=sampler.name, add_noise=noise.is_enabled,
                       sigmas=sigmas.float(), sampler_options=dict(sampler.options), reporter=reporter, **guidance)
    if reporter.last_x0 is None:
        return out, out
    denoised = model.latent_format.process_out(reporter.last_x0.float()).cpu()
    return out, {**latent, "samples": denoised}


def flip_sigmas(sigmas: Tensor) -> Tensor:
    if len(sigmas) == 0:
        return sigmas
    flipped = sigmas.flip(0).clone()
    if flipped[0] == 0:
        flipped[0] = 0.0001
    return flipped


def split_sigmas(sigmas: Tensor, step: int) -> tuple[Tensor, Tensor]:
    return sigmas[:step + 1], sigmas[step:]
