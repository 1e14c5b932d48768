"""Latent nodes: empty latents, batching, resizing, transforms and compositing (ComfyUI's specs)."""
from __future__ import annotations

import torch

from imaging import image_ops, latent_ops
from imaging.resize import CROP_METHODS, LATENT_METHODS
from nodes.spec import Boolean, Combo, Float, Input, Int, Output, node, optional

MAX_RESOLUTION = 16384


@node("EmptyLatentImage", category="latent", display_name="Empty Latent Image",
      description="A batch of blank latents to start sampling from (txt2img).")
class EmptyLatentImage:
    width = Int(512, min=16, max=MAX_RESOLUTION, step=8, tooltip="Image width in pixels; the latent is 8x smaller.")
    height = Int(512, min=16, max=MAX_RESOLUTION, step=8, tooltip="Image height in pixels; the latent is 8x smaller.")
    batch_size = Int(1, min=1, max=4096, tooltip="How many images to generate at once.")
    RETURNS = (Output("LATENT", tooltip="Blank latents, one per image."),)

    def run(self, width: int, height: int, batch_size: int = 1) -> tuple[dict]:
        return (latent_ops.empty(width, height, batch_size),)


@node("LatentFromBatch", category="latent/batch", display_name="Latent From Batch")
class LatentFromBatch:
    samples = Input("LATENT")
    batch_index = Int(0, min=0, max=63)
    length = Int(1, min=1, max=64)
    RETURNS = ("LATENT",)

    def run(self, samples: dict, batch_index: int, length: int) -> tuple[dict]:
        return (latent_ops.from_batch(samples, batch_index, length),)


@node("RepeatLatentBatch", category="latent/batch", display_name="Repeat Latent Batch")
class RepeatLatentBatch:
    samples = Input("LATENT")
    amount = Int(1, min=1, max=64)
    RETURNS = ("LATENT",)

    def run(self, samples: dict, amount: int) -> tuple[dict]:
        return (latent_ops.repeat_batch(samples, amount),)


@node("LatentUpscale", category="latent", display_name="Upscale Latent")
class LatentUpscale:
    samples = Input("LATENT")
    upscale_method = Combo(LATENT_METHODS)
    width = Int(512, min=0, max=MAX_RESOLUTION, step=8)
    height = Int(512, min=0, max=MAX_RESOLUTION, step=8)
    crop = Combo(CROP_METHODS)
    RETURNS = ("LATENT",)

    def run(self, samples: dict, upscale_method: str, width: int, height: int, crop: str) -> tuple[dict]:
        return (latent_ops.resize_to(samples, width, height, upscale_method, crop),)


@node("LatentUpscaleBy", category="latent", display_name="Upscale Latent By")
class LatentUpscaleBy:
    samples = Input("LATENT")
    upscale_method = Combo(LATENT_METHODS)
    scale_by = Float(1.5, min=0.01, max=8.0, step=0.01)
    RETURNS = ("LATENT",)

    def run(self, samples: dict, upscale_method: str, scale_by: float) -> tuple[dict]:
        return (latent_ops.rescale(samples, scale_by, upscale_method),)


@node("LatentRotate", category="latent/transform", display_name="Rotate Latent")
class LatentRotate:
    samples = Input("LATENT")
    rotation = Combo(latent_ops.ROTATIONS)
    RETURNS = ("LATENT",)

    def run(self, samples: dict, rotation: str) -> tuple[dict]:
        return (latent_ops.rotate(samples, rotation),)


@node("LatentFlip", category="latent/transform", display_name="Flip Latent")
class LatentFlip:
    samples = Input("LATENT")
    flip_method = Combo(latent_ops.FLIPS)
    RETURNS = ("LATENT",)

    def run(self, samples: dict, flip_method: str) -> tuple[dict]:
        return (latent_ops.flip(samples, flip_method),)


@node("LatentCrop", category="latent/transform", display_name="Crop Latent")
class LatentCrop:
    samples = Input("LATENT")
    width = Int(512, min=64, max=MAX_RESOLUTION, step=8)
    height = Int(512, min=64, max=MAX_RESOLUTION, step=8)
    x = Int(0, min=0, max=MAX_RESOLUTION, step=8)
    y = Int(0, min=0, max=MAX_RESOLUTION, step=8)
    RETURNS = ("LATENT",)

    def run(self, samples: dict, width: int, height: int, x: int, y: int) -> tuple[dict]:
        return (latent_ops.crop(samples, width, height, x, y),)


@node("LatentComposite", category="latent", display_name="Latent Composite")
class LatentComposite:
    samples_to = Input("LATENT")
    samples_from = Input("LATENT")
    x = Int(0, min=0, max=MAX_RESOLUTION, step=8)
    y = Int(0, min=0, max=MAX_RESOLUTION, step=8)
    feather = Int(0, min=0, max=MAX_RESOLUTION, step=8)
    RETURNS = ("LATENT",)

    def run(self, samples_to: dict, samples_from: dict, x: int, y: int, feather: int) -> tuple[dict]:
        return (latent_ops.composite(samples_to, samples_from, x, y, feather),)


@node("LatentCompositeMasked", category="latent")
class LatentCompositeMasked:
    destination = Input("LATENT")
    source = Input("LATENT")
    x = Int(0, min=0, max=MAX_RESOLUTION, step=8)
    y = Int(0, min=0, max=MAX_RESOLUTION, step=8)
    resize_source = Boolean(False)
    mask = optional(Input("MASK"))
    RETURNS = ("LATENT",)

    def run(self, destination: dict, source: dict, x: int, y: int, resize_source: bool,
            mask: torch.Tensor | None = None) -> tuple[dict]:
        samples = image_ops.composite_masked(destination["samples"], source["samples"], x, y, mask,
                                             cell=8, resize_source=resize_source)
        return (dict(destination, samples=samples),)


@node("LatentBlend", category="_for_testing", display_name="Latent Blend")
class LatentBlend:
    samples1 = Input("LATENT")
    samples2 = Input("LATENT")
    blend_factor = Float(0.5, min=0, max=1, step=0.01)
    RETURNS = ("LATENT",)

    def run(self, samples1: dict, samples2: dict, blend_factor: float) -> tuple[dict]:
        return (latent_ops.blend(samples1, samples2, blend_factor),)


@node("SetLatentNoiseMask", category="latent/inpaint", display_name="Set Latent Noise Mask")
class SetLatentNoiseMask:
    samples = Input("LATENT")
    mask = Input("MASK")
    RETURNS = ("LATENT",)

    def run(self, samples: dict, mask: torch.Tensor) -> tuple[dict]:
        return (latent_ops.set_noise_mask(samples, mask),)
