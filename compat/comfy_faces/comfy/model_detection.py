"""ComfyUI's ``comfy.model_detection`` for plugins. ``count_blocks`` is real (how many ``prefix.format(n)``
blocks a key list has, from 0 up). Plexus detects models from tensor shapes in models/detection.py and builds no
ComfyUI ``unet_config`` / model-config objects, so the functions that return those raise a clear error."""
from __future__ import annotations

from typing import Any, Iterable


def count_blocks(state_dict_keys: Iterable[str], prefix_string: str) -> int:
    keys = list(state_dict_keys)
    count = 0
    while any(k.startswith(prefix_string.format(count)) for k in keys):
        count += 1
    return count


def _not_built(name: str):
    def refuse(*args: Any, **kwargs: Any):
        raise NotImplementedError(f"comfy.model_detection.{name}: Plexus detects models from tensor shapes "
                                  "(models/detection.py) and builds no ComfyUI unet_config / model config")
    refuse.__name__ = name
    return refuse


unet_config_from_diffusers_unet = _not_built("unet_config_from_diffusers_unet")
model_config_from_unet = _not_built("model_config_from_unet")
model_config_from_unet_config = _not_built("model_config_from_unet_config")
detect_unet_config = _not_built("detect_unet_config")
convert_config = _not_built("convert_config")
model_config_from_diffusers_unet = _not_built("model_config_from_diffusers_unet")
