"""CheckpointSave: MODEL + CLIP + VAE -> one `.safetensors` file in the original LDM single-file layout
(`model.diffusion_model.*`, `cond_stage_model.transformer.*`, `first_stage_model.*`), with each handle's
weight patches (LoRAs) merged in, and the prompt / workflow as metadata, so that the file loads again
here and in ComfyUI/A1111. Tensors are written one at a time (the file never sits in RAM).
"""
from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from torch import Tensor

from model_management import ModelHandle, apply_patches
from models.detection import UNET_PREFIX, VAE_PREFIX
from models.testing import write_safetensors_streaming

from .objects import Autoencoder, DiffusionModel, TextEncoders

TEXT_PREFIXES = {"clip_l": "cond_stage_model.transformer."}


def _patched(handle: ModelHandle, key: str) -> Tensor:
    weight = handle.shared.weights.home[key]
    patches = handle.patches.get(key)
    return apply_patches(weight, patches, key) if patches else weight


def _entries(handle: ModelHandle | None, file_key: Callable[[str], str | None]) -> dict[str, tuple[ModelHandle, str]]:
    if handle is None:
        return {}
    out = {}
    for key in handle.shared.weights.slots:
        name = file_key(key)
        if name is not None:
            out[name] = (handle, key)
    return out


def _text_key(key: str) -> str | None:
    kind, _, rest = key.removeprefix("towers.").partition(".")
    if kind not in TEXT_PREFIXES:
        raise ValueError(f"saving a {kind} text encoder in its original layout is not supported yet; "
                         f"only {', '.join(TEXT_PREFIXES)} is")
    return TEXT_PREFIXES[kind] + rest.removeprefix("model.")


def save_checkpoint(path: str | Path, model: DiffusionModel, clip: TextEncoders | None, vae: Autoencoder | None,
                    *, prompt: dict | None = None, extra_pnginfo: dict | None = None) -> Path:
    """Write the checkpoint; metadata carries `prompt` and each extra_pnginfo entry as JSON (ComfyUI)."""
    entries = {**_entries(model, lambda k: UNET_PREFIX + k), **_entries(clip, _text_key),
               **_entries(vae, lambda k: VAE_PREFIX + k)}
    metadata: dict[str, str] = {"format": "pt"}
    if prompt is not None:
        metadata["prompt"] = json.dumps(prompt)
    for key, value in (extra_pnginfo or {}).items():
        metadata[key] = json.dumps(value)
    config = model.model_config
    if config is not None and config.prediction_type == "v":
        metadata["modelspec.predict_key"] = "v"

    def make(name: str) -> Tensor:
        handle, key = entries[name]
        return _patched(handle, key).detach().cpu().contiguous()

    layout = {}
    for name, (handle, key) in entries.items():
        home = handle.shared.weights.home[key]
        layout[name] = (tuple(home.shape), home.dtype)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_safetensors_streaming(path, layout, make, metadata)
    return path

