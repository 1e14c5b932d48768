"""The data and result nodes of ComfyUI's LoRA training set (comfy_extras/nodes_train): the image (and
caption) data set loaders, LoraModelLoader / SaveLoRANode for a LORA_MODEL (a LoRA state dict in memory)
and LossGraphNode. TrainLoraNode itself is not here (issue 18's notes). Each wraps `imaging.training`,
`models.lora.apply_lora` or a safetensors write."""
from __future__ import annotations

import os
from datetime import datetime

from safetensors.torch import save_file

from diffusion import conditioning
from imaging import training
from imaging.files import png_metadata
from models.lora import apply_lora
from nodes import services
from nodes.spec import Combo, Float, Hidden, Input, Int, String, node, optional
from storage.safe_paths import resolve_inside


def input_subfolders() -> list[str]:
    """Every folder below the input folder, relative with '/', sorted (ComfyUI's get_input_subfolders)."""
    if services.installed() is None:
        return []
    root = services.folders().input
    found = []
    for folder, _, _ in os.walk(root):
        relative = os.path.relpath(folder, root)
        if relative != ".":
            found.append(relative.replace(os.sep, "/"))
    return sorted(found)


def _dataset_folder(folder: str):
    return resolve_inside(services.folders().input, folder)


@node("LoadImageSetFromFolderNode", category="loaders", display_name="Load Image Dataset from Folder",
      experimental=True, function="load_images")
class LoadImageSetFromFolderNode:
    folder = Combo(input_subfolders)
    resize_method = optional(Combo(training.RESIZE_METHODS, default="None"))
    RETURNS = ("IMAGE",)

    def run(self, folder: str, resize_method: str = "None") -> tuple:
        return (training.load_image_set(training.dataset_images(_dataset_folder(folder)), resize_method),)


@node("LoadImageTextSetFromFolderNode", category="loaders", display_name="Load Image and Text Dataset from Folder",
      experimental=True, function="load_images")
class LoadImageTextSetFromFolderNode:
    """One CONDITIONING entry per image, from the caption beside it ("" without one). ComfyUI 0.3.64 adds
    a second entry for each image without a caption (a slip in its loop); Plexus keeps one per image."""
    folder = Combo(input_subfolders)
    clip = Input("CLIP")
    resize_method = optional(Combo(training.RESIZE_METHODS, default="None"))
    width = optional(Int(-1, min=-1, max=10000, step=1))
    height = optional(Int(-1, min=-1, max=10000, step=1))
    RETURNS = ("IMAGE", "CONDITIONING")

    def run(self, folder: str, clip, resize_method: str = "None", width: int = -1, height: int = -1) -> tuple:
        paths = training.dataset_images(_dataset_folder(folder), kohya_repeats=True)
        images = training.load_image_set(paths, resize_method, None if width == -1 else width,
                                         None if height == -1 else height)
        encoded: dict[str, list] = {}
        entries = []
        for text in training.captions(paths):
            if text not in encoded:
                encoded[text] = conditioning.encode_text(clip, text)
            entries.extend(encoded[text])
        return (images, entries)


@node("LoraModelLoader", category="loaders", display_name="Load LoRA Model", experimental=True,
      function="load_lora_model")
class LoraModelLoader:
    model = Input("MODEL")
    lora = Input("LORA_MODEL")
    strength_model = Float(1.0, min=-100.0, max=100.0, step=0.01)
    RETURNS = ("MODEL",)

    def run(self, model, lora: dict, strength_model: float) -> tuple:
        if strength_model == 0:
            return (model,)
        patched, _, _ = apply_lora(model, None, lora, strength_model, 0.0, "LORA_MODEL")
        return (patched,)


@node("SaveLoRANode", category="loaders", display_name="Save LoRA Weights", output_node=True, experimental=True,
      function="save")
class SaveLoRANode:
    lora = Input("LORA_MODEL")
    prefix = String("loras/ComfyUI_trained_lora")
    steps = optional(Int(force_input=True))
    RETURNS = ()

    def run(self, lora: dict, prefix: str, steps: int | None = None) -> dict:
        target = services.folders().save_target(prefix)
        middle = "" if steps is None else f"{steps}_steps_"
        save_file({k: v.contiguous() for k, v in lora.items()},
                  str(target.folder / f"{target.filename}_{middle}{target.counter:05}_.safetensors"))
        return {}


@node("LossGraphNode", category="training", display_name="Plot Loss Graph", output_node=True, experimental=True,
      function="plot_loss")
class LossGraphNode:
    loss = Input("LOSS_MAP", default={})
    filename_prefix = String("loss_graph")
    prompt = Hidden("PROMPT")
    extra_pnginfo = Hidden("EXTRA_PNGINFO")
    RETURNS = ()

    def run(self, loss: dict, filename_prefix: str, prompt=None, extra_pnginfo=None) -> dict:
        image = training.loss_graph(list(loss["loss"]))
        name = f"{filename_prefix}_{datetime.now().strftime('%Y%m%d_%H%M%S')}.png"
        folder = services.folders().temp
        folder.mkdir(parents=True, exist_ok=True)
        image.save(resolve_inside(folder, name), pnginfo=png_metadata(prompt, extra_pnginfo))
        return {"ui": {"images": [{"filename": name, "subfolder": "", "type": "temp"}]}}
