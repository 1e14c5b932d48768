"""How closely the Canny node (imaging.canny, kornia's algorithm as ComfyUI runs it) agrees with OpenCV's Canny.

    .venv/bin/python bench/canny_agreement.py [--image photo.jpg ...] [--seeds 0 1 2]

Images: the seeded synthetic test images of tests/imaging/canny_images.py plus any `--image` files. For
each image and threshold pair (ComfyUI units: the unnormalised Sobel magnitude of the 5x5 sigma-1 blurred
0..1 grey image) two OpenCV references:
- `opencv-u8`: OpenCV's usual pipeline on the uint8 image (cvtColor RGB2GRAY, GaussianBlur 5x5 sigma 1,
  Canny at the thresholds x 255 with L2 gradients);
- `opencv-grad`: cv2.Canny fed our float blur's Sobel gradients (int16, scaled x 512), isolating its
  non-maximum suppression and hysteresis from the uint8 rounding.
Reported per case: edge pixels (ours / OpenCV), edge IoU (pixels that are edges in both / in either) and
the fraction of all pixels that are equal. Also checks that the output equals kornia.filters.canny where
kornia is installed (a test-only dependency).
"""
from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

import cv2
import numpy as np
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from imaging.canny import canny_edges  # noqa: E402
from tests.imaging.canny_images import synthetic_image  # noqa: E402

THRESHOLDS = ((0.4, 0.8), (0.2, 0.5), (0.1, 0.2))
GRADIENT_SCALE = 512.0


def ours(rgb: np.ndarray, low: float, high: float) -> np.ndarray:
    x = torch.from_numpy(rgb.astype(np.float32) / 255).movedim(-1, 0)[None]
    return canny_edges(x, low, high)[0, 0].numpy() > 0


def opencv_u8(rgb: np.ndarray, low: float, high: float) -> np.ndarray:
    blurred = cv2.GaussianBlur(cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY), (5, 5), 1, borderType=cv2.BORDER_REFLECT_101)
    return cv2.Canny(blurred, low * 255, high * 255, L2gradient=True) > 0


def opencv_grad(rgb: np.ndarray, low: float, high: float) -> np.ndarray:
    grey = cv2.cvtColor(rgb.astype(np.float32) / 255, cv2.COLOR_RGB2GRAY)
    blurred = cv2.GaussianBlur(grey, (5, 5), 1, borderType=cv2.BORDER_REFLECT_101)
    dx, dy = (np.round(cv2.Sobel(blurred, cv2.CV_32F, *d, ksize=3, borderType=cv2.BORDER_REPLICATE)
                       * GRADIENT_SCALE).astype(np.int16) for d in ((1, 0), (0, 1)))
    return cv2.Canny(dx, dy, low * GRADIENT_SCALE, high * GRADIENT_SCALE, L2gradient=True) > 0


def equals_kornia(rgb: np.ndarray, low: float, high: float) -> str:
    try:
        import kornia
    except ImportError:
        return "-"
    x = torch.from_numpy(rgb.astype(np.float32) / 255).movedim(-1, 0)[None]
    return "yes" if torch.equal(canny_edges(x, low, high), kornia.filters.canny(x, low, high)[1]) else "NO"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--image", nargs="*", default=[], help="extra RGB image files")
    parser.add_argument("--seeds", nargs="*", type=int, default=[0, 1, 2])
    args = parser.parse_args()
    images = [(f"synthetic-{s}", synthetic_image(s)) for s in args.seeds]
    images += [(Path(p).name, np.asarray(Image.open(p).convert("RGB"))) for p in args.image]
    ious: dict[str, list[float]] = {"opencv-u8": [], "opencv-grad": []}
    print(f"{'image':24} {'low-high':9} {'ref':12} {'ours':>6} {'opencv':>6} {'edge IoU':>8} {'px equal':>8} kornia")
    for name, rgb in images:
        for low, high in THRESHOLDS:
            mine = ours(rgb, low, high)
            same = equals_kornia(rgb, low, high)
            for ref, fn in (("opencv-u8", opencv_u8), ("opencv-grad", opencv_grad)):
                theirs = fn(rgb, low, high)
                iou = (mine & theirs).sum() / max((mine | theirs).sum(), 1)
                ious[ref].append(iou)
                print(f"{name[:24]:24} {low:.2f}-{high:.2f} {ref:12} {mine.sum():6d} {theirs.sum():6d} "
                      f"{iou:8.4f} {(mine == theirs).mean():8.5f} {same}")
    for ref, values in ious.items():
        print(f"{ref}: edge IoU median {statistics.median(values):.4f}, min {min(values):.4f} over {len(values)} cases")


if __name__ == "__main__":
    main()
