"""ComfyUI's ``comfy.clip_vision`` names for plugins. Plexus has no CLIP vision models yet: the names exist
for imports and subclassing and raise a clear error when used."""
from __future__ import annotations

from typing import Any

_MESSAGE = "CLIP vision is not supported by Plexus yet ({what})"


class Output:
    def __getitem__(self, key: str) -> Any:
        return getattr(self, key)

    def __setitem__(self, key: str, item: Any) -> None:
        setattr(self, key, item)


class ClipVisionModel:
    def __init__(self, *args: Any, **kwargs: Any):
        raise NotImplementedError(_MESSAGE.format(what="comfy.clip_vision.ClipVisionModel"))


def load(ckpt_path: str) -> Any:
    raise NotImplementedError(_MESSAGE.format(what="comfy.clip_vision.load"))


def load_clipvision_from_sd(sd: dict, prefix: str = "", convert_keys: bool = False) -> Any:
    raise NotImplementedError(_MESSAGE.format(what="comfy.clip_vision.load_clipvision_from_sd"))


def clip_preprocess(image, size: int = 224, mean=None, std=None, crop: bool = True):
    raise NotImplementedError(_MESSAGE.format(what="comfy.clip_vision.clip_preprocess"))
