"""Mask and alpha nodes: composite, feather, threshold, crop, colour key, preview, RGBA split/join,
Porter-Duff compositing (ComfyUI's comfy_extras/nodes_mask and nodes_compositing specs). Each wraps
one function of `imaging.masks`."""
from __future__ import annotations

import random
import string

import torch

from imaging import masks
from nodes import services
from nodes.builtin.image import save_images
from nodes.spec import Combo, Float, Hidden, Input, Int, node

MAX_RESOLUTION = 16384


def _position(default: int = 0) -> Int:
    return Int(default, min=0, max=MAX_RESOLUTION, step=1)


@node("MaskComposite", category="mask", display_name="MaskComposite", function="combine")
class MaskComposite:
    destination = Input("MASK")
    source = Input("MASK")
    x = _position()
    y = _position()
    operation = Combo(masks.MASK_OPERATIONS)
    RETURNS = ("MASK",)

    def run(self, destination: torch.Tensor, source: torch.Tensor, x: int, y: int, operation: str) -> tuple:
        return (masks.composite(destination, source, x, y, operation),)


@node("FeatherMask", category="mask", display_name="FeatherMask", function="feather")
class FeatherMask:
    mask = Input("MASK")
    left = _position()
    top = _position()
    right = _position()
    bottom = _position()
    RETURNS = ("MASK",)

    def run(self, mask: torch.Tensor, left: int, top: int, right: int, bottom: int) -> tuple:
        return (masks.feather(mask, left, top, right, bottom),)


@node("ThresholdMask", category="mask", display_name="ThresholdMask", function="image_to_mask")
class ThresholdMask:
    mask = Input("MASK")
    value = Float(0.5, min=0.0, max=1.0, step=0.01)
    RETURNS = ("MASK",)

    def run(self, mask: torch.Tensor, value: float) -> tuple:
        return (masks.threshold(mask, value),)


@node("CropMask", category="mask", display_name="CropMask", function="crop")
class CropMask:
    mask = Input("MASK")
    x = _position()
    y = _position()
    width = Int(512, min=1, max=MAX_RESOLUTION, step=1)
    height = Int(512, min=1, max=MAX_RESOLUTION, step=1)
    RETURNS = ("MASK",)

    def run(self, mask: torch.Tensor, x: int, y: int, width: int, height: int) -> tuple:
        return (masks.crop(mask, x, y, width, height),)


@node("ImageColorToMask", category="mask", display_name="ImageColorToMask", function="image_to_mask")
class ImageColorToMask:
    image = Input("IMAGE")
    color = Int(0, min=0, max=0xFFFFFF, step=1, display="color")
    RETURNS = ("MASK",)

    def run(self, image: torch.Tensor, color: int) -> tuple:
        return (masks.color_to_mask(image, color),)


@node("MaskPreview", category="mask", display_name="MaskPreview", output_node=True, function="execute")
class MaskPreview:
    mask = Input("MASK")
    prompt = Hidden("PROMPT")
    extra_pnginfo = Hidden("EXTRA_PNGINFO")
    RETURNS = ()

    def run(self, mask: torch.Tensor, prompt: dict | None = None, extra_pnginfo: dict | None = None) -> dict:
        suffix = "".join(random.choice(string.ascii_lowercase) for _ in range(5))
        return save_images(masks.mask_preview_image(mask), f"ComfyUI_temp_{suffix}", services.folders().temp,
                           "temp", prompt, extra_pnginfo, compress_level=4)


@node("PorterDuffImageComposite", category="mask/compositing", display_name="Porter-Duff Image Composite",
      function="execute")
class PorterDuffImageComposite:
    source = Input("IMAGE")
    source_alpha = Input("MASK")
    destination = Input("IMAGE")
    destination_alpha = Input("MASK")
    mode = Combo(masks.PORTER_DUFF_MODES, default="DST")
    RETURNS = ("IMAGE", "MASK")

    def run(self, source: torch.Tensor, source_alpha: torch.Tensor, destination: torch.Tensor,
            destination_alpha: torch.Tensor, mode: str) -> tuple:
        return masks.porter_duff_composite(source, source_alpha, destination, destination_alpha, mode)


@node("SplitImageWithAlpha", category="mask/compositing", display_name="Split Image with Alpha", function="execute")
class SplitImageWithAlpha:
    image = Input("IMAGE")
    RETURNS = ("IMAGE", "MASK")

    def run(self, image: torch.Tensor) -> tuple:
        return masks.split_alpha(image)


@node("JoinImageWithAlpha", category="mask/compositing", display_name="Join Image with Alpha", function="execute")
class JoinImageWithAlpha:
    image = Input("IMAGE")
    alpha = Input("MASK")
    RETURNS = ("IMAGE",)

    def run(self, image: torch.Tensor, alpha: torch.Tensor) -> tuple:
        return (masks.join_alpha(image, alpha),)
