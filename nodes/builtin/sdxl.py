"""SDXL text encoding nodes (ComfyUI's specs: nodes.CLIPTextEncodeSDXL / CLIPTextEncodeSDXLRefiner);
the work is in diffusion.sdxl."""
from __future__ import annotations

from diffusion import sdxl as sdxl_ops
from nodes.spec import Float, Input, Int, String, node

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
