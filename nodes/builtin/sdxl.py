"""SDXL text encoding nodes (ComfyUI's specs: nodes.CLIPTextEncodeSDXL / CLIPTextEncodeSDXLRefiner);
the work is in diffusion.sdxl."""
from __future__ import annotations

from diffusion import sdxl as sdxl_ops
from diffusion import flux as flux_ops
from diffusion import sd3 as sd3_ops
from nodes import services
from nodes.spec import Combo, Float, Input, Int, String, node, optional

MAX_RESOLUTION = 16384


def _size(default: int) -> Int:
    return Int(default, min=0, max=MAX_RESOLUTION)


@node("CLIPTextEncodeSDXL", category="advanced/conditioning")
class CLIPTextEncodeSDXL:
    clip = Input("CLIP")
    width = _size(1024)
    height = _size(1024)
    crop_w = _size(0)
    crop_h = _size(0)
    target_width = _size(1024)
    target_height = _size(1024)
    text_g = String(multiline=True, dynamic_prompts=True)
    text_l = String(multiline=True, dynamic_prompts=True)
    RETURNS = ("CONDITIONING",)

    def run(self, clip, width: int, height: int, crop_w: int, crop_h: int, target_width: int, target_height: int,
            text_g: str, text_l: str) -> tuple:
        return (sdxl_ops.encode_sdxl(clip, text_g, text_l, width=width, height=height, crop_w=crop_w,
                                     crop_h=crop_h, target_width=target_width, target_height=target_height),)


@node("CLIPTextEncodeSDXLRefiner", category="advanced/conditioning")
class CLIPTextEncodeSDXLRefiner:
    ascore = Float(6.0, min=0.0, max=1000.0, step=0.01)
    width = _size(1024)
    height = _size(1024)
    text = String(multiline=True, dynamic_prompts=True)
    clip = Input("CLIP")
    RETURNS = ("CONDITIONING",)

    def run(self, ascore: float, width: int, height: int, text: str, clip) -> tuple:
        return (sdxl_ops.encode_sdxl_refiner(clip, text, ascore=ascore, width=width, height=height),)


DUAL_CLIP_TYPES = ["sdxl", "sd3", "flux", "hunyuan_video", "hidream", "hunyuan_image"]


@node("DualCLIPLoader", category="advanced/loaders", display_name="DualCLIPLoader",
      description="Loads two standalone text encoder files as one CLIP (sdxl: a clip_l and a clip_g file).")
class DualCLIPLoader:
    clip_name1 = Combo(services.file_list("text_encoders"))
    clip_name2 = Combo(services.file_list("text_encoders"))
    type = Combo(DUAL_CLIP_TYPES)
    device = optional(Combo(["default", "cpu"], advanced=True))
    RETURNS = ("CLIP",)

    def run(self, clip_name1: str, clip_name2: str, type: str, device: str = "default") -> tuple:
        if type == "flux":
            return (flux_ops.load_text_encoder_files(
                [services.folders().find("text_encoders", n) for n in (clip_name1, clip_name2)],
                services.current().model_manager(), embedding_dirs=services.folders().paths("embeddings")),)
        if type not in ("sdxl", "sd3"):
            raise ValueError(f"DualCLIPLoader type {type!r} is not supported yet; 'sdxl' (clip_l + clip_g), 'flux' (clip_l + t5xxl) and "
                             "'sd3' (any two of clip_l, clip_g, t5xxl) are")
        folders = services.folders()
        paths = [folders.find("text_encoders", clip_name1), folders.find("text_encoders", clip_name2)]
        if type == "sd3":
            return (sd3_ops.load_text_encoder_files(paths, services.current().model_manager(),
                                                    embedding_dirs=folders.paths("embeddings")),)
        return (sdxl_ops.load_sdxl_text_encoder_files(paths, services.current().model_manager(),
                                                      embedding_dirs=folders.paths("embeddings")),)
