"""ComfyUI's ``comfy.lora`` for plugins: LoRA key maps and loading over models.lora."""
from __future__ import annotations

from typing import Any


def load_lora(lora: dict, to_load: dict, log_missing: bool = True) -> dict:
    """ComfyUI returns {model key: patch}; in Plexus LoRAs are applied with comfy.sd.load_lora_for_models."""
    raise NotImplementedError("comfy.lora.load_lora: use comfy.sd.load_lora_for_models (Plexus matches "
                              "LoRA keys to the model itself)")


def model_lora_keys_unet(model: Any, key_map: dict | None = None) -> dict:
    key_map = {} if key_map is None else key_map
    for key in model.state_dict() if hasattr(model, "state_dict") else ():
        if key.endswith(".weight"):
            key_map[f"diffusion_model.{key[:-len('.weight')]}"] = key
    return key_map


def model_lora_keys_clip(model: Any, key_map: dict | None = None) -> dict:
    return {} if key_map is None else key_map
