"""Image sizes from an aspect ratio and a pixel budget (ResolutionSelector)."""
from __future__ import annotations

import math

ASPECT_RATIOS: dict[str, tuple[int, int]] = {
    "1:1 (Square)": (1, 1), "3:2 (Photo)": (3, 2), "4:3 (Standard)": (4, 3), "16:9 (Widescreen)": (16, 9),
    "21:9 (Ultrawide)": (21, 9), "2:3 (Portrait Photo)": (2, 3), "3:4 (Portrait Standard)": (3, 4),
    "9:16 (Portrait Widescreen)": (9, 16),
}


def resolution(aspect_ratio: str, megapixels: float, multiple: int = 8) -> tuple[int, int]:
    """(width, height) with width:height = the ratio and width * height about megapixels * 2^20,
    each side rounded to the nearest multiple of `multiple` (at least one multiple)."""
    w_ratio, h_ratio = ASPECT_RATIOS[aspect_ratio]
    scale = math.sqrt(megapixels * 1024 * 1024 / (w_ratio * h_ratio))
    width = max(multiple, round(w_ratio * scale / multiple) * multiple)
    height = max(multiple, round(h_ratio * scale / multiple) * multiple)
    return width, height
