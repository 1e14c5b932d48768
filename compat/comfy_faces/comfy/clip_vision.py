"""ComfyUI's ``comfy.clip_vision`` names for plugins, over diffusion.clip_vision (CLIP_VISION handles,
CLIP_VISION_OUTPUT) and models.clip_vision (the towers and the preprocessing).

`Output` is Plexus's CLIP_VISION_OUTPUT class (attribute and item access); `ClipVisionModel` is an ABC that
Plexus's CLIP_VISION handle is registered with, so `isinstance` checks and `.encode_image(image, crop=True)`
work; building one from a JSON config is not supported (load a file instead)."""
from __future__ import annotations

import abc
from typing import Any

from diffusion.clip_vision import ClipVision, ClipVisionOutput, load_clip_vision_file, wrap_clip_vision
from models.clip_vision import CLIP_MEAN, CLIP_STD, preprocess, vision_state_dict
from nodes import services as _services

Output = ClipVisionOutput


def _manager():
    return _services.current().model_manager()


class ClipVisionModel(abc.ABC):
    def __new__(cls, *args: Any, **kwargs: Any):
        raise NotImplementedError("comfy.clip_vision.ClipVisionModel(json_config): Plexus builds CLIP vision "
                                  "towers from their files; use comfy.clip_vision.load(path) or a CLIP_VISION input")


ClipVisionModel.register(ClipVision)


def load(ckpt_path: str) -> ClipVision:
    return load_clip_vision_file(ckpt_path, _manager())


def load_clipvision_from_sd(sd: dict, prefix: str = "", convert_keys: bool = False) -> ClipVision | None:
    """A tower from a state dict (OpenCLIP `visual.*` layouts are recognised whatever `convert_keys` says);
    None when it holds none, as in ComfyUI."""
    if prefix and not convert_keys:
        sd = {k[len(prefix):]: v for k, v in sd.items() if k.startswith(prefix)}
    state = vision_state_dict(sd)
    if "vision_model.embeddings.patch_embedding.weight" not in state:
        return None
    return wrap_clip_vision(state, _manager(), name="state dict", source_key=None)


def clip_preprocess(image, size: int = 224, mean=CLIP_MEAN, std=CLIP_STD, crop: bool = True):
    return preprocess(image, size, mean, std, is_center_crop=crop)
