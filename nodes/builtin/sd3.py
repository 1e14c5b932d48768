"""SD3 / SD3.5 nodes with ComfyUI's specs (comfy_extras/nodes_sd3.py, nodes_model_advanced.py); the work is
in diffusion.sd3 and diffusion.conditioning."""
from __future__ import annotations

from diffusion import conditioning as conditioning_ops
from diffusion import sd3
from nodes import services
from nodes.spec import Combo, Float, Input, Int, String, node

MAX_RESOLUTION = 16384
EMPTY_PADDING = ["none", "empty_prompt"]


def _text_encoder_paths(*names: str):
    return [services.folders().find("text_encoders", n) for n in names]


@node("TripleCLIPLoader", category="advanced/loaders", description="[Recipes]\n\nsd3: clip-l, clip-g, t5")
class TripleCLIPLoader:
    clip_name1 = Combo(services.file_list("text_encoders"))
    clip_name2 = Combo(services.file_list("text_encoders"))
    clip_name3 = Combo(services.file_list("text_encoders"))
    RETURNS = ("CLIP",)

    def run(self, clip_name1: str, clip_name2: str, clip_name3: str) -> tuple:
        return (sd3.load_text_encoder_files(_text_encoder_paths(clip_name1, clip_name2, clip_name3),
                                            services.current().model_manager(),
                                            embedding_dirs=services.folders().paths("embeddings")),)


@node("CLIPTextEncodeSD3", category="advanced/conditioning")
class CLIPTextEncodeSD3:
    clip = Input("CLIP")
    clip_l = String(multiline=True, dynamic_prompts=True)
    clip_g = String(multiline=True, dynamic_prompts=True)
    t5xxl = String(multiline=True, dynamic_prompts=True)
    empty_padding = Combo(EMPTY_PADDING)
    RETURNS = ("CONDITIONING",)

    def run(self, clip, clip_l: str, clip_g: str, t5xxl: str, empty_padding: str) -> tuple:
        return (conditioning_ops.encode_sd3(clip, {"clip_l": clip_l, "clip_g": clip_g, "t5xxl": t5xxl},
                                            empty_padding=empty_padding == "empty_prompt"),)


@node("EmptySD3LatentImage", category="latent/sd3")
class EmptySD3LatentImage:
    width = Int(1024, min=16, max=MAX_RESOLUTION, step=16)
    height = Int(1024, min=16, max=MAX_RESOLUTION, step=16)
    batch_size = Int(1, min=1, max=4096)
    RETURNS = ("LATENT",)

    def run(self, width: int, height: int, batch_size: int = 1) -> tuple:
        return (sd3.empty_latent(width, height, batch_size),)


@node("ModelSamplingSD3", category="advanced/model")
class ModelSamplingSD3:
    model = Input("MODEL")
    shift = Float(3.0, min=0.0, max=100.0, step=0.01)
    RETURNS = ("MODEL",)

    def run(self, model, shift: float) -> tuple:
        return (sd3.with_sd3_sampling(model, shift),)


@node("SkipLayerGuidanceSD3", category="advanced/guidance", experimental=True,
      description="Generic version of SkipLayerGuidance node that can be used on every DiT model.")
class SkipLayerGuidanceSD3:
    model = Input("MODEL")
    layers = String("7, 8, 9", multiline=False)
    scale = Float(3.0, min=0.0, max=10.0, step=0.1)
    start_percent = Float(0.01, min=0.0, max=1.0, step=0.001)
    end_percent = Float(0.15, min=0.0, max=1.0, step=0.001)
    RETURNS = ("MODEL",)

    def run(self, model, layers: str, scale: float, start_percent: float, end_percent: float) -> tuple:
        return (sd3.with_skip_layer_guidance(model, layers, scale, start_percent, end_percent),)
