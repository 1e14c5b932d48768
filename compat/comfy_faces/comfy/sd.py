"""ComfyUI's ``comfy.sd`` for plugins, over diffusion.loading and models.lora:
``load_checkpoint_guess_config``, ``load_diffusion_model``, ``load_lora_for_models``, and the ``VAE`` /
``CLIP`` types (``isinstance(vae, comfy.sd.VAE)`` holds for Plexus's VAE / CLIP objects; ``VAE(sd=...)``
builds a VAE from a state dict through Plexus's VAE loader)."""
from __future__ import annotations

import abc
import os
import tempfile
from typing import Any

from diffusion import loading as _loading
from diffusion.objects import Autoencoder, TextEncoders
from nodes import services as _services


def _manager():
    return _services.current().model_manager()


class VAE(abc.ABC):
    def __new__(cls, sd: dict | None = None, device: Any = None, config: Any = None, dtype: Any = None, **_: Any):
        if sd is None:
            raise NotImplementedError("comfy.sd.VAE() needs sd= (a VAE state dict) in Plexus")
        from safetensors.torch import save_file
        with tempfile.TemporaryDirectory() as folder:
            path = os.path.join(folder, "vae.safetensors")
            save_file({k: v.contiguous() for k, v in sd.items()}, path)
            return _loading.load_vae_file(path, _manager())


class CLIP(abc.ABC):
    def __new__(cls, *args: Any, **kwargs: Any):
        raise NotImplementedError("comfy.sd.CLIP(...): Plexus builds text encoders in its own loaders; use "
                                  "comfy.sd.load_checkpoint_guess_config or a CLIP input")


VAE.register(Autoencoder)
CLIP.register(TextEncoders)


def load_checkpoint_guess_config(ckpt_path: str, output_vae: bool = True, output_clip: bool = True,
                                 output_clipvision: bool = False, embedding_directory: Any = None,
                                 output_model: bool = True, **_: Any) -> tuple:
    """(MODEL, CLIP, VAE, CLIP_VISION) of a single-file checkpoint; CLIP_VISION (asked for with
    output_clipvision) is an unCLIP file's bundled tower, None otherwise (as in ComfyUI)."""
    if isinstance(embedding_directory, (str, os.PathLike)):
        embedding_directory = [embedding_directory]
    if output_clipvision:
        from diffusion import unclip as _unclip
        model, clip, vae, vision = _unclip.load_unclip_checkpoint(ckpt_path, _manager(),
                                                                   embedding_dirs=embedding_directory or ())
    else:
        model, clip, vae = _loading.load_checkpoint_file(ckpt_path, _manager(),
                                                         embedding_dirs=embedding_directory or ())
        vision = None
    return (model if output_model else None, clip if output_clip else None, vae if output_vae else None, vision)


def load_diffusion_model(unet_path: str, model_options: dict | None = None) -> Any:
    return _loading.load_unet_file(unet_path, _manager())


def load_lora_for_models(model: Any, clip: Any, lora: dict, strength_model: float, strength_clip: float) -> tuple:
    """(MODEL clone, CLIP clone) with the LoRA state dict's patches (models.lora.apply_lora)."""
    from models.lora import apply_lora
    new_model, new_clip, _report = apply_lora(model, clip, lora, strength_model, strength_clip, "plugin LoRA")
    return new_model, new_clip
