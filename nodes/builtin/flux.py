"""FLUX.1 nodes with ComfyUI's specs (comfy_extras/nodes_flux.py, nodes_model_advanced.py); the work is
in diffusion.flux."""
from __future__ import annotations

from diffusion import flux
from nodes.spec import Float, Input, Int, String, node

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
