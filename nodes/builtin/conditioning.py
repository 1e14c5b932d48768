"""Text encoding and conditioning nodes (ComfyUI's specs); the work is in diffusion.conditioning / vae_ops."""
from __future__ import annotations

from diffusion import conditioning as conditioning_ops
from nodes.spec import Boolean, Combo, Float, Input, Int, Output, String, node

MAX_RESOLUTION = 16384


@node("CLIPTextEncode", category="conditioning", display_name="CLIP Text Encode (Prompt)",
      description="Turns a prompt into the text embedding the sampler is guided by; supports (word:1.2) "
                  "weights and embedding:name.")
class CLIPTextEncode:
    text = String(multiline=True, dynamic_prompts=True, tooltip="Prompt text.")
    clip = Input("CLIP", tooltip="Text encoder from the checkpoint loader.")
    RETURNS = (Output("CONDITIONING",
                      tooltip="Prompt embedding for the sampler's positive or negative input."),)

    def run(self, text: str, clip) -> tuple:
        return (conditioning_ops.encode_text(clip, text),)


@node("CLIPSetLastLayer", category="conditioning", display_name="CLIP Set Last Layer")
class CLIPSetLastLayer:
    clip = Input("CLIP")
    stop_at_clip_layer = Int(-1, min=-24, max=-1, step=1)
    RETURNS = ("CLIP",)

    def run(self, clip, stop_at_clip_layer: int) -> tuple:
        return (clip.with_clip_skip(stop_at_clip_layer),)


@node("ConditioningCombine", category="conditioning", display_name="Conditioning (Combine)")
class ConditioningCombine:
    conditioning_1 = Input("CONDITIONING")
    conditioning_2 = Input("CONDITIONING")
    RETURNS = ("CONDITIONING",)

    def run(self, conditioning_1: list, conditioning_2: list) -> tuple:
        return (conditioning_ops.combine(conditioning_1, conditioning_2),)


@node("ConditioningAverage", category="conditioning")
class ConditioningAverage:
    conditioning_to = Input("CONDITIONING")
    conditioning_from = Input("CONDITIONING")
    conditioning_to_strength = Float(1.0, min=0.0, max=1.0, step=0.01)
    RETURNS = ("CONDITIONING",)

    def run(self, conditioning_to: list, conditioning_from: list, conditioning_to_strength: float) -> tuple:
        return (conditioning_ops.average(conditioning_to, conditioning_from, conditioning_to_strength),)


@node("ConditioningConcat", category="conditioning", display_name="Conditioning (Concat)")
class ConditioningConcat:
    conditioning_to = Input("CONDITIONING")
    conditioning_from = Input("CONDITIONING")
    RETURNS = ("CONDITIONING",)

    def run(self, conditioning_to: list, conditioning_from: list) -> tuple:
        return (conditioning_ops.concat(conditioning_to, conditioning_from),)


@node("ConditioningSetArea", category="conditioning", display_name="Conditioning (Set Area)")
class ConditioningSetArea:
    conditioning = Input("CONDITIONING")
    width = Int(64, min=64, max=MAX_RESOLUTION, step=8)
    height = Int(64, min=64, max=MAX_RESOLUTION, step=8)
    x = Int(0, min=0, max=MAX_RESOLUTION, step=8)
    y = Int(0, min=0, max=MAX_RESOLUTION, step=8)
    strength = Float(1.0, min=0.0, max=10.0, step=0.01)
    RETURNS = ("CONDITIONING",)

    def run(self, conditioning: list, width: int, height: int, x: int, y: int, strength: float) -> tuple:
        return (conditioning_ops.set_area(conditioning, width, height, x, y, strength),)



@node("ConditioningSetAreaPercentage", category="conditioning",
      display_name="Conditioning (Set Area with Percentage)")
class ConditioningSetAreaPercentage:
    conditioning = Input("CONDITIONING")
    width = Float(1.0, min=0, max=1.0, step=0.01)
    height = Float(1.0, min=0, max=1.0, step=0.01)
    x = Float(0, min=0, max=1.0, step=0.01)
    y = Float(0, min=0, max=1.0, step=0.01)
    strength = Float(1.0, min=0.0, max=10.0, step=0.01)
    RETURNS = ("CONDITIONING",)

    def run(self, conditioning: list, width: float, height: float, x: float, y: float, strength: float) -> tuple:
        return (conditioning_ops.set_area_percentage(conditioning, width, height, x, y, strength),)



@node("ConditioningSetAreaStrength", category="conditioning")
class ConditioningSetAreaStrength:
    conditioning = Input("CONDITIONING")
    strength = Float(1.0, min=0.0, max=10.0, step=0.01)
    RETURNS = ("CONDITIONING",)

    def run(self, conditioning: list, strength: float) -> tuple:
        return (conditioning_ops.set_values(conditioning, {"strength": strength}),)



@node("ConditioningSetMask", category="conditioning", display_name="Conditioning (Set Mask)")
class ConditioningSetMask:
    conditioning = Input("CONDITIONING")
    mask = Input("MASK")
    strength = Float(1.0, min=0.0, max=10.0, step=0.01)
    set_cond_area = Combo(["default", "mask bounds"])
    RETURNS = ("CONDITIONING",)

    def run(self, conditioning: list, mask, strength: float, set_cond_area: str) -> tuple:
        return (conditioning_ops.set_mask(conditioning, mask, strength, set_cond_area != "default"),)



@node("ConditioningZeroOut", category="advanced/conditioning")
class ConditioningZeroOut:
    conditioning = Input("CONDITIONING")
    RETURNS = ("CONDITIONING",)

    def run(self, conditioning: list) -> tuple:
        return (conditioning_ops.zero_out(conditioning),)



@node("ConditioningSetTimestepRange", category="advanced/conditioning")
class ConditioningSetTimestepRange:
    conditioning = Input("CONDITIONING")
    start = Float(0.0, min=0.0, max=1.0, step=0.001)
    end = Float(1.0, min=0.0, max=1.0, step=0.001)
    RETURNS = ("CONDITIONING",)

    def run(self, conditioning: list, start: float, end: float) -> tuple:
        return (conditioning_ops.set_timestep_range(conditioning, start, end),)



@node("InpaintModelConditioning", category="conditioning/inpaint")
class InpaintModelConditioning:
    positive = Input("CONDITIONING")
    negative = Input("CONDITIONING")
    vae = Input("VAE")
    pixels = Input("IMAGE")
    mask = Input("MASK")
    noise_mask = Boolean(True, tooltip="Also restrict sampling to the masked area of the latent (helps most "
                                       "models; some inpainting models do better without).")
    RETURNS = (Output("CONDITIONING", "positive"), Output("CONDITIONING", "negative"), Output("LATENT", "latent"))

    def run(self, positive: list, negative: list, vae, pixels, mask, noise_mask: bool = True) -> tuple:
        return conditioning_ops.inpaint_model_conditioning(positive, negative, vae, pixels, mask, noise_mask)


@node("InstructPixToPixConditioning", category="conditioning/instructpix2pix")
class InstructPixToPixConditioning:
    positive = Input("CONDITIONING")
    negative = Input("CONDITIONING")
    vae = Input("VAE")
    pixels = Input("IMAGE")
    RETURNS = (Output("CONDITIONING", "positive"), Output("CONDITIONING", "negative"), Output("LATENT", "latent"))

    def run(self, positive: list, negative: list, vae, pixels) -> tuple:
        return conditioning_ops.instruct_pix2pix_conditioning(positive, negative, vae, pixels)
