"""Seeded synthetic RGB test images for the Canny checks (uint8 [H, W, 3]): filled shapes of random
colours and orientations over a smooth background, thin lines, and a little pixel noise."""
from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw, ImageFilter


def synthetic_image(seed: int, height: int = 192, width: int = 256) -> np.ndarray:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width] / max(height, width)
    background = np.stack([(0.3 + 0.4 * np.sin(3 * xx + c) * np.cos(2 * yy - c)) for c in rng.uniform(0, 3, 3)], -1)
    img = Image.fromarray((np.clip(background, 0, 1) * 255).astype(np.uint8))
    draw = ImageDraw.Draw(img)
    for _ in range(12):
        x0, y0 = rng.integers(0, width), rng.integers(0, height)
        x1, y1 = x0 + rng.integers(10, width // 2), y0 + rng.integers(10, height // 2)
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        shape = rng.integers(0, 4)
        if shape == 0:
            draw.rectangle((x0, y0, x1, y1), fill=colour)
        elif shape == 1:
            draw.ellipse((x0, y0, x1, y1), fill=colour)
        elif shape == 2:
            draw.polygon([tuple(int(v) for v in rng.integers(0, (width, height))) for _ in range(3)], fill=colour)
        else:
            draw.line((x0, y0, x1, y1), fill=colour, width=int(rng.integers(1, 4)))
    img = img.filter(ImageFilter.GaussianBlur(0.7))
    pixels = np.asarray(img).astype(np.int16) + rng.integers(-4, 5, (height, width, 3))
    return np.clip(pixels, 0, 255).astype(np.uint8)
