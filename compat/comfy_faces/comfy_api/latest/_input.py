"""ComfyUI's ``comfy_api.latest._input``: the value types of V3 inputs (type hints; IMAGE, MASK and
LATENT values are torch tensors / dicts as everywhere in Plexus)."""
from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, TypedDict

ImageInput = Any     # torch.Tensor [B, H, W, C]
MaskInput = Any      # torch.Tensor [B, H, W]


class AudioInput(TypedDict):
    waveform: Any
    sample_rate: int


class LatentInput(TypedDict, total=False):
    samples: Any
    noise_mask: Any


class VideoInput(ABC):
    """A video value (ComfyUI's ABC); Plexus has no video nodes, packs may subclass it."""

    @abstractmethod
    def get_components(self) -> Any:
        ...

    @abstractmethod
    def save_to(self, path: str, format: Any = None, codec: Any = None, metadata: dict | None = None) -> None:
        ...

    def get_dimensions(self) -> tuple[int, int]:
        images = self.get_components().images
        return images.shape[2], images.shape[1]
