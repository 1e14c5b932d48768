"""CheckpointSave: MODEL + CLIP + VAE -> one `.safetensors` file in the original LDM single-file layout
(`model.diffusion_model.*`, `cond_stage_model.transformer.*`, `first_stage_model.*`), with each handle's
weight patches (LoRAs) merged in, and the prompt / workflow as metadata, so that the file loads again
here and in ComfyUI/A1111. Tensors are written one at a time (the file never sits in RAM).
ImageOnlyCheckpointSave writes MODEL + CLIP_VISION + VAE the same way (see `_vision_entries`).
"""
from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from model_management import ModelHandle, apply_patches
from models.convert.clip_vision import hf_to_open_clip
from models.convert.flux import SCALED_FP8_MARKER
from models.detection import UNCLIP_VISION_PREFIX, UNET_PREFIX, VAE_PREFIX
from models.testing import write_safetensors_streaming
from models.text.convert import to_open_clip_layout

from .objects import Autoencoder, DiffusionModel, TextEncoders

TEXT_PREFIXES = {"clip_l": "cond_stage_model.transformer.", "open_clip_h": "cond_stage_model.model.",
                 "clip_h": "cond_stage_model.model."}     # clip_h: ViT-H loaded from a HF-layout file

Entry = tuple[Callable[[], Tensor], tuple[int, ...], torch.dtype]   # (make the tensor, shape, dtype)


FP8_DTYPES = (torch.float8_e4m3fn, torch.float8_e5m2)


def _patched(handle: ModelHandle, key: str) -> Tensor:
    """The weight `key` as written: its patches merged in. A weight of a scaled fp8 file (ComfyUI
    `scaled_fp8`) is patched as its true value (weight * scale, float32) and stored again as fp8 of the same
    scale, rounded to nearest and clamped to the fp8 range (ComfyUI rounds stochastically here). Any other
    scaled weight (`--int8-unet`'s int8, which no file format holds) is written as its true value in fp16."""
    weights = handle.shared.weights
    weight = weights.home[key]
    patches = handle.patches.get(key)
    scale_key = weights.scales.get(key)
    if scale_key is None:
        return apply_patches(weight, patches, key) if patches else weight
    if weight.dtype not in FP8_DTYPES:
        true = weights.true_value(key, weight)
        return (apply_patches(true, patches, key, out_dtype=torch.float32) if patches else true).half()
    if not patches:
        return weight
    true = apply_patches(weights.true_value(key, weight), patches, key, out_dtype=torch.float32)
    limit = torch.finfo(weight.dtype).max
    return (true / weights.home[scale_key].float()).clamp_(-limit, limit).to(weight.dtype)


def _entries(handle: ModelHandle | None, file_key: Callable[[str], str],
             keys: list[str] | None = None) -> dict[str, Entry]:
    """The weights of `handle` (all, or `keys`) under their file names, made with patches merged only when
    written. Non-fp8 scaled weights are written as fp16 true values, without their scales."""
    if handle is None:
        return {}
    weights = handle.shared.weights
    home = weights.home
    widened = set(weights.scales) - set(_fp8_scaled(weights))
    dropped = {weights.scales[key] for key in widened}
    out = {}
    for key in (weights.slots if keys is None else keys):
        if key in dropped:
            continue
        dtype = torch.float16 if key in widened else home[key].dtype
        out[file_key(key)] = ((lambda key=key: _patched(handle, key)), tuple(home[key].shape), dtype)
    return out


def _fp8_scaled(weights) -> list[str]:
    return [key for key in weights.scales if weights.home[key].dtype in FP8_DTYPES]


def _scaled_fp8_marker(handle: ModelHandle | None) -> dict[str, Entry]:
    """ComfyUI's `scaled_fp8` marker (an empty tensor of the weights' fp8 dtype) when `handle` holds scaled
    fp8 weights: without it a loader would read those weights without their scales."""
    if handle is None:
        return {}
    scaled = _fp8_scaled(handle.shared.weights)
    if not scaled:
        return {}
    dtype = handle.shared.weights.home[scaled[0]].dtype
    return {UNET_PREFIX + SCALED_FP8_MARKER: ((lambda: torch.empty(0, dtype=dtype)), (0,), dtype)}


def _text_entries(clip: TextEncoders | None) -> dict[str, Entry]:
    """The text towers in their original layouts: CLIP-L as stored (HF names), OpenCLIP-H converted back
    (q, k, v fused into in_proj, projection transposed: models.text.convert's inverse mapping)."""
    if clip is None:
        return {}
    out: dict[str, Entry] = {}
    for kind, tower in clip.module.towers.items():
        if kind not in TEXT_PREFIXES:
            raise ValueError(f"saving a {kind} text encoder in its original layout is not supported yet; "
                             f"only {', '.join(TEXT_PREFIXES)} are")
        prefix = f"towers.{kind}.model."
        keys = [k for k in clip.shared.weights.slots if k.startswith(prefix)]
        if kind == "clip_l":
            out.update(_entries(clip, lambda k: TEXT_PREFIXES["clip_l"] + k.removeprefix(prefix), keys))
            continue
        hf = {k.removeprefix(prefix): _patched(clip, k) for k in keys}
        dtype = next(iter(hf.values())).dtype
        converted = to_open_clip_layout(hf, tower.config, dtype)
        out.update({TEXT_PREFIXES[kind] + name: ((lambda t=t: t), tuple(t.shape), t.dtype)
                    for name, t in converted.items()})
    return out


def _vision_entries(vision: Any, model: DiffusionModel) -> dict[str, Entry]:
    """The CLIP vision tower (ImageOnlyCheckpointSave). ComfyUI puts it under the model family's
    `clip_vision_prefix`, which no family Plexus loads has except SD2.1 unCLIP (`embedder.model.visual.`):
    so its Hugging Face names at the top level (what CLIPVisionLoader reads back), and for an unCLIP model
    the OpenCLIP layout under that prefix, as the original unCLIP files store it (ComfyUI writes Hugging
    Face names there, which neither loader reads back)."""
    if vision is None:
        return {}
    config = model.model_config
    if config is None or getattr(config, "variant", None) != "unclip":
        return _entries(vision, lambda k: k)
    hf = {key: _patched(vision, key) for key in vision.shared.weights.slots}
    return {name: ((lambda t=t: t), tuple(t.shape), t.dtype)
            for name, t in hf_to_open_clip(hf, UNCLIP_VISION_PREFIX).items()}


def save_checkpoint(path: str | Path, model: DiffusionModel, clip: TextEncoders | None, vae: Autoencoder | None,
                    *, clip_vision: Any = None, prompt: dict | None = None,
                    extra_pnginfo: dict | None = None) -> Path:
    """Write the checkpoint; metadata carries `prompt` and each extra_pnginfo entry as JSON (ComfyUI).
    `clip_vision` (a diffusion.clip_vision.ClipVision) is ImageOnlyCheckpointSave's tower (_vision_entries)."""
    for handle in (model, clip, vae, clip_vision):
        manager = getattr(handle, "manager", None)
        if handle is not None and manager is not None:
            manager.unload(handle)      # the base tensors may hold another clone's patches, merged in place
    entries = {**_entries(model, lambda k: UNET_PREFIX + k), **_scaled_fp8_marker(model), **_text_entries(clip),
               **_entries(vae, lambda k: VAE_PREFIX + k), **_vision_entries(clip_vision, model)}
    metadata: dict[str, str] = {"format": "pt"}
    if prompt is not None:
        metadata["prompt"] = json.dumps(prompt)
    for key, value in (extra_pnginfo or {}).items():
        metadata[key] = json.dumps(value)
    config = model.model_config
    if config is not None and config.prediction_type == "v":
        metadata["modelspec.predict_key"] = "v"

    def make(name: str) -> Tensor:
        return entries[name][0]().detach().cpu().contiguous()

    layout = {name: (shape, dtype) for name, (_, shape, dtype) in entries.items()}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_safetensors_streaming(path, layout, make, metadata)
    return path

