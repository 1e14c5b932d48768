"""CLIP_VISION and CLIP_VISION_OUTPUT: loading vision towers (clip_vision files, the tower bundled in unCLIP
checkpoints) and encoding images with them.

    vision = load_clip_vision_file(path, manager)                    # CLIPVisionLoader
    output = encode_image(vision, image, crop="center")              # CLIPVisionEncode
    output.image_embeds, output["penultimate_hidden_states"]

The tower is a models.clip_vision.ClipVisionModel behind a `ClipVision` handle registered with the
ModelManager (dtype of the text-encoder part, as ComfyUI gives CLIP vision the text encoder's device and
dtype), so it is loaded, offloaded and budgeted like any model. The output keeps ComfyUI's attribute and
item access (`comfy.clip_vision.Output`), which is what IPAdapter-style plugins read.
"""
from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from execution.errors import PlexusError
from model_management import ModelPart
from models.clip_vision import build_clip_vision, preprocess, vision_state_dict
from models.files import load_state_dict

from .loading import _dtype_for, cached_load, load_dtype_for
from .objects import ManagedHandle

CROP_MODES = ("center", "none")


class ClipVision(ManagedHandle):
    """CLIP_VISION: a vision tower (models.clip_vision.ClipVisionModel)."""

    @property
    def config(self):
        return self.module.config

    def encode_image(self, image: Tensor, crop: bool = True) -> "ClipVisionOutput":
        """ComfyUI's ClipVisionModel.encode_image (what plugins call)."""
        return encode_image(self, image, "center" if crop else "none")


class ClipVisionOutput:
    """CLIP_VISION_OUTPUT: `image_embeds`, `last_hidden_state`, `penultimate_hidden_states`, `mm_projected`
    (and SigLIP's `all_hidden_states`), as attributes and as items (ComfyUI's Output)."""

    def __init__(self, **values: Any) -> None:
        for key, value in values.items():
            setattr(self, key, value)

    def __getitem__(self, key: str) -> Any:
        return getattr(self, key)

    def __setitem__(self, key: str, value: Any) -> None:
        setattr(self, key, value)

    def __contains__(self, key: str) -> bool:
        return hasattr(self, key)

    def __repr__(self) -> str:
        shapes = {k: tuple(v.shape) for k, v in vars(self).items() if isinstance(v, Tensor)}
        return f"ClipVisionOutput({shapes})"


def wrap_clip_vision(state: Mapping[str, Tensor], manager: Any, *, name: str, source_key: str | None) -> ClipVision:
    """A ClipVision handle over the tower built from `state` (models.clip_vision.vision_state_dict output)."""
    module = build_clip_vision(state, load_dtype_for(manager, ModelPart.TEXT_ENCODER))
    handle = ClipVision(module, manager=manager, name=f"{name} (CLIP vision {module.config.name})",
                        source_key=source_key)
    manager.register(handle, dtype=_dtype_for(manager, ModelPart.TEXT_ENCODER))
    return handle


def load_clip_vision_file(path: str | os.PathLike, manager: Any) -> ClipVision:
    """CLIPVisionLoader: a clip_vision file in the Hugging Face or OpenCLIP layout (or any checkpoint that
    holds a tower, e.g. an unCLIP file), cached per manager."""
    path = Path(path)

    def load() -> tuple:
        with load_state_dict(path) as source:
            state = vision_state_dict({k: source[k] for k in source})
            handle = wrap_clip_vision(state, manager, name=path.name, source_key=str(path))
            source.release_all()
        return (handle,)

    return cached_load(manager, "clip_vision", path, load)[0]


def encode_image(vision: ClipVision, image: Tensor, crop: str = "center") -> ClipVisionOutput:
    """CLIPVisionEncode: IMAGE [B, H, W, C] -> CLIP_VISION_OUTPUT (float32 on the CPU)."""
    if not isinstance(vision, ClipVision):
        raise PlexusError("invalid_input", "clip_vision is not a CLIP vision model loaded by Plexus",
                          f"got {type(vision).__name__}; connect a CLIPVisionLoader or unCLIPCheckpointLoader")
    if crop not in CROP_MODES:
        raise PlexusError("invalid_input", f"crop must be one of {list(CROP_MODES)}, not {crop!r}")
    config = vision.config
    pixels = preprocess(image, config.image_size, config.image_mean, config.image_std,
                        is_center_crop=crop == "center")
    manager = vision.manager
    manager.load_models_for([vision])
    with torch.inference_mode():
        raw = vision.module(pixels.to(manager.device))
    return ClipVisionOutput(**{k: v.float().cpu() if isinstance(v, Tensor) else v for k, v in raw.items()})
