"""Image post-processing nodes: blend, blur, sharpen, quantize, morphology, YUV and noise (ComfyUI's
comfy_extras/nodes_post_processing, nodes_morphology and nodes_images specs). Each wraps one function
of `imaging.filters`."""
from __future__ import annotations

import torch

from imaging import filters
from nodes.spec import Combo, Float, Input, Int, Output, node


@node("ImageBlend", category="image/postprocessing", function="execute")
class ImageBlend:
    image1 = Input("IMAGE")
    image2 = Input("IMAGE")
    blend_factor = Float(0.5, min=0.0, max=1.0, step=0.01)
    blend_mode = Combo(filters.BLEND_MODES)
    RETURNS = ("IMAGE",)

    def run(self, image1: torch.Tensor, image2: torch.Tensor, blend_factor: float, blend_mode: str) -> tuple:
        return (filters.blend(image1, image2, blend_factor, blend_mode),)


@node("ImageBlur", category="image/postprocessing", function="execute")
class ImageBlur:
    image = Input("IMAGE")
    blur_radius = Int(1, min=1, max=31, step=1)
    sigma = Float(1.0, min=0.1, max=10.0, step=0.1)
    RETURNS = ("IMAGE",)

    def run(self, image: torch.Tensor, blur_radius: int, sigma: float) -> tuple:
        return (filters.blur(image, blur_radius, sigma),)


@node("ImageQuantize", category="image/postprocessing", function="execute")
class ImageQuantize:
    image = Input("IMAGE")
    colors = Int(256, min=1, max=256, step=1)
    dither = Combo(filters.DITHERS)
    RETURNS = ("IMAGE",)

    def run(self, image: torch.Tensor, colors: int, dither: str) -> tuple:
        return (filters.quantize(image, colors, dither),)


@node("ImageSharpen", category="image/postprocessing", function="execute")
class ImageSharpen:
    image = Input("IMAGE")
    sharpen_radius = Int(1, min=1, max=31, step=1)
    sigma = Float(1.0, min=0.1, max=10.0, step=0.01)
    alpha = Float(1.0, min=0.0, max=5.0, step=0.01)
    RETURNS = ("IMAGE",)

    def run(self, image: torch.Tensor, sharpen_radius: int, sigma: float, alpha: float) -> tuple:
        return (filters.sharpen(image, sharpen_radius, sigma, alpha),)


@node("Morphology", category="image/postprocessing", display_name="ImageMorphology", function="execute")
class Morphology:
    image = Input("IMAGE")
    operation = Combo(filters.MORPHOLOGY_OPERATIONS)
    kernel_size = Int(3, min=3, max=999, step=1)
    RETURNS = ("IMAGE",)

    def run(self, image: torch.Tensor, operation: str, kernel_size: int) -> tuple:
        return (filters.morphology(image, operation, kernel_size),)


@node("ImageRGBToYUV", category="image/batch", function="execute")
class ImageRGBToYUV:
    image = Input("IMAGE")
    RETURNS = (Output("IMAGE", name="Y"), Output("IMAGE", name="U"), Output("IMAGE", name="V"))

    def run(self, image: torch.Tensor) -> tuple:
        return filters.rgb_to_yuv(image)


@node("ImageYUVToRGB", category="image/batch", function="execute")
class ImageYUVToRGB:
    Y = Input("IMAGE")
    U = Input("IMAGE")
    V = Input("IMAGE")
    RETURNS = ("IMAGE",)

    def run(self, Y: torch.Tensor, U: torch.Tensor, V: torch.Tensor) -> tuple:  # noqa: N803 (ComfyUI's names)
        return (filters.yuv_to_rgb(Y, U, V),)


@node("ImageAddNoise", category="image", display_name="ImageAddNoise", function="repeat")
class ImageAddNoise:
    image = Input("IMAGE")
    seed = Int(0, min=0, max=0xFFFFFFFFFFFFFFFF, control_after_generate=True,
               tooltip="The random seed used for creating the noise.")
    strength = Float(0.5, min=0.0, max=1.0, step=0.01)
    RETURNS = ("IMAGE",)

    def run(self, image: torch.Tensor, seed: int, strength: float) -> tuple:
        return (filters.add_noise(image, seed, strength),)
