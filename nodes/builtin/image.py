"""Image and mask nodes: loading, saving, previews, resizing, compositing (ComfyUI's specs)."""
from __future__ import annotations

import hashlib
import random
import string
from pathlib import Path

import torch

from imaging import files, image_ops, latent_files
from imaging.resize import CROP_METHODS, IMAGE_METHODS
from nodes import services
from nodes.spec import Boolean, Combo, Float, Hidden, Input, Int, Output, String, node, optional

MAX_RESOLUTION = 16384
IMAGE_EXTENSIONS = {".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff", ".jfif"}


def input_images() -> list[str]:
    """Image files at the top of the input folder (what LoadImage offers and the editor uploads to)."""
    try:
        folder = services.folders().input
    except LookupError:
        return []
    if not folder.is_dir():
        return []
    return sorted(p.name for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)


def input_files_with(suffix: str) -> list[str]:
    try:
        folder = services.folders().input
    except LookupError:
        return []
    return sorted(p.name for p in folder.iterdir() if p.is_file() and p.name.endswith(suffix)) if folder.is_dir() else []


def input_path(name: str) -> Path:
    return services.folders().annotated_path(name, "input")


def file_digest(name: str) -> str:
    digest = hashlib.sha256()
    with open(input_path(name), "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def check_input_file(name: str, what: str) -> bool | str:
    try:
        path = input_path(name)
    except Exception as exc:  # a refused path is a validation failure, not a crash
        return f"Invalid {what} file: {name} ({exc})"
    return True if path.is_file() else f"Invalid {what} file: {name}"


@node("LoadImage", category="image", display_name="Load Image")
class LoadImage:
    image = Combo(input_images, image_upload=True)
    RETURNS = ("IMAGE", "MASK")

    def run(self, image: str) -> tuple[torch.Tensor, torch.Tensor]:
        return files.load_image(input_path(image))

    @classmethod
    def IS_CHANGED(cls, image: str) -> str:
        return file_digest(image)

    @classmethod
    def VALIDATE_INPUTS(cls, image: str) -> bool | str:
        return check_input_file(image, "image")


@node("LoadImageMask", category="mask", display_name="Load Image (as Mask)")
class LoadImageMask:
    image = Combo(input_images, image_upload=True)
    channel = Combo(["alpha", "red", "green", "blue"])
    RETURNS = ("MASK",)

    def run(self, image: str, channel: str) -> tuple[torch.Tensor]:
        return (files.load_mask(input_path(image), channel),)

    @classmethod
    def IS_CHANGED(cls, image: str, channel: str) -> str:
        return file_digest(image)

    @classmethod
    def VALIDATE_INPUTS(cls, image: str) -> bool | str:
        return check_input_file(image, "image")


def save_images(images: torch.Tensor, filename_prefix: str, folder: Path, kind: str, prompt: dict | None,
                extra_pnginfo: dict | None, compress_level: int) -> dict:
    workflow = (extra_pnginfo or {}).get("workflow")
    prefix = files.expand_prefix(filename_prefix, prompt=prompt, workflow=workflow)
    target = services.folders().save_target(prefix, images.shape[2], images.shape[1], folder)
    results = files.save_png_batch(images, target, kind=kind, prompt=prompt, extra_pnginfo=extra_pnginfo,
                                   compress_level=compress_level)
    return {"ui": {"images": results}}


@node("SaveImage", category="image", display_name="Save Image", output_node=True,
      description="Writes the images as PNG files (with the workflow embedded) into the output folder.")
class SaveImage:
    images = Input("IMAGE", tooltip="Images to write.")
    filename_prefix = String("ComfyUI", tooltip="File name start, may include sub-folders; %date:yyyy-MM-dd% and "
                             "%Node title.input% are replaced by their values.")
    prompt = Hidden("PROMPT")
    extra_pnginfo = Hidden("EXTRA_PNGINFO")
    RETURNS = ()

    # ComfyUI's instance attributes, which plugin subclasses set in their own __init__
    output_dir: str | None = None      # None: the folder of ``type``
    type = "output"
    prefix_append = ""
    compress_level = 4

    def run(self, images: torch.Tensor, filename_prefix: str = "ComfyUI", prompt: dict | None = None,
            extra_pnginfo: dict | None = None) -> dict:
        return self.save_images(images, filename_prefix, prompt, extra_pnginfo)

    def save_images(self, images: torch.Tensor, filename_prefix: str = "ComfyUI", prompt: dict | None = None,
                    extra_pnginfo: dict | None = None) -> dict:
        """ComfyUI's method: writes into ``self.output_dir`` (or the ``self.type`` folder)."""
        folder = Path(self.output_dir) if self.output_dir else services.folders().directory(self.type)
        return save_images(images, filename_prefix + self.prefix_append, folder, self.type, prompt,
                           extra_pnginfo, compress_level=self.compress_level)


@node("PreviewImage", category="image", display_name="Preview Image", output_node=True,
      description="Shows the images in the editor without keeping them (temporary folder).")
class PreviewImage:
    images = Input("IMAGE")
    prompt = Hidden("PROMPT")
    extra_pnginfo = Hidden("EXTRA_PNGINFO")
    RETURNS = ()

    type = "temp"
    compress_level = 1

    def __init__(self) -> None:
        self.prefix_append = "_temp_" + "".join(random.choice(string.ascii_lowercase) for _ in range(5))

    def run(self, images: torch.Tensor, prompt: dict | None = None, extra_pnginfo: dict | None = None) -> dict:
        return self.save_images(images, "ComfyUI", prompt, extra_pnginfo)

    save_images = SaveImage.save_images
    output_dir = None


@node("ImageScale", category="image/upscaling", display_name="Upscale Image")
class ImageScale:
    image = Input("IMAGE")
    upscale_method = Combo(IMAGE_METHODS)
    width = Int(512, min=0, max=MAX_RESOLUTION, step=1)
    height = Int(512, min=0, max=MAX_RESOLUTION, step=1)
    crop = Combo(CROP_METHODS)
    RETURNS = ("IMAGE",)

    def run(self, image: torch.Tensor, upscale_method: str, width: int, height: int, crop: str) -> tuple:
        return (image_ops.resize_to(image, width, height, upscale_method, crop),)


@node("ImageScaleBy", category="image/upscaling", display_name="Upscale Image By")
class ImageScaleBy:
    image = Input("IMAGE")
    upscale_method = Combo(IMAGE_METHODS)
    scale_by = Float(1.0, min=0.01, max=8.0, step=0.01)
    RETURNS = ("IMAGE",)

    def run(self, image: torch.Tensor, upscale_method: str, scale_by: float) -> tuple:
        return (image_ops.rescale(image, scale_by, upscale_method),)


@node("ImageScaleToTotalPixels", category="image/upscaling", display_name="Scale Image to Total Pixels")
class ImageScaleToTotalPixels:
    image = Input("IMAGE")
    upscale_method = Combo(IMAGE_METHODS)
    megapixels = Float(1.0, min=0.01, max=16.0, step=0.01)
    resolution_steps = Int(1, min=1, max=256)
    RETURNS = ("IMAGE",)

    def run(self, image: torch.Tensor, upscale_method: str, megapixels: float, resolution_steps: int = 1) -> tuple:
        return (image_ops.rescale_to_total_pixels(image, megapixels, upscale_method, resolution_steps),)


@node("ImageInvert", category="image", display_name="Invert Image")
class ImageInvert:
    image = Input("IMAGE")
    RETURNS = ("IMAGE",)

    def run(self, image: torch.Tensor) -> tuple:
        return (image_ops.invert(image),)


@node("ImageBatch", category="image", display_name="Batch Images", deprecated=True)
class ImageBatch:
    image1 = Input("IMAGE")
    image2 = Input("IMAGE")
    RETURNS = ("IMAGE",)

    def run(self, image1: torch.Tensor, image2: torch.Tensor) -> tuple:
        return (image_ops.batch(image1, image2),)


@node("ImageCrop", category="image/transform", display_name="Image Crop")
class ImageCrop:
    image = Input("IMAGE")
    width = Int(512, min=1, max=MAX_RESOLUTION, step=1)
    height = Int(512, min=1, max=MAX_RESOLUTION, step=1)
    x = Int(0, min=0, max=MAX_RESOLUTION, step=1)
    y = Int(0, min=0, max=MAX_RESOLUTION, step=1)
    RETURNS = ("IMAGE",)

    def run(self, image: torch.Tensor, width: int, height: int, x: int, y: int) -> tuple:
        return (image_ops.crop(image, width, height, x, y),)


@node("ImagePadForOutpaint", category="image", display_name="Pad Image for Outpainting")
class ImagePadForOutpaint:
    image = Input("IMAGE")
    left = Int(0, min=0, max=MAX_RESOLUTION, step=8)
    top = Int(0, min=0, max=MAX_RESOLUTION, step=8)
    right = Int(0, min=0, max=MAX_RESOLUTION, step=8)
    bottom = Int(0, min=0, max=MAX_RESOLUTION, step=8)
    feathering = Int(40, min=0, max=MAX_RESOLUTION, step=1)
    RETURNS = ("IMAGE", "MASK")

    def run(self, image: torch.Tensor, left: int, top: int, right: int, bottom: int, feathering: int) -> tuple:
        return image_ops.pad_for_outpaint(image, left, top, right, bottom, feathering)


@node("ImageCompositeMasked", category="image")
class ImageCompositeMasked:
    destination = Input("IMAGE")
    source = Input("IMAGE")
    x = Int(0, min=0, max=MAX_RESOLUTION, step=1)
    y = Int(0, min=0, max=MAX_RESOLUTION, step=1)
    resize_source = Boolean(False)
    mask = optional(Input("MASK"))
    RETURNS = ("IMAGE",)

    def run(self, destination: torch.Tensor, source: torch.Tensor, x: int, y: int, resize_source: bool,
            mask: torch.Tensor | None = None) -> tuple:
        return (image_ops.composite_images(destination, source, x, y, mask, resize_source),)


@node("EmptyImage", category="image")
class EmptyImage:
    width = Int(512, min=1, max=MAX_RESOLUTION, step=1)
    height = Int(512, min=1, max=MAX_RESOLUTION, step=1)
    batch_size = Int(1, min=1, max=4096)
    color = Int(0, min=0, max=0xFFFFFF, step=1, display="color")
    RETURNS = ("IMAGE",)

    def run(self, width: int, height: int, batch_size: int = 1, color: int = 0) -> tuple:
        return (image_ops.solid_color(width, height, batch_size, color),)


# --- masks -----------------------------------------------------------------------------------------

@node("SolidMask", category="mask")
class SolidMask:
    value = Float(1.0, min=0.0, max=1.0, step=0.01)
    width = Int(512, min=1, max=MAX_RESOLUTION, step=1)
    height = Int(512, min=1, max=MAX_RESOLUTION, step=1)
    RETURNS = ("MASK",)

    def run(self, value: float, width: int, height: int) -> tuple:
        return (image_ops.solid_mask(value, width, height),)


@node("InvertMask", category="mask")
class InvertMask:
    mask = Input("MASK")
    RETURNS = ("MASK",)

    def run(self, mask: torch.Tensor) -> tuple:
        return (1.0 - mask,)


@node("MaskToImage", category="mask", display_name="Convert Mask to Image")
class MaskToImage:
    mask = Input("MASK")
    RETURNS = ("IMAGE",)

    def run(self, mask: torch.Tensor) -> tuple:
        return (image_ops.mask_to_image(mask),)


@node("ImageToMask", category="mask", display_name="Convert Image to Mask")
class ImageToMask:
    image = Input("IMAGE")
    channel = Combo(["red", "green", "blue", "alpha"])
    RETURNS = ("MASK",)

    def run(self, image: torch.Tensor, channel: str) -> tuple:
        return (image_ops.image_to_mask(image, channel),)


@node("GrowMask", category="mask", display_name="Grow Mask")
class GrowMask:
    mask = Input("MASK")
    expand = Int(0, min=-MAX_RESOLUTION, max=MAX_RESOLUTION, step=1)
    tapered_corners = Boolean(True)
    RETURNS = ("MASK",)

    def run(self, mask: torch.Tensor, expand: int, tapered_corners: bool) -> tuple:
        return (image_ops.grow(mask, expand, tapered_corners),)


# --- latent files ----------------------------------------------------------------------------------

@node("SaveLatent", category="_for_testing", output_node=True)
class SaveLatent:
    samples = Input("LATENT")
    filename_prefix = String("latents/ComfyUI")
    prompt = Hidden("PROMPT")
    extra_pnginfo = Hidden("EXTRA_PNGINFO")
    RETURNS = ()

    def run(self, samples: dict, filename_prefix: str = "ComfyUI", prompt: dict | None = None,
            extra_pnginfo: dict | None = None) -> dict:
        target = services.folders().save_target(filename_prefix)
        path = target.path("latent")
        latent_files.save_latent(samples["samples"], path, prompt=prompt, extra_pnginfo=extra_pnginfo)
        return {"ui": {"latents": [{"filename": path.name, "subfolder": target.subfolder, "type": "output"}]}}


@node("LoadLatent", category="_for_testing")
class LoadLatent:
    latent = Combo(lambda: input_files_with(".latent"))
    RETURNS = ("LATENT",)

    def run(self, latent: str) -> tuple[dict]:
        return (latent_files.load_latent(input_path(latent)),)

    @classmethod
    def IS_CHANGED(cls, latent: str) -> str:
        return file_digest(latent)

    @classmethod
    def VALIDATE_INPUTS(cls, latent: str) -> bool | str:
        return check_input_file(latent, "latent")
