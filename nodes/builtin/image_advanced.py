"""The newer V3 image nodes with DynamicCombo inputs: ResizeImageMaskNode and SaveImageAdvanced (the
official templates' resize and save nodes, newer than ComfyUI 0.3.64).

Their specs follow ComfyUI's public comfy_extras/nodes_images.py / nodes_post_processing.py as found with
the search tool, and the templates' saved widgets (["scale dimensions", 512, 512, "center", "area"],
["ComfyUI", "png", "8-bit", "sRGB"]) and API prompts ("resize_type.width", "format.bit_depth"):

- ResizeImageMaskNode ("transform", "Resize Image/Mask"): ``input`` IMAGE or MASK (ComfyUI's MatchType,
  declared "IMAGE,MASK" here), DynamicCombo ``resize_type`` (imaging.resize_modes.RESIZE_TYPES, each with
  its own inputs), ``scale_method`` (default "area"); output ``resized`` of the input's type.
- SaveImageAdvanced ("image", "Save Image (Advanced)", output node): ``images``, ``filename_prefix``,
  DynamicCombo ``format``: png (bit_depth 8-bit / 16-bit, input_color_space sRGB), exr, avif (with their
  own widgets); output ``images`` (the input, passed on). Plexus writes png and 8-bit sRGB avif
  (imaging.avif, Pillow's libavif); exr, 10-bit and HDR avif are refused with a clear error (no EXR /
  10-bit AV1 encoder here).
"""
from __future__ import annotations

import torch

from execution.errors import PlexusError
from imaging import avif, files, png_deep, resize_modes
from nodes import services
from nodes.spec import Combo, DynamicCombo, Float, Hidden, Input, Int, Output, String, node

MAX_RESOLUTION = 16384


def _side(name: str) -> tuple[str, Int]:
    return (name, Int(512, min=0, max=MAX_RESOLUTION, step=1))


def _crop() -> tuple[str, Combo]:
    return ("crop", Combo(resize_modes.CROPS, default="center"))


RESIZE_OPTIONS = {
    "scale dimensions": [_side("width"), _side("height"), _crop()],
    "scale by multiplier": [("multiplier", Float(1.00, min=0.01, max=8.0, step=0.01))],
    "scale longer dimension": [_side("longer_size")],
    "scale shorter dimension": [_side("shorter_size")],
    "scale width": [_side("width")],
    "scale height": [_side("height")],
    "scale total pixels": [("megapixels", Float(1.0, min=0.01, max=16.0, step=0.01))],
    "match size": [("match", Input("IMAGE,MASK")), _crop()],
    "scale to multiple": [("multiple", Int(8, min=1, max=MAX_RESOLUTION, step=1))],
}


@node("ResizeImageMaskNode", category="transform", display_name="Resize Image/Mask", function="execute",
      description="Resize an image or mask using various scaling methods.",
      search_aliases=["resize", "resize image", "resize mask", "scale", "scale image", "scale mask",
                      "image resize", "change size", "dimensions", "shrink", "enlarge"])
class ResizeImageMaskNode:
    input = Input("IMAGE,MASK")
    resize_type = DynamicCombo(RESIZE_OPTIONS)
    scale_method = Combo(resize_modes.SCALE_METHODS, default="area")
    RETURNS = (Output("IMAGE,MASK", name="resized"),)

    def run(self, input: torch.Tensor, resize_type: dict, scale_method: str) -> tuple:  # noqa: A002 - ComfyUI's name
        params = {key: value for key, value in resize_type.items() if key != "resize_type"}
        return (resize_modes.resize_by_type(input, resize_type["resize_type"], params, scale_method),)


def _advanced(descriptor: Input) -> Input:
    descriptor.options["advanced"] = True
    return descriptor


SAVE_FORMATS = {
    "png": [("bit_depth", _advanced(Combo(png_deep.BIT_DEPTHS, default="8-bit"))),
            ("input_color_space", _advanced(Combo(["sRGB"], default="sRGB")))],
    "exr": [("bit_depth", _advanced(Combo(["32-bit float"], default="32-bit float"))),
            ("input_color_space", _advanced(Combo(["sRGB", "HDR", "linear"], default="sRGB")))],
    "avif": [("bit_depth", _advanced(Combo(["auto", "8-bit YUV420", "10-bit YUV420"], default="auto"))),
             ("input_color_space", _advanced(Combo(["sRGB", "HDR", "HDR PQ"], default="sRGB"))),
             ("crf", _advanced(Int(18, min=1, max=63))),
             ("save_mode", DynamicCombo({
                 "still images": [],
                 "animated": [("fps", Float(6.0, min=0.01, max=1000.0, step=0.01)),
                              ("loop_count", _advanced(Int(0, min=0, max=1000)))],
             }, display_name="save mode"))],
}


@node("SaveImageAdvanced", category="image", display_name="Save Image (Advanced)", output_node=True,
      function="execute", description="Saves the input images to your ComfyUI output directory.",
      search_aliases=["save", "save image", "export image", "output image", "write image"])
class SaveImageAdvanced:
    images = Input("IMAGE")
    filename_prefix = String("ComfyUI")
    format = DynamicCombo(SAVE_FORMATS)
    prompt = Hidden("PROMPT")
    extra_pnginfo = Hidden("EXTRA_PNGINFO")
    RETURNS = (Output("IMAGE", name="images"),)

    def run(self, images: torch.Tensor, filename_prefix: str, format: dict, prompt: dict | None = None,  # noqa: A002
            extra_pnginfo: dict | None = None) -> dict:
        if format["format"] not in ("png", "avif"):
            raise PlexusError("unsupported_format", f"SaveImageAdvanced input 'format': Plexus cannot write "
                              f"{format['format']} files yet", "choose png (8-bit or 16-bit) or avif (8-bit)")
        workflow = (extra_pnginfo or {}).get("workflow")
        prefix = files.expand_prefix(filename_prefix, prompt=prompt, workflow=workflow)
        target = services.folders().save_target(prefix, images.shape[2], images.shape[1])
        if format["format"] == "avif":
            return {"ui": {"images": _save_avif(images, target, format)}, "result": (images,)}
        results = png_deep.save_png_images(images, target, bit_depth=format["bit_depth"], prompt=prompt,
                                           extra_pnginfo=extra_pnginfo)
        return {"ui": {"images": results}, "result": (images,)}


def _save_avif(images: torch.Tensor, target, format: dict) -> list[dict]:  # noqa: A002
    mode = format.get("save_mode") or {}
    if isinstance(mode, str):       # a choice whose option has no inputs stays a plain value
        mode = {"save_mode": mode}
    try:
        return avif.save_avif_images(images, target, bit_depth=format["bit_depth"],
                                     color_space=format["input_color_space"], crf=format["crf"],
                                     animated=mode.get("save_mode") == "animated", fps=mode.get("fps", 6.0),
                                     loop_count=mode.get("loop_count", 0))
    except avif.AvifError as exc:
        raise PlexusError("unsupported_format", f"SaveImageAdvanced input 'format' (avif): {exc}") from exc
