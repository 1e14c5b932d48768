"""ModelSave, CLIPSave and VAESave: one part of a model in the file layout ComfyUI writes for it, with each
handle's weight patches (LoRAs, merges) applied as the tensors are written, and the prompt / workflow as
metadata. The files load again here (UNETLoader, CLIPLoader, VAELoader) and in ComfyUI.

- ModelSave: the diffusion model alone under `model.diffusion_model.` (diffusion.saving with no CLIP/VAE);
- VAESave: the AutoencoderKL's own keys (`encoder.*`, `decoder.*`, `quant_conv.*`, ...), no prefix;
- CLIPSave: one file per text tower, `<prefix>_<tower>_<counter>_.safetensors`, in the Hugging Face layout
  ComfyUI keeps (`text_model.encoder.layers.0...`): tower names clip_l, clip_h (OpenCLIP-H), clip_g.
"""
from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from .objects import Autoencoder, DiffusionModel, TextEncoders
from .saving import _entries, save_checkpoint

# Plexus tower kind -> ComfyUI's name for it in CLIP state dicts and CLIPSave file names
COMFY_TOWER_NAMES = {"clip_l": "clip_l", "open_clip_h": "clip_h", "clip_h": "clip_h", "open_clip_g": "clip_g",
                     "clip_g": "clip_g"}


def _metadata(prompt: dict | None, extra_pnginfo: dict | None, *, has_format: bool) -> dict[str, str]:
    metadata: dict[str, str] = {"format": "pt"} if has_format else {}
    metadata["prompt"] = json.dumps(prompt) if prompt is not None else ""
    for key, value in (extra_pnginfo or {}).items():
        metadata[key] = json.dumps(value)
    return metadata


def _unloaded(handle) -> None:
    manager = getattr(handle, "manager", None)
    if manager is not None:
        manager.unload(handle)      # base tensors may hold another clone's patches, merged in place


def _write(path: Path, entries: dict, metadata: dict[str, str]) -> Path:
    from models.testing import write_safetensors_streaming
    layout = {name: (shape, dtype) for name, (_, shape, dtype) in entries.items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    write_safetensors_streaming(path, layout, lambda name: entries[name][0]().detach().cpu().contiguous(), metadata)
    return path


def save_model(path: str | Path, model: DiffusionModel, *, prompt: dict | None = None,
               extra_pnginfo: dict | None = None) -> Path:
    return save_checkpoint(path, model, None, None, prompt=prompt, extra_pnginfo=extra_pnginfo)


def save_vae(path: str | Path, vae: Autoencoder, *, prompt: dict | None = None,
             extra_pnginfo: dict | None = None) -> Path:
    _unloaded(vae)
    return _write(Path(path), _entries(vae, lambda k: k), _metadata(prompt, extra_pnginfo, has_format=False))


def save_clip(path_for: Callable[[str], Path], clip: TextEncoders, *, prompt: dict | None = None,
              extra_pnginfo: dict | None = None) -> list[Path]:
    """One file per tower; `path_for(tower_name)` gives its path (the node adds the name to the prefix)."""
    _unloaded(clip)
    written = []
    for kind in clip.module.towers:
        name = COMFY_TOWER_NAMES.get(kind)
        if name is None:
            raise ValueError(f"saving a {kind} text encoder is not supported; supported: {', '.join(COMFY_TOWER_NAMES)}")
        prefix = f"towers.{kind}.model."
        keys = [k for k in clip.shared.weights.slots if k.startswith(prefix)]
        if not keys:
            raise ValueError(f"the {kind} text encoder has no weights under {prefix!r}; cannot save it")
        entries = _entries(clip, lambda k, p=prefix: k.removeprefix(p), keys)
        written.append(_write(Path(path_for(name)), entries, _metadata(prompt, extra_pnginfo, has_format=True)))
    return written
