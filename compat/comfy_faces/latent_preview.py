"""ComfyUI's ``latent_preview`` for plugins: ``prepare_callback(model, steps, x0_output_dict)`` gives the
``callback(step, x0, x, total_steps)`` that reports progress (and a preview when the prompt asked for
one) through the running node, over diffusion.previews and the node context."""
from __future__ import annotations

from pathlib import Path
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


def preview_to_image(latent_image):
    """An ``[H, W, 3]`` image in -1..1 as a PIL image (ComfyUI's helper of the same name)."""
    import torch
    from PIL import Image

    ubyte = ((latent_image.float() + 1.0) / 2.0).clamp(0, 1).mul(255).to(device="cpu", dtype=torch.uint8)
    return Image.fromarray(ubyte.numpy())


class TAESD:
    """ComfyUI's ``TAESD(encoder_path, decoder_path, latent_channels)`` (re-exported by its latent_preview):
    the tiny decoder over ``diffusion.previews``; ``decode(latent)`` gives images in -1..1 (``[B, 3, H, W]``).
    Plexus has no TAESD encoder, so an ``encoder_path`` is refused rather than ignored."""

    def __new__(cls, encoder_path=None, decoder_path=None, latent_channels: int = 4):
        if encoder_path is not None:
            raise NotImplementedError("Plexus's TAESD face decodes only (no TAESD encoder)")
        if decoder_path is None:
            raise ValueError("TAESD needs decoder_path (a taesd decoder file from models/vae_approx)")
        from diffusion import previews

        return _TaesdDecodeModule(previews.load_taesd_decoder(Path(decoder_path), int(latent_channels)))


class _TaesdDecodeModule:
    def __init__(self, decoder) -> None:
        self.taesd_decoder = decoder

    def to(self, *args, **kwargs):
        return self                       # the decoder stays on the CPU, where previews are made

    def decode(self, x):
        import torch

        with torch.inference_mode():
            out = self.taesd_decoder(x.float().cpu())
        return out.sub(0.5).mul(2)


class TAESDPreviewerImpl(LatentPreviewer):
    def __init__(self, taesd) -> None:
        self.taesd = taesd

    def decode_latent_to_preview(self, x0):
        return preview_to_image(self.taesd.decode(x0[:1])[0].movedim(0, 2))


class Latent2RGBPreviewer(LatentPreviewer):
    """The linear latent -> RGB preview from a latent format's ``latent_rgb_factors`` (channels x 3)."""

    def __init__(self, latent_rgb_factors, latent_rgb_factors_bias=None) -> None:
        import torch

        self.latent_rgb_factors = torch.tensor(latent_rgb_factors, dtype=torch.float32).transpose(0, 1)
        self.latent_rgb_factors_bias = (None if latent_rgb_factors_bias is None
                                        else torch.tensor(latent_rgb_factors_bias, dtype=torch.float32))

    def decode_latent_to_preview(self, x0):
        import torch

        x = x0[0, :, 0] if x0.ndim == 5 else x0[0]
        image = torch.nn.functional.linear(x.float().cpu().movedim(0, -1), self.latent_rgb_factors,
                                           self.latent_rgb_factors_bias)
        return preview_to_image(image)
