"""Pure-Python test nodes for the server tests: an image "generator" with progress and previews,
a gate the test opens (or the user interrupts), a node that fails, and a SaveImage that writes PNGs
with ComfyUI's metadata. They use only ``execution.protocol``, like any plugin node."""

from __future__ import annotations

import io
import json
import threading
from typing import Any

from PIL import Image, PngImagePlugin

from execution.protocol import Preview, current_context

GATES: dict[str, threading.Event] = {}  # name -> event a GateNode waits for (tests release it)
ENTERED: dict[str, threading.Event] = {}  # name -> set when a GateNode starts waiting


# --- test nodes --------------------------------------------------------------------------------------
def _png(image: Image.Image) -> bytes:
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


class MakeImage:
    """'Generates' an image: a colour from the seed, with progress and, like a sampler, a JPEG preview
    per step when the prompt's preview method is not "none"."""

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {
            "required": {
                "seed": ("INT", {"default": 0, "min": 0, "max": 2**32, "control_after_generate": True}),
                "steps": ("INT", {"default": 3, "min": 1, "max": 100}),
                "width": ("INT", {"default": 32, "min": 8, "max": 512}),
                "height": ("INT", {"default": 32, "min": 8, "max": 512}),
            }
        }

    RETURN_TYPES = ("IMAGE",)
    FUNCTION = "run"
    CATEGORY = "test"

    def run(self, seed: int, steps: int, width: int, height: int) -> tuple[Any]:
        colour = ((seed * 97) % 256, (seed * 57) % 256, (seed * 31) % 256)
        image = Image.new("RGB", (width, height), colour)
        context = current_context()
        for step in range(steps):
            out = io.BytesIO()
            image.save(out, format="JPEG")
            if context is not None:
                wants = context.preview_method != "none"
                context.report_progress(step + 1, steps, Preview("JPEG", out.getvalue()) if wants else None)
        return (image,)


class Gate:
    """Passes an image through once the test releases the gate ``name`` (or the prompt is interrupted)."""

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {"image": ("IMAGE",), "name": ("STRING", {"default": "gate"})}}

    RETURN_TYPES = ("IMAGE",)
    FUNCTION = "run"
    CATEGORY = "test"

    def run(self, image: Any, name: str) -> tuple[Any]:
        gate = GATES.setdefault(name, threading.Event())
        ENTERED.setdefault(name, threading.Event()).set()
        context = current_context()
        while not gate.wait(0.01):
            if context is not None:
                context.check_interrupted()
        return (image,)


class Fail:
    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {"image": ("IMAGE",), "message": ("STRING", {"default": "boom"})}}

    RETURN_TYPES = ("IMAGE",)
    FUNCTION = "run"
    CATEGORY = "test"

    def run(self, image: Any, message: str) -> tuple[Any]:
        raise ValueError(message)


def make_save_image(folders: Any) -> type:
    class SaveImage:
        """Saves PNGs with the prompt and workflow in their text chunks (ComfyUI's metadata)."""

        @classmethod
        def INPUT_TYPES(cls) -> dict[str, Any]:
            return {
                "required": {"images": ("IMAGE",), "filename_prefix": ("STRING", {"default": "Plexus"})},
                "hidden": {"prompt": "PROMPT", "extra_pnginfo": "EXTRA_PNGINFO"},
            }

        RETURN_TYPES = ()
        FUNCTION = "save"
        OUTPUT_NODE = True
        CATEGORY = "image"

        def save(
            self, images: Any, filename_prefix: str, prompt: Any = None, extra_pnginfo: Any = None
        ) -> dict:
            target = folders.save_target(filename_prefix, images.width, images.height)
            info = PngImagePlugin.PngInfo()
            if prompt is not None:
                info.add_text("prompt", json.dumps(prompt))
            for key, value in (extra_pnginfo or {}).items():
                info.add_text(key, json.dumps(value))
            path = target.path("png")
            images.save(path, pnginfo=info)
            return {
                "ui": {"images": [{"filename": path.name, "subfolder": target.subfolder, "type": "output"}]}
            }

    return SaveImage


def make_registry(folders: Any) -> Any:
    from execution.registry import NodeRegistry

    registry = NodeRegistry()
    registry.register("MakeImage", MakeImage, "Make image (test)")
    registry.register("Gate", Gate)
    registry.register("Fail", Fail)
    registry.register("SaveImage", make_save_image(folders), "Save Image")
    return registry


def txt2img(
    seed: int = 1, steps: int = 3, prefix: str = "test", gate: str | None = None, fail: bool = False
) -> dict[str, Any]:
    """A prompt in API format: MakeImage -> [Gate] -> [Fail] -> SaveImage."""
    prompt: dict[str, Any] = {
        "1": {"class_type": "MakeImage", "inputs": {"seed": seed, "steps": steps, "width": 32, "height": 32}}
    }
    last = "1"
    if gate:
        prompt["2"] = {"class_type": "Gate", "inputs": {"image": [last, 0], "name": gate}}
        last = "2"
    if fail:
        prompt["3"] = {"class_type": "Fail", "inputs": {"image": [last, 0], "message": "planned failure"}}
        last = "3"
    prompt["9"] = {"class_type": "SaveImage", "inputs": {"images": [last, 0], "filename_prefix": prefix}}
    return prompt
