"""FLUX.1 nodes with ComfyUI's specs (comfy_extras/nodes_flux.py, nodes_model_advanced.py,
nodes_edit_model.py); the work is in diffusion.flux."""
from __future__ import annotations

from diffusion import flux
from nodes.spec import Combo, Float, Input, Int, String, node, optional

MAX_RESOLUTION = 16384


@node("CLIPTextEncodeFlux", category="advanced/conditioning/flux")
class CLIPTextEncodeFlux:
    clip = Input("CLIP")
    clip_l = String(multiline=True, dynamic_prompts=True)
    t5xxl = String(multiline=True, dynamic_prompts=True)
    guidance = Float(3.5, min=0.0, max=100.0, step=0.1)
    RETURNS = ("CONDITIONING",)

    def run(self, clip, clip_l: str, t5xxl: str, guidance: float) -> tuple:
        return (flux.encode(clip, clip_l, t5xxl, guidance),)


@node("FluxGuidance", category="advanced/conditioning/flux")
class FluxGuidance:
    conditioning = Input("CONDITIONING")
    guidance = Float(3.5, min=0.0, max=100.0, step=0.1)
    RETURNS = ("CONDITIONING",)

    def run(self, conditioning, guidance: float) -> tuple:
        return (flux.with_guidance(conditioning, guidance),)


@node("FluxDisableGuidance", category="advanced/conditioning/flux")
class FluxDisableGuidance:
    conditioning = Input("CONDITIONING")
    RETURNS = ("CONDITIONING",)

    def run(self, conditioning) -> tuple:
        return (flux.with_guidance(conditioning, None),)


@node("ModelSamplingFlux", category="advanced/model")
class ModelSamplingFlux:
    model = Input("MODEL")
    max_shift = Float(1.15, min=0.0, max=100.0, step=0.01)
    base_shift = Float(0.5, min=0.0, max=100.0, step=0.01)
    width = Int(1024, min=16, max=MAX_RESOLUTION, step=8)
    height = Int(1024, min=16, max=MAX_RESOLUTION, step=8)
    RETURNS = ("MODEL",)

    def run(self, model, max_shift: float, base_shift: float, width: int, height: int) -> tuple:
        return (flux.with_flux_sampling(model, max_shift, base_shift, width, height),)


@node("ReferenceLatent", category="advanced/conditioning/edit_models",
      description="This node sets the guiding latent for an edit model. If the model supports it you can chain "
                  "multiple to set multiple reference images.")
class ReferenceLatent:
    conditioning = Input("CONDITIONING")
    latent = optional(Input("LATENT"))
    RETURNS = ("CONDITIONING",)

    def run(self, conditioning, latent=None) -> tuple:
        return (flux.with_reference_latent(conditioning, latent),)


@node("FluxKontextImageScale", category="advanced/conditioning/flux",
      description="This node resizes the image to one that is more optimal for flux kontext.")
class FluxKontextImageScale:
    image = Input("IMAGE")
    RETURNS = ("IMAGE",)

    def run(self, image) -> tuple:
        return (flux.kontext_image_scale(image),)


@node("FluxKontextMultiReferenceLatentMethod", category="advanced/conditioning/flux", experimental=True)
class FluxKontextMultiReferenceLatentMethod:
    conditioning = Input("CONDITIONING")
    reference_latents_method = Combo(["offset", "index", "uxo/uno"])
    RETURNS = ("CONDITIONING",)

    def run(self, conditioning, reference_latents_method: str) -> tuple:
        return (flux.with_reference_method(conditioning, reference_latents_method),)
