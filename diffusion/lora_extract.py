"""LoraSave ("Extract and Save Lora"): a MODEL and/or CLIP holding a weight difference (usually
ModelMergeSubtract / CLIPMergeSubtract output) written as a LoRA file in ComfyUI's key layout:

- diffusion model: `diffusion_model.<UNet / MM-DiT module>.lora_up.weight` / `.lora_down.weight`;
- text towers: `text_encoders.<clip_l|clip_h|clip_g>.transformer.<HF module>.lora_up.weight` ...;
- "standard": matrices and convolutions as truncated-SVD factors (models.lora.extract), 1-D weights as
  `.diff` when `bias_diff`; "full_diff": every weight as `.diff`; biases as `.diff_b` when `bias_diff`.
All in fp16. Plexus's LoRA loader and ComfyUI's read these names.
"""
from __future__ import annotations

import logging
from pathlib import Path

import torch
from torch import Tensor

from models.lora.extract import extract_lora, write_lora_file
from models.lora.keys import COMFY_TOWER_NAMES

from .saving import _patched

log = logging.getLogger(__name__)
LORA_TYPES = ["standard", "full_diff"]


def _lora_entries(handle, name_of, rank: int, lora_type: str, bias_diff: bool, out: dict[str, Tensor]) -> None:
    manager = getattr(handle, "manager", None)
    if manager is not None:
        manager.unload(handle)      # base tensors may hold another clone's patches, merged in place
    for key in handle.shared.weights.slots:
        module = name_of(key)
        if module is None:
            continue
        if key.endswith(".bias"):
            if bias_diff:
                out[f"{module}.diff_b"] = _patched(handle, key).float().half().contiguous()
            continue
        if not key.endswith(".weight"):
            continue
        diff = _patched(handle, key).float()
        if lora_type == "full_diff" or diff.ndim < 2:
            if lora_type == "full_diff" or bias_diff:
                out[f"{module}.diff"] = diff.half().contiguous()
            continue
        try:
            up, down = extract_lora(diff, rank)
        except (RuntimeError, torch.linalg.LinAlgError) as exc:
            log.warning("LoraSave: no LoRA factors for %s (%s); is its difference zero?", key, exc)
            continue
        out[f"{module}.lora_up.weight"] = up.half().contiguous()
        out[f"{module}.lora_down.weight"] = down.half().contiguous()


def _unet_name(key: str) -> str | None:
    stem = key.rsplit(".", 1)[0]
    return f"diffusion_model.{stem}"


def _text_name(key: str) -> str | None:
    parts = key.split(".", 3)                      # towers.<kind>.model.<hf...>
    if len(parts) < 4 or parts[0] != "towers" or parts[2] != "model" or parts[1] not in COMFY_TOWER_NAMES:
        return None
    return f"text_encoders.{COMFY_TOWER_NAMES[parts[1]]}.transformer.{parts[3].rsplit('.', 1)[0]}"


def extract_lora_file(path: str | Path, model_diff=None, text_encoder_diff=None, *, rank: int = 8,
                      lora_type: str = "standard", bias_diff: bool = True) -> Path | None:
    """Write the LoRA of the given differences; None (nothing written) when both are absent."""
    if lora_type not in LORA_TYPES:
        raise ValueError(f"lora_type {lora_type!r} is not one of {', '.join(LORA_TYPES)}")
    if model_diff is None and text_encoder_diff is None:
        return None
    tensors: dict[str, Tensor] = {}
    if model_diff is not None:
        _lora_entries(model_diff, _unet_name, rank, lora_type, bias_diff, tensors)
    if text_encoder_diff is not None:
        _lora_entries(text_encoder_diff, _text_name, rank, lora_type, bias_diff, tensors)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_lora_file(path, tensors)
    return path
