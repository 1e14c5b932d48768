"""Guidance and model-patch nodes (ComfyUI's specs): CFG variants (CFGZeroStar, CFGNorm, APG, TCFG,
Epsilon Scaling, Mahiro, PerpNeg), Perturbed-Attention Guidance, continuous / AuraFlow model samplings,
attention multipliers and Kohya's Deep Shrink. One call each into diffusion.guidance_patches."""
from __future__ import annotations

from diffusion import guidance_patches as gp
from diffusion import sag
from nodes.spec import Boolean, Combo, Float, Input, Int, Output, node, optional
from sampling import guidance_variants as gv
from sampling.model_sampling_continuous import CONTINUOUS_EDM_TYPES

PATCHED = Output("MODEL", "patched_model")


@node("CFGZeroStar", category="advanced/guidance", function="execute")
class CFGZeroStar:
    model = Input("MODEL")
    RETURNS = (PATCHED,)

    def run(self, model) -> tuple:
        return (gp.with_post_cfg(model, gv.cfg_zero_star),)


@node("CFGNorm", category="advanced/guidance", experimental=True, function="execute")
class CFGNorm:
    model = Input("MODEL")
    strength = Float(1.0, min=0.0, max=100.0, step=0.01)
    # newer ComfyUI (the Lens / LongCat templates save it): rescale the CFG combination itself, unclamped
    pre_cfg = optional(Boolean(False))
    RETURNS = (PATCHED,)

    def run(self, model, strength: float, pre_cfg: bool = False) -> tuple:
        if pre_cfg:
            return (gp.with_cfg_function(model, gv.cfg_norm_pre(strength)),)
        return (gp.with_post_cfg(model, gv.cfg_norm(strength)),)


@node("APG", category="sampling/custom_sampling", display_name="Adaptive Projected Guidance", function="execute")
class APG:
    model = Input("MODEL")
    eta = Float(1.0, min=-10.0, max=10.0, step=0.01, tooltip="Scale of the guidance part parallel to the "
                                                                 "conditional prediction.")
    norm_threshold = Float(5.0, min=0.0, max=50.0, step=0.1, tooltip="Cap on the guidance norm; 0 disables it.")
    momentum = Float(0.0, min=-5.0, max=1.0, step=0.01, tooltip="Running average of the guidance; 0 disables it.")
    RETURNS = ("MODEL",)

    def run(self, model, eta: float, norm_threshold: float, momentum: float) -> tuple:
        return (gp.with_apg(model, eta, norm_threshold, momentum),)


@node("TCFG", category="advanced/guidance", display_name="Tangential Damping CFG", function="execute")
class TCFG:
    model = Input("MODEL")
    RETURNS = (PATCHED,)

    def run(self, model) -> tuple:
        return (gp.with_pre_cfg(model, gv.tangential_damping),)


@node("Epsilon Scaling", category="model_patches/unet", function="execute")
class EpsilonScaling:
    model = Input("MODEL")
    scaling_factor = Float(1.005, min=0.5, max=1.5, step=0.001, display="number")
    RETURNS = ("MODEL",)

    def run(self, model, scaling_factor: float) -> tuple:
        return (gp.with_post_cfg(model, gv.epsilon_scaling(scaling_factor)),)


@node("Mahiro", category="_for_testing", experimental=True, function="execute",
      display_name="Mahiro is so cute that she deserves a better guidance function!! (\u3002\u30fb\u03c9\u30fb\u3002)")
class Mahiro:
    model = Input("MODEL")
    RETURNS = (PATCHED,)

    def run(self, model) -> tuple:
        return (gp.with_post_cfg(model, gv.mahiro),)


@node("PerpNeg", category="_for_testing", display_name="Perp-Neg (DEPRECATED by PerpNegGuider)",
      experimental=True, deprecated=True, function="execute")
class PerpNeg:
    model = Input("MODEL")
    empty_conditioning = Input("CONDITIONING")
    neg_scale = Float(1.0, min=0.0, max=100.0, step=0.01)
    RETURNS = ("MODEL",)

    def run(self, model, empty_conditioning: list, neg_scale: float) -> tuple:
        return (gp.with_perp_neg(model, empty_conditioning, neg_scale),)


@node("PerturbedAttentionGuidance", category="model_patches/unet", function="execute")
class PerturbedAttentionGuidance:
    model = Input("MODEL")
    scale = Float(3.0, min=0.0, max=100.0, step=0.01, round=0.01)
    RETURNS = ("MODEL",)

    def run(self, model, scale: float) -> tuple:
        return (gp.with_perturbed_attention_guidance(model, scale),)


# --- model samplings ------------------------------------------------------------------------------------

@node("ModelSamplingContinuousEDM", category="advanced/model", function="patch")
class ModelSamplingContinuousEDM:
    model = Input("MODEL")
    sampling = Combo(CONTINUOUS_EDM_TYPES)
    sigma_max = Float(120.0, min=0.0, max=1000.0, step=0.001, round=False)
    sigma_min = Float(0.002, min=0.0, max=1000.0, step=0.001, round=False)
    RETURNS = ("MODEL",)

    def run(self, model, sampling: str, sigma_max: float, sigma_min: float) -> tuple:
        return (gp.with_continuous_edm_sampling(model, sampling, sigma_max, sigma_min),)


@node("ModelSamplingContinuousV", category="advanced/model", function="patch")
class ModelSamplingContinuousV:
    model = Input("MODEL")
    sampling = Combo(["v_prediction"])
    sigma_max = Float(500.0, min=0.0, max=1000.0, step=0.001, round=False)
    sigma_min = Float(0.03, min=0.0, max=1000.0, step=0.001, round=False)
    RETURNS = ("MODEL",)

    def run(self, model, sampling: str, sigma_max: float, sigma_min: float) -> tuple:
        return (gp.with_continuous_v_sampling(model, sigma_max, sigma_min),)


@node("ModelSamplingAuraFlow", category="advanced/model", function="patch_aura")
class ModelSamplingAuraFlow:
    model = Input("MODEL")
    shift = Float(1.73, min=0.0, max=100.0, step=0.01)
    RETURNS = ("MODEL",)

    def run(self, model, shift: float) -> tuple:
        return (gp.with_aura_flow_sampling(model, shift),)


# --- weight multipliers and Deep Shrink ----------------------------------------------------------------

def _factor() -> Float:
    return Float(1.0, min=0.0, max=10.0, step=0.01)


@node("UNetSelfAttentionMultiply", category="_for_testing/attention_experiments", experimental=True,
      function="execute")
class UNetSelfAttentionMultiply:
    model = Input("MODEL")
    q, k, v, out = _factor(), _factor(), _factor(), _factor()
    RETURNS = ("MODEL",)

    def run(self, model, q: float, k: float, v: float, out: float) -> tuple:
        return (gp.with_unet_attention_multiplied(model, "attn1", q, k, v, out),)


@node("UNetCrossAttentionMultiply", category="_for_testing/attention_experiments", experimental=True,
      function="execute")
class UNetCrossAttentionMultiply:
    model = Input("MODEL")
    q, k, v, out = _factor(), _factor(), _factor(), _factor()
    RETURNS = ("MODEL",)

    def run(self, model, q: float, k: float, v: float, out: float) -> tuple:
        return (gp.with_unet_attention_multiplied(model, "attn2", q, k, v, out),)


@node("CLIPAttentionMultiply", category="_for_testing/attention_experiments", experimental=True,
      function="execute")
class CLIPAttentionMultiply:
    clip = Input("CLIP")
    q, k, v, out = _factor(), _factor(), _factor(), _factor()
    RETURNS = ("CLIP",)

    def run(self, clip, q: float, k: float, v: float, out: float) -> tuple:
        return (gp.with_clip_attention_multiplied(clip, q, k, v, out),)


@node("PatchModelAddDownscale", category="model_patches/unet", display_name="PatchModelAddDownscale (Kohya Deep Shrink)",
      function="execute")
class PatchModelAddDownscale:
    model = Input("MODEL")
    block_number = Int(3, min=1, max=32, step=1)
    downscale_factor = Float(2.0, min=0.1, max=9.0, step=0.001)
    start_percent = Float(0.0, min=0.0, max=1.0, step=0.001)
    end_percent = Float(0.35, min=0.0, max=1.0, step=0.001)
    downscale_after_skip = Boolean(True)
    downscale_method = Combo(gp.UPSCALE_METHODS)
    upscale_method = Combo(gp.UPSCALE_METHODS)
    RETURNS = ("MODEL",)

    def run(self, model, block_number: int, downscale_factor: float, start_percent: float, end_percent: float,
            downscale_after_skip: bool, downscale_method: str, upscale_method: str) -> tuple:
        return (gp.with_downscale(model, block_number, downscale_factor, start_percent, end_percent,
                                  downscale_after_skip, downscale_method, upscale_method),)


@node("DifferentialDiffusion", category="_for_testing", display_name="Differential Diffusion", experimental=True,
      function="execute")
class DifferentialDiffusion:
    model = Input("MODEL")
    strength = optional(Float(1.0, min=0.0, max=1.0, step=0.01))
    RETURNS = ("MODEL",)

    def run(self, model, strength: float = 1.0) -> tuple:
        return (gp.with_differential_diffusion(model, strength),)


@node("SelfAttentionGuidance", category="_for_testing", display_name="Self-Attention Guidance", experimental=True,
      function="execute")
class SelfAttentionGuidance:
    model = Input("MODEL")
    scale = Float(0.5, min=-2.0, max=5.0, step=0.01)
    blur_sigma = Float(2.0, min=0.0, max=10.0, step=0.1)
    RETURNS = ("MODEL",)

    def run(self, model, scale: float, blur_sigma: float) -> tuple:
        return (sag.with_self_attention_guidance(model, scale, blur_sigma),)
