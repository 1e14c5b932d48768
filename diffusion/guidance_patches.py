"""MODEL (and CLIP) clones with guidance and model patches: the CFG variants of sampling.guidance_variants,
Perturbed-Attention Guidance, the continuous / AuraFlow model samplings, attention weight multipliers and
Kohya's Deep Shrink. Each function returns a new clone; the input handle is never changed.

    patched = with_post_cfg(model, guidance_variants.cfg_zero_star)
    patched = with_perturbed_attention_guidance(model, scale=3.0)
"""
from __future__ import annotations

from collections.abc import Callable

from torch import Tensor

from imaging.resize import upscale
from sampling import guidance_variants
from sampling.model_sampling import FlowSampling
from sampling.model_sampling_continuous import ContinuousVSampling, continuous_edm

from . import patch_api
from .objects import DiffusionModel, TextEncoders

UPSCALE_METHODS = ["bicubic", "nearest-exact", "bilinear", "area", "bislerp"]


def with_post_cfg(model: DiffusionModel, fn) -> DiffusionModel:
    twin = model.clone()
    twin.add_post_cfg_function(fn)
    return twin


def with_pre_cfg(model: DiffusionModel, fn) -> DiffusionModel:
    twin = model.clone()
    twin.add_pre_cfg_function(fn)
    return twin


def with_apg(model: DiffusionModel, eta: float, norm_threshold: float, momentum: float) -> DiffusionModel:
    """APG: a fresh running average per clone (the momentum state restarts when sigma rises)."""
    return with_pre_cfg(model, guidance_variants.AdaptiveProjectedGuidance(eta, norm_threshold, momentum))


# --- Perturbed-Attention Guidance -------------------------------------------------------------------------

def _identity_attention(q: Tensor, k: Tensor, v: Tensor, extra_options: dict) -> Tensor:
    """PAG's perturbation: the self-attention map replaced by the identity, so the output is v."""
    return v


def perturbed_attention_post_cfg(scale: float, block: tuple[str, int] = ("middle", 0)) -> Callable[[dict], Tensor]:
    """PAG (Ahn et al. 2024, "Self-rectifying diffusion sampling with perturbed-attention guidance",
    arXiv:2403.17377, eq. 9-10) after CFG: x0 = x0_cfg + scale (c - c_perturbed), c_perturbed the
    conditional x0 with the self-attention of `block` replaced by the identity. A ComfyUI-shaped post-CFG
    function: the extra pass goes through args["calc_cond_batch"] with the sampled model's options."""
    def post(args: dict) -> Tensor:
        if scale == 0:
            return args["denoised"]
        options = {patch_api.TRANSFORMER_OPTIONS: (args["model_options"] or {}).get(patch_api.TRANSFORMER_OPTIONS)}
        patch_api.with_patch_replace(options, _identity_attention, "attn1", block[0], block[1])
        (perturbed,) = args["calc_cond_batch"]([args["cond"]], args["input"], args["sigma"], options)
        return args["denoised"] + (args["cond_denoised"] - perturbed) * scale
    return post


def with_perturbed_attention_guidance(model: DiffusionModel, scale: float) -> DiffusionModel:
    twin = model.clone()
    twin.set_model_sampler_post_cfg_function(perturbed_attention_post_cfg(scale))
    return twin


# --- model samplings --------------------------------------------------------------------------------------

def with_continuous_edm_sampling(model: DiffusionModel, sampling: str, sigma_max: float,
                                 sigma_min: float) -> DiffusionModel:
    ms, latent_format = continuous_edm(sampling, sigma_min, sigma_max)
    twin = model.with_model_sampling(ms)
    if latent_format is not None:
        twin.options["latent_format"] = latent_format
    return twin


def with_continuous_v_sampling(model: DiffusionModel, sigma_max: float, sigma_min: float) -> DiffusionModel:
    from sampling.model_sampling import VPrediction
    return model.with_model_sampling(ContinuousVSampling(VPrediction(1.0), sigma_min=sigma_min, sigma_max=sigma_max))


def with_aura_flow_sampling(model: DiffusionModel, shift: float) -> DiffusionModel:
    """ModelSamplingAuraFlow: rectified flow with a timestep shift and the model's timestep = sigma
    (multiplier 1, where SD3 takes sigma * 1000)."""
    return model.with_model_sampling(FlowSampling(shift=shift, multiplier=1.0))


# --- attention weight multipliers -------------------------------------------------------------------------

def _scaled(factor: float):
    def scale(weight: Tensor) -> Tensor:
        return weight * factor
    return scale


def _multiply_weights(handle, suffixes: dict[str, float], source: str):
    """A clone whose weights ending in each suffix (+ ".weight" / ".bias") are multiplied by its factor:
    copy-on-write weight patches, as LoRA's."""
    twin = handle.clone()
    keys = list(handle.shared.weights.slots)
    for suffix, factor in suffixes.items():
        if factor == 1.0:
            continue
        chosen = [k for k in keys if k.endswith(f"{suffix}.weight") or k.endswith(f"{suffix}.bias")]
        twin.add_patches({k: _scaled(factor) for k in chosen}, 1.0, source)
    return twin


def with_unet_attention_multiplied(model: DiffusionModel, attention: str, q: float, k: float, v: float,
                                   out: float) -> DiffusionModel:
    """UNetSelfAttentionMultiply (attention "attn1") / UNetCrossAttentionMultiply ("attn2")."""
    return _multiply_weights(model, {f"{attention}.to_q": q, f"{attention}.to_k": k, f"{attention}.to_v": v,
                                     f"{attention}.to_out.0": out}, f"{attention} multiply")


def temporal_attention_factors(keys, self_structural: float, self_temporal: float, cross_structural: float,
                               cross_temporal: float) -> dict[str, float]:
    """UNetTemporalAttentionMultiply's choice of weights: the output projection (".to_out.0" weight and
    bias) of each self- (attn1) and cross-attention (attn2), temporal when the key lies in a video UNet's
    ".time_stack." (SVD's temporal transformer blocks), structural otherwise. Factors of 1 are left out."""
    found = {}
    for key in keys:
        for attention, structural, temporal in (("attn1", self_structural, self_temporal),
                                                ("attn2", cross_structural, cross_temporal)):
            if key.endswith((f"{attention}.to_out.0.weight", f"{attention}.to_out.0.bias")):
                factor = temporal if ".time_stack." in key else structural
                if factor != 1.0:
                    found[key] = factor
    return found


def with_temporal_attention_multiplied(model: DiffusionModel, self_structural: float, self_temporal: float,
                                       cross_structural: float, cross_temporal: float) -> DiffusionModel:
    """UNetTemporalAttentionMultiply: copy-on-write scaling of the weights temporal_attention_factors picks."""
    twin = model.clone()
    chosen = temporal_attention_factors(model.shared.weights.slots, self_structural, self_temporal,
                                        cross_structural, cross_temporal)
    for key, factor in chosen.items():
        twin.add_patches({key: _scaled(factor)}, 1.0, "temporal attention multiply")
    return twin


def with_video_cfg(model: DiffusionModel, shape: str, min_cfg: float) -> DiffusionModel:
    """VideoLinearCFGGuidance ("linear") / VideoTriangleCFGGuidance ("triangle") as the clone's CFG function."""
    fn = {"linear": guidance_variants.video_linear_cfg, "triangle": guidance_variants.video_triangle_cfg}[shape]
    return with_cfg_function(model, fn(min_cfg))


def with_clip_attention_multiplied(clip: TextEncoders, q: float, k: float, v: float, out: float) -> TextEncoders:
    """CLIPAttentionMultiply: every text tower's self-attention projections."""
    return _multiply_weights(clip, {"self_attn.q_proj": q, "self_attn.k_proj": k, "self_attn.v_proj": v,
                                    "self_attn.out_proj": out}, "clip attention multiply")


# --- Kohya Deep Shrink ------------------------------------------------------------------------------------

def with_downscale(model: DiffusionModel, block_number: int, downscale_factor: float, start_percent: float,
                   end_percent: float, is_after_skip: bool, downscale_method: str,
                   upscale_method: str) -> DiffusionModel:
    """PatchModelAddDownscale (Kohya's "Deep Shrink", sd-scripts' hires fix): while sigma is inside
    [sigma(end_percent), sigma(start_percent)] the features after input block `block_number` are resized
    by 1 / downscale_factor; an output block whose features no longer match its skip resizes them back."""
    for method in (downscale_method, upscale_method):
        if method not in UPSCALE_METHODS:
            raise ValueError(f"resize method {method!r} is not one of {', '.join(UPSCALE_METHODS)}")
    ms = model.model_sampling
    sigma_start, sigma_end = ms.percent_to_sigma(start_percent), ms.percent_to_sigma(end_percent)

    def shrink(h: Tensor, transformer_options: dict) -> Tensor:
        if transformer_options["block"][1] != block_number:
            return h
        sigma = float(transformer_options["sigmas"][0])
        if sigma_end <= sigma <= sigma_start:
            h = upscale(h, round(h.shape[-1] / downscale_factor), round(h.shape[-2] / downscale_factor),
                        downscale_method)
        return h

    def grow(h: Tensor, skip: Tensor, transformer_options: dict) -> tuple[Tensor, Tensor]:
        if h.shape[2] != skip.shape[2]:
            h = upscale(h, skip.shape[-1], skip.shape[-2], upscale_method)
        return h, skip

    twin = model.clone()
    if is_after_skip:
        twin.set_model_input_block_patch_after_skip(shrink)
    else:
        twin.set_model_input_block_patch(shrink)
    twin.set_model_output_block_patch(grow)
    return twin


def with_perp_neg(model: DiffusionModel, empty_conditioning: list, neg_scale: float) -> DiffusionModel:
    """PerpNeg (the model-patch form, deprecated in ComfyUI for PerpNegGuider)."""
    from sampling.guidance import conds_from_conditioning
    from sampling.perp_neg import perp_neg_cfg
    from .sdxl import with_adm
    empty = conds_from_conditioning(with_adm(model.options.get("model_config"), empty_conditioning, "negative"))
    twin = model.clone()
    twin.set_cfg_function(perp_neg_cfg(empty, model.model_sampling, neg_scale))
    return twin


def with_differential_diffusion(model: DiffusionModel, strength: float = 1.0) -> DiffusionModel:
    """DifferentialDiffusion: the noise mask thresholded by sampling progress at each step
    (sampling.differential_diffusion); only acts when the latent has a noise mask."""
    from sampling.differential_diffusion import differential_mask
    twin = model.clone()
    twin.options["denoise_mask_function"] = differential_mask(model.model_sampling, strength)
    return twin


# --- FreSca and RenormCFG ---------------------------------------------------------------------------------

def with_fresca(model: DiffusionModel, scale_low: float, scale_high: float, freq_cutoff: int) -> DiffusionModel:
    return with_pre_cfg(model, guidance_variants.fresca(scale_low, scale_high, freq_cutoff))


def with_cfg_function(model: DiffusionModel, fn) -> DiffusionModel:
    twin = model.clone()
    twin.set_cfg_function(fn)
    return twin


def with_renorm_cfg(model: DiffusionModel, cfg_trunc: float, renorm: float) -> DiffusionModel:
    return with_cfg_function(model, guidance_variants.renorm_cfg(cfg_trunc, renorm))


def with_latent_operation_cfg(model: DiffusionModel, operation: Callable[..., Tensor]) -> DiffusionModel:
    """LatentApplyOperationCFG: before CFG, the guidance direction cond_x0 - uncond_x0 goes through the
    LATENT_OPERATION (LatentOperationSharpen, LatentOperationTonemapReinhard, ...) and cond_x0 becomes
    uncond_x0 + operation(cond_x0 - uncond_x0), as in ComfyUI's nodes_latent.py (an unconditioned pass,
    which evaluates to zeros, gives operation(cond_x0))."""

    def pre_cfg(args) -> tuple[Tensor, Tensor]:
        if args.uncond_x0 is None:
            return operation(latent=args.cond_x0), args.uncond_x0
        return operation(latent=args.cond_x0 - args.uncond_x0) + args.uncond_x0, args.uncond_x0

    return with_pre_cfg(model, pre_cfg)
