"""Image geometry, batch and animation nodes: flip, rotate, stitch, resize-and-pad, scale to a
largest side, size, batch slicing and regrouping, animated PNG / WebP saving, loading from the
output folder (ComfyUI's comfy_extras/nodes_images, nodes_rebatch and nodes.py specs). Each wraps one
function of `imaging.transform`, `imaging.animated` or `imaging.files`."""
from __future__ import annotations

from pathlib import Path

import torch

from imaging import animated, files, transform
from imaging.resize import IMAGE_METHODS
from nodes import services
from nodes.builtin.image import IMAGE_EXTENSIONS, file_digest, save_images
from nodes.spec import Boolean, Combo, Float, Hidden, Input, Int, Output, String, node, optional

MAX_RESOLUTION = 16384


@node("ImageFlip", category="image/transform", display_name="ImageFlip", function="flip")
class ImageFlip:
    image = Input("IMAGE")
    flip_method = Combo(transform.FLIPS)
    RETURNS = ("IMAGE",)

    def run(self, image: torch.Tensor, flip_method: str) -> tuple:
        return (transform.flip(image, flip_method),)


@node("ImageRotate", category="image/transform", display_name="ImageRotate", function="rotate")
class ImageRotate:
    image = Input("IMAGE")
    rotation = Combo(transform.ROTATIONS)
    RETURNS = ("IMAGE",)

    def run(self, image: torch.Tensor, rotation: str) -> tuple:
        return (transform.rotate(image, rotation),)


@node("ImageStitch", category="image/transform", display_name="Image Stitch", function="stitch",
      description="Stitches image2 to image1 in the given direction, with optional spacing between; "
                  "without image2, image1 passes through.")
class ImageStitch:
    image1 = Input("IMAGE")
    direction = Combo(transform.STITCH_DIRECTIONS, default="right")
    match_image_size = Boolean(True)
    spacing_width = Int(0, min=0, max=1024, step=2)
    spacing_color = Combo(tuple(transform.STITCH_COLORS), default="white")
    image2 = optional(Input("IMAGE"))
    RETURNS = ("IMAGE",)

    def run(self, image1: torch.Tensor, direction: str, match_image_size: bool, spacing_width: int,
            spacing_color: str, image2: torch.Tensor | None = None) -> tuple:
        return (transform.stitch(image1, image2, direction, match_image_size, spacing_width, spacing_color),)


@node("ResizeAndPadImage", category="image/transform", display_name="ResizeAndPadImage", function="resize_and_pad")
class ResizeAndPadImage:
    image = Input("IMAGE")
    target_width = Int(512, min=1, max=MAX_RESOLUTION, step=1)
    target_height = Int(512, min=1, max=MAX_RESOLUTION, step=1)
    padding_color = Combo(transform.PAD_COLORS)
    interpolation = Combo(("area", "bicubic", "nearest-exact", "bilinear", "lanczos"))
    RETURNS = ("IMAGE",)

    def run(self, image: torch.Tensor, target_width: int, target_height: int, padding_color: str,
            interpolation: str) -> tuple:
        return (transform.resize_and_pad(image, target_width, target_height, padding_color, interpolation),)


@node("ImageScaleToMaxDimension", category="image/upscaling", display_name="ImageScaleToMaxDimension",
      function="upscale")
class ImageScaleToMaxDimension:
    image = Input("IMAGE")
    # ComfyUI's list, "bilinear" twice included.
    upscale_method = Combo(("area", "lanczos", "bilinear", "nearest-exact", "bilinear", "bicubic"))
    largest_size = Int(512, min=0, max=MAX_RESOLUTION, step=1)
    RETURNS = ("IMAGE",)

    def run(self, image: torch.Tensor, upscale_method: str, largest_size: int) -> tuple:
        return (transform.scale_to_max_dimension(image, upscale_method, largest_size),)


@node("GetImageSize", category="image", display_name="Get Image Size", function="get_size",
      description="Returns the width, height and batch size of the image.")
class GetImageSize:
    image = Input("IMAGE")
    unique_id = Hidden("UNIQUE_ID")
    RETURNS = (Output("INT", name="width"), Output("INT", name="height"), Output("INT", name="batch_size"))

    def run(self, image: torch.Tensor, unique_id: str | None = None) -> tuple[int, int, int]:
        return transform.image_size(image)


@node("ImageFromBatch", category="image/batch", display_name="ImageFromBatch", function="frombatch")
class ImageFromBatch:
    image = Input("IMAGE")
    batch_index = Int(0, min=0, max=4095)
    length = Int(1, min=1, max=4096)
    RETURNS = ("IMAGE",)

    def run(self, image: torch.Tensor, batch_index: int, length: int) -> tuple:
        return (transform.from_batch(image, batch_index, length),)


@node("RepeatImageBatch", category="image/batch", display_name="RepeatImageBatch", function="repeat")
class RepeatImageBatch:
    image = Input("IMAGE")
    amount = Int(1, min=1, max=4096)
    RETURNS = ("IMAGE",)

    def run(self, image: torch.Tensor, amount: int) -> tuple:
        return (transform.repeat(image, amount),)


@node("RebatchImages", category="image/batch", display_name="Rebatch Images", input_is_list=True,
      function="execute")
class RebatchImages:
    images = Input("IMAGE")
    batch_size = Int(1, min=1, max=4096)
    RETURNS = (Output("IMAGE", is_list=True),)

    def run(self, images: list[torch.Tensor], batch_size: list[int]) -> tuple[list[torch.Tensor]]:
        return (transform.rebatch(images, batch_size[0]),)


def _target(images: torch.Tensor, filename_prefix: str, prompt: dict | None, extra_pnginfo: dict | None):
    workflow = (extra_pnginfo or {}).get("workflow")
    prefix = files.expand_prefix(filename_prefix, prompt=prompt, workflow=workflow)
    return services.folders().save_target(prefix, images.shape[2], images.shape[1], services.folders().output)


@node("SaveAnimatedWEBP", category="image/animation", display_name="SaveAnimatedWEBP", output_node=True,
      function="save_images")
class SaveAnimatedWEBP:
    images = Input("IMAGE")
    filename_prefix = String("ComfyUI")
    fps = Float(6.0, min=0.01, max=1000.0, step=0.01)
    lossless = Boolean(True)
    quality = Int(80, min=0, max=100)
    method = Combo(tuple(animated.WEBP_METHODS))
    prompt = Hidden("PROMPT")
    extra_pnginfo = Hidden("EXTRA_PNGINFO")
    RETURNS = ()

    def run(self, images: torch.Tensor, fps: float, filename_prefix: str, lossless: bool, quality: int,
            method: str, prompt: dict | None = None, extra_pnginfo: dict | None = None) -> dict:
        target = _target(images, filename_prefix, prompt, extra_pnginfo)
        results = animated.save_webp(images, target, kind="output", fps=fps, lossless=lossless, quality=quality,
                                     method=method, prompt=prompt, extra_pnginfo=extra_pnginfo)
        return {"ui": {"images": results, "animated": (len(images) != 1,)}}


@node("SaveAnimatedPNG", category="image/animation", display_name="SaveAnimatedPNG", output_node=True,
      function="save_images")
class SaveAnimatedPNG:
    images = Input("IMAGE")
    filename_prefix = String("ComfyUI")
    fps = Float(6.0, min=0.01, max=1000.0, step=0.01)
    compress_level = Int(4, min=0, max=9)
    prompt = Hidden("PROMPT")
    extra_pnginfo = Hidden("EXTRA_PNGINFO")
    RETURNS = ()

    def run(self, images: torch.Tensor, fps: float, compress_level: int, filename_prefix: str = "ComfyUI",
            prompt: dict | None = None, extra_pnginfo: dict | None = None) -> dict:
        target = _target(images, filename_prefix, prompt, extra_pnginfo)
        results = animated.save_apng(images, target, kind="output", fps=fps, compress_level=compress_level,
                                     prompt=prompt, extra_pnginfo=extra_pnginfo)
        return {"ui": {"images": results, "animated": (True,)}}


def output_images() -> list[str]:
    """Image files anywhere under the output folder, newest first (what LoadImageOutput offers)."""
    try:
        folder = services.folders().output
    except LookupError:
        return []
    if not folder.is_dir():
        return []
    found = [p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS]
    found.sort(key=lambda p: p.stat().st_mtime, reverse=True)
    return [p.relative_to(folder).as_posix() for p in found]


def _output_path(name: str) -> Path:
    return services.folders().annotated_path(name, "output")


@node("LoadImageOutput", category="image", display_name="Load Image (from Outputs)", experimental=True,
      function="load_image",
      description="Load an image from the output folder; the refresh button re-reads the list and picks "
                  "the newest image.")
class LoadImageOutput:
    image = Combo(output_images, image_upload=True, image_folder="output",
                  remote={"route": "/internal/files/output", "refresh_button": True,
                          "control_after_refresh": "first"})
    RETURNS = ("IMAGE", "MASK")

    def run(self, image: str) -> tuple[torch.Tensor, torch.Tensor]:
        return files.load_image(_output_path(image))

    @classmethod
    def IS_CHANGED(cls, image: str) -> str:
        return file_digest(image if "[" in image else f"{image} [output]")

    @classmethod
    def VALIDATE_INPUTS(cls, image: str) -> bool | str:
        try:
            return True if _output_path(image).is_file() else f"Invalid image file: {image}"
        except Exception as exc:  # a refused path is a validation failure, not a crash
            return f"Invalid image file: {image} ({exc})"


def _batch_images_class() -> type:
    # BatchImagesNode (not in ComfyUI 0.3.64; spec from the 2026 templates and ComfyUI's public
    # nodes_images.py): autogrow sockets images.image0 ... images.image49, category "image".
    namespace: dict = {f"images.image{i}": Input("IMAGE") if i == 0 else optional(Input("IMAGE"))
                       for i in range(50)}
    namespace["RETURNS"] = ("IMAGE",)

    def run(self, **images: torch.Tensor) -> tuple[torch.Tensor]:
        ordered = [images[f"images.image{i}"] for i in range(50) if images.get(f"images.image{i}") is not None]
        return (transform.batch_images(ordered),)

    namespace["run"] = run
    namespace["__module__"] = __name__
    return node("BatchImagesNode", category="image", display_name="Batch Images", function="execute",
                search_aliases=["batch", "image batch", "batch images", "combine images"])(
        type("BatchImagesNode", (), namespace))


BatchImagesNode = _batch_images_class()


def _preview(images: torch.Tensor | None, prefix: str) -> list[dict]:
    if images is None or len(images) == 0:
        return []
    return save_images(images, prefix, services.folders().temp, "temp", None, None, compress_level=1)["ui"]["images"]


@node("ImageCompare", category="image", display_name="Image Compare", output_node=True, experimental=True,
      function="execute", description="Compares two images side by side with a slider.")
class ImageCompare:
    # Not in ComfyUI 0.3.64; spec from the templates (image_a / image_b sockets, no saved widget
    # value) and ComfyUI's public nodes_image_compare.py. ComfyUI declares compare_view (the editor's
    # slider widget, type IMAGECOMPARE) required; it carries no value, so Plexus declares it optional.
    image_a = optional(Input("IMAGE"))
    image_b = optional(Input("IMAGE"))
    compare_view = optional(Input("IMAGECOMPARE"))
    RETURNS = ()

    def run(self, image_a: torch.Tensor | None = None, image_b: torch.Tensor | None = None,
            compare_view: object = None) -> dict:
        return {"ui": {"a_images": _preview(image_a, "comfy.compare.a"),
                       "b_images": _preview(image_b, "comfy.compare.b")}}
