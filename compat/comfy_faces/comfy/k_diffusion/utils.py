"""ComfyUI's ``comfy.k_diffusion.utils`` (k-diffusion's utils) names packs import: ``FolderOfImages`` (its
``IMG_EXTENSIONS`` is what VideoHelperSuite reads; indexing loads an image as a [C, H, W] tensor in 0..1)
and ``append_dims``."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import torch


def append_dims(x: torch.Tensor, target_dims: int) -> torch.Tensor:
    """``x`` with trailing singleton dimensions up to ``target_dims`` dimensions."""
    missing = target_dims - x.ndim
    if missing < 0:
        raise ValueError(f"input has {x.ndim} dims but target_dims is {target_dims}, which is less")
    return x[(...,) + (None,) * missing]


class FolderOfImages(torch.utils.data.Dataset):
    """Every image file below ``root`` (sorted), as a dataset of [C, H, W] float tensors."""

    IMG_EXTENSIONS = {".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp"}

    def __init__(self, root: str | Path, transform: Callable | None = None):
        self.root = Path(root)
        self.transform = transform
        self.paths = sorted(path for path in self.root.rglob("*") if path.suffix.lower() in self.IMG_EXTENSIONS)

    def __repr__(self) -> str:
        return f'FolderOfImages(root="{self.root}", len: {len(self)})'

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, key: int) -> tuple[Any]:
        from imaging.files import load_image

        image, _ = load_image(self.paths[key])
        tensor = image[0].movedim(-1, 0)          # [H, W, C] -> [C, H, W]
        return (self.transform(tensor) if self.transform is not None else tensor,)
