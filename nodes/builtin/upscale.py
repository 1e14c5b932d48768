"""Model-based image upscaling (ComfyUI's UpscaleModelLoader / ImageUpscaleWithModel); the work is in
diffusion.upscale."""
from __future__ import annotations

import torch

from diffusion import upscale
from execution.protocol import current_context
from nodes import services
from nodes.spec import Combo, Input, node


@node("UpscaleModelLoader", category="loaders", display_name="Load Upscale Model",
      description="Loads an ESRGAN / Real-ESRGAN (RRDBNet) upscale model from models/upscale_models.")
class UpscaleModelLoader:
    model_name = Combo(services.file_list("upscale_models"))
    RETURNS = ("UPSCALE_MODEL",)

    def run(self, model_name: str) -> tuple:
        path = services.folders().find("upscale_models", model_name)
        return (upscale.load_upscale_model_file(path, services.current().model_manager()),)


def _report_tile(done: int, total: int) -> None:
    context = current_context()
    if context is not None:
        context.check_interrupted()
        context.report_progress(done, total)


@node("ImageUpscaleWithModel", category="image/upscaling", display_name="Upscale Image (using Model)")
class ImageUpscaleWithModel:
    upscale_model = Input("UPSCALE_MODEL")
    image = Input("IMAGE")
    RETURNS = ("IMAGE",)

    def run(self, upscale_model, image: torch.Tensor) -> tuple:
        return (upscale.upscale_image(upscale_model, image, on_tile=_report_tile),)
