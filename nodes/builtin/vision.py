"""CLIP vision, unCLIP, style-model and GLIGEN nodes (ComfyUI's specs); the work is in diffusion.clip_vision,
diffusion.unclip, diffusion.style_model and diffusion.gligen."""
from __future__ import annotations

import torch

from diffusion import clip_vision as vision_ops
from diffusion import gligen as gligen_ops
from diffusion import style_model as style_ops
from diffusion import unclip
from nodes import services
from nodes.builtin.conditioning import MAX_RESOLUTION
from nodes.spec import Combo, Float, Input, Int, String, node


def _manager():
    return services.current().model_manager()


@node("CLIPVisionLoader", category="loaders", display_name="Load CLIP Vision",
      description="Loads a CLIP vision tower (ViT-L/H/bigG or SigLIP, Hugging Face or OpenCLIP layout).")
class CLIPVisionLoader:
    clip_name = Combo(services.file_list("clip_vision"))
    RETURNS = ("CLIP_VISION",)

    def run(self, clip_name: str) -> tuple:
        return (vision_ops.load_clip_vision_file(services.folders().find("clip_vision", clip_name), _manager()),)


@node("CLIPVisionEncode", category="conditioning", display_name="CLIP Vision Encode")
class CLIPVisionEncode:
    clip_vision = Input("CLIP_VISION")
    image = Input("IMAGE")
    crop = Combo(list(vision_ops.CROP_MODES))
    RETURNS = ("CLIP_VISION_OUTPUT",)

    def run(self, clip_vision, image: torch.Tensor, crop: str) -> tuple:
        return (vision_ops.encode_image(clip_vision, image, crop),)


@node("unCLIPCheckpointLoader", category="loaders", display_name="unCLIPCheckpointLoader")
class unCLIPCheckpointLoader:
    ckpt_name = Combo(services.file_list("checkpoints"))
    RETURNS = ("MODEL", "CLIP", "VAE", "CLIP_VISION")

    def run(self, ckpt_name: str) -> tuple:
        return unclip.load_unclip_checkpoint(services.folders().find("checkpoints", ckpt_name), _manager(),
                                             embedding_dirs=services.folders().paths("embeddings"))


@node("unCLIPConditioning", category="conditioning", display_name="unCLIPConditioning")
class unCLIPConditioning:
    conditioning = Input("CONDITIONING")
    clip_vision_output = Input("CLIP_VISION_OUTPUT")
    strength = Float(1.0, min=-10.0, max=10.0, step=0.01)
    noise_augmentation = Float(0.0, min=0.0, max=1.0, step=0.01)
    RETURNS = ("CONDITIONING",)

    def run(self, conditioning, clip_vision_output, strength: float, noise_augmentation: float) -> tuple:
        return (unclip.unclip_conditioning(conditioning, clip_vision_output, strength=strength,
                                           noise_augmentation=noise_augmentation),)


@node("StyleModelLoader", category="loaders", display_name="Load Style Model")
class StyleModelLoader:
    style_model_name = Combo(services.file_list("style_models"))
    RETURNS = ("STYLE_MODEL",)

    def run(self, style_model_name: str) -> tuple:
        path = services.folders().find("style_models", style_model_name)
        return (style_ops.load_style_model_file(path, _manager()),)


@node("StyleModelApply", category="conditioning/style_model", display_name="Apply Style Model")
class StyleModelApply:
    conditioning = Input("CONDITIONING")
    style_model = Input("STYLE_MODEL")
    clip_vision_output = Input("CLIP_VISION_OUTPUT")
    strength = Float(1.0, min=0.0, max=10.0, step=0.001)
    strength_type = Combo(list(style_ops.STRENGTH_TYPES))
    RETURNS = ("CONDITIONING",)

    def run(self, conditioning, style_model, clip_vision_output, strength: float, strength_type: str) -> tuple:
        return (style_ops.apply_style_model(conditioning, style_model, clip_vision_output, strength=strength,
                                            strength_type=strength_type),)


@node("GLIGENLoader", category="loaders", display_name="GLIGENLoader")
class GLIGENLoader:
    gligen_name = Combo(services.file_list("gligen"))
    RETURNS = ("GLIGEN",)

    def run(self, gligen_name: str) -> tuple:
        return (gligen_ops.load_gligen_file(services.folders().find("gligen", gligen_name), _manager()),)


@node("GLIGENTextBoxApply", category="conditioning/gligen", display_name="GLIGENTextBoxApply")
class GLIGENTextBoxApply:
    conditioning_to = Input("CONDITIONING")
    clip = Input("CLIP")
    gligen_textbox_model = Input("GLIGEN")
    text = String(multiline=True, dynamic_prompts=True)
    width = Int(64, min=8, max=MAX_RESOLUTION, step=8)
    height = Int(64, min=8, max=MAX_RESOLUTION, step=8)
    x = Int(0, min=0, max=MAX_RESOLUTION, step=8)
    y = Int(0, min=0, max=MAX_RESOLUTION, step=8)
    RETURNS = ("CONDITIONING",)

    def run(self, conditioning_to, clip, gligen_textbox_model, text: str, width: int, height: int, x: int,
            y: int) -> tuple:
        return (gligen_ops.text_box(conditioning_to, clip, gligen_textbox_model, text, width=width, height=height,
                                    x=x, y=y),)
