"""ComfyUI's ``latent_preview`` for plugins: ``prepare_callback(model, steps, x0_output_dict)`` gives the
``callback(step, x0, x, total_steps)`` that reports progress (and a preview when the prompt asked for
one) through the running node, over diffusion.previews and the node context."""
from __future__ import annotations

from typing import Any, Callable

from execution.protocol import Preview, current_context
from nodes import services as _services

MAX_PREVIEW_RESOLUTION = 512


class LatentPreviewer:
    def decode_latent_to_preview(self, x0):
        raise NotImplementedError

    def decode_latent_to_preview_image(self, preview_format: str, x0) -> tuple:
        image = self.decode_latent_to_preview(x0)
        return preview_format, image, MAX_PREVIEW_RESOLUTION


class _PlexusPreviewer(LatentPreviewer):
    def __init__(self, previewer: Callable) -> None:
        self._previewer = previewer

    def decode_latent_to_preview(self, x0):
        from imaging.files import to_pil
        return to_pil(self._previewer(x0).float() / 255.0)


def get_previewer(device: Any, latent_format: Any, model: Any = None) -> LatentPreviewer | None:
    from diffusion import previews
    context = current_context()
    method = getattr(context, "preview_method", "none") if context is not None else "none"
    current = _services.installed()
    folders = current.folders.paths("vae_approx") if current is not None else ()
    if model is None:
        return None
    previewer = previews.previewer_for(model, folders, method)
    return _PlexusPreviewer(previewer) if previewer is not None else None


def prepare_callback(model: Any, steps: int, x0_output_dict: dict | None = None) -> Callable:
    from diffusion.ksampler import PREVIEW_MAX_PX, encode_jpeg
    previewer = get_previewer(None, model.latent_format, model)
    context = current_context()

    def callback(step: int, x0, x, total_steps: int) -> None:
        if x0_output_dict is not None:
            x0_output_dict["x0"] = x0
        if context is None:
            return
        context.check_interrupted()
        preview = None
        if previewer is not None:
            preview = Preview("JPEG", encode_jpeg(previewer._previewer(x0)), PREVIEW_MAX_PX)
        context.report_progress(step + 1, total_steps, preview=preview)

    return callback
