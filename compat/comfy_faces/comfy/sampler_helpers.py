"""ComfyUI's ``comfy.sampler_helpers`` for plugins, over sampling.sample's mask handling."""
from __future__ import annotations

from typing import Any

import torch

from sampling.sample import prepare_mask as _prepare_mask


def prepare_mask(noise_mask: torch.Tensor, shape, device: Any) -> torch.Tensor:
    return _prepare_mask(noise_mask, shape).to(device)


def convert_cond(cond: list) -> list[dict]:
    """CONDITIONING -> ComfyUI's per-entry dicts ({"cross_attn": cond, "model_conds": {}, ...options})."""
    out = []
    for c in cond:
        entry = dict(c[1])
        entry["cross_attn"] = c[0]
        entry.setdefault("model_conds", {})
        out.append(entry)
    return out


def get_models_from_cond(cond: list, model_type: str) -> list:
    return [c[1][model_type] for c in cond if model_type in c[1]]


def get_additional_models(conds: dict, dtype: Any) -> tuple[list, int]:
    return [], 0


def cleanup_additional_models(models: list) -> None:
    """Plexus's model manager keeps what it loaded under its budget; nothing to clean."""


def estimate_memory(model: Any, noise_shape, conds: Any) -> tuple[int, int]:
    need = model.memory_required(noise_shape)
    return need, need


def prepare_sampling(model: Any, noise_shape, conds: Any, model_options: dict | None = None):
    """Loads the MODEL through the manager; returns (model, conds, loaded models) as ComfyUI does."""
    model.manager.load_models_for([model], model.memory_required(noise_shape))
    return model.model, conds, []


def cleanup_models(conds: Any, models: list) -> None:
    """Nothing to release (see cleanup_additional_models)."""
