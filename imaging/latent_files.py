"""`.latent` files: a safetensors file with "latent_tensor" and a version marker, as ComfyUI writes them."""
from __future__ import annotations

import json
from pathlib import Path

import safetensors.torch
import torch

from execution.errors import PlexusError

VERSION_KEY = "latent_format_version_0"
# Files without the version marker were written with the SD1 scale already applied.
LEGACY_SCALE = 0.18215


def save_latent(samples: torch.Tensor, path: Path, *, prompt: dict | None = None,
                extra_pnginfo: dict | None = None) -> None:
    metadata = {"prompt": json.dumps(prompt) if prompt is not None else ""}
    for key, value in (extra_pnginfo or {}).items():
        metadata[key] = json.dumps(value)
    tensors = {"latent_tensor": samples.detach().contiguous().cpu(), VERSION_KEY: torch.tensor([])}
    safetensors.torch.save_file(tensors, str(path), metadata=metadata)


def load_latent(path: Path) -> dict:
    try:
        tensors = safetensors.torch.load_file(str(path), device="cpu")
    except Exception as exc:  # safetensors raises its own error types for truncated/corrupt files
        raise PlexusError("invalid_latent", "The file is not a readable .latent file", f"{path.name}: {exc}") from exc
    if "latent_tensor" not in tensors:
        raise PlexusError("invalid_latent", "The file has no 'latent_tensor'", f"{path.name}: keys {sorted(tensors)}")
    multiplier = 1.0 if VERSION_KEY in tensors else 1.0 / LEGACY_SCALE
    return {"samples": tensors["latent_tensor"].float() * multiplier}
