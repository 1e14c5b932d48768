"""ComfyUI's ``comfy_extras.chainner_models.model_loading.load_state_dict``: an UPSCALE_MODEL from a state
dict, built by Plexus's own loader (diffusion.upscale; ESRGAN / Real-ESRGAN RRDBNet layouts, every key and
shape checked). The result goes into ``ImageUpscaleWithModel`` like a loaded file; ``.eval()`` returns it."""
from __future__ import annotations

from typing import Any


def load_state_dict(state_dict: dict) -> Any:
    from diffusion.upscale import upscale_model_from_state_dict
    from nodes import services

    return upscale_model_from_state_dict(state_dict, services.current().model_manager())
