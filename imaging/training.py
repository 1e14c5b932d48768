"""Image data sets and loss plots for ComfyUI's training nodes (comfy_extras/nodes_train: the
LoadImage(Text)SetFromFolder loaders and LossGraphNode).

- `dataset_images(folder, kohya_repeats)`: the .png/.jpg/.jpeg/.webp files of a folder, sorted by name
  (ComfyUI takes os.listdir's order, which the file system decides); with `kohya_repeats`, also the images
  of each subfolder, the subfolder's list repeated N times when its name starts with "N_" (kohya-ss
  sd-scripts' dataset layout).
- `load_image_set(paths, resize_method, width, height)`: one [N, H, W, 3] batch. The size is (width,
  height) when given, else the first image's; an image of another size is resized with Lanczos ("Stretch",
  and "Pad", which ComfyUI 0.3.64 also resizes without padding), cropped from the top-left corner ("Crop",
  Pillow's crop: black beyond the image), or refused ("None").
- `captions(paths)`: the text of each image's "<name>.txt" beside it, stripped; "" when there is none.
- `loss_graph(values)`: a 840 x 520 white PNG-ready image with the loss curve (blue) scaled to its min and
  max, axes and labels, as LossGraphNode draws it.
"""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from execution.errors import PlexusError

from .files import open_image

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp")
RESIZE_METHODS = ["None", "Stretch", "Crop", "Pad"]


def _images_in(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.name.lower().endswith(IMAGE_EXTENSIONS))


def dataset_images(folder: Path, *, kohya_repeats: bool = False) -> list[Path]:
    folder = Path(folder)
    if not folder.is_dir():
        raise PlexusError("invalid_input", "The data set folder does not exist", str(folder))
    found = _images_in(folder)
    if kohya_repeats:
        for sub in sorted(p for p in folder.iterdir() if p.is_dir()):
            head = sub.name.split("_")[0]
            found += _images_in(sub) * (int(head) if head.isdigit() else 1)
    return found


def load_image_set(paths: Sequence[Path], resize_method: str = "None", width: int | None = None,
                   height: int | None = None) -> torch.Tensor:
    if not paths:
        raise PlexusError("invalid_input", "No images found in the data set folder",
                          f"expected {', '.join(IMAGE_EXTENSIONS)} files")
    if resize_method not in RESIZE_METHODS:
        raise PlexusError("invalid_input", f"resize_method {resize_method!r} is not one of {RESIZE_METHODS}")
    out = []
    for path in paths:
        image = open_image(path)
        if image.mode == "I":
            image = image.point(lambda v: v * (1 / 255))
        image = image.convert("RGB")
        if width is None and height is None:
            width, height = image.size
        size = (width if width is not None else image.size[0], height if height is not None else image.size[1])
        if image.size != size:
            if resize_method in ("Stretch", "Pad"):
                image = image.resize(size, Image.Resampling.LANCZOS)
            elif resize_method == "Crop":
                image = image.crop((0, 0, *size))
            else:
                raise PlexusError("invalid_input", "An image of the data set has another size than the first",
                                  f"{Path(path).name} is {image.size[0]}x{image.size[1]}, the set is "
                                  f"{size[0]}x{size[1]}: choose a resize_method, or use one size")
        width, height = size
        out.append(torch.from_numpy(np.asarray(image, dtype=np.float32) / 255.0)[None])
    return torch.cat(out, dim=0)


def captions(paths: Sequence[Path]) -> list[str]:
    texts = []
    for path in paths:
        caption = Path(path).with_suffix(".txt")
        texts.append(caption.read_text(encoding="utf-8").strip() if caption.is_file() else "")
    return texts


def loss_graph(values: Sequence[float]) -> Image.Image:
    if not values:
        raise PlexusError("invalid_input", "The loss map has no values", "connect a TrainLoraNode's loss output")
    width, height, margin = 800, 480, 40
    image = Image.new("RGB", (width + margin, height + margin), "white")
    draw = ImageDraw.Draw(image)
    low, high = min(values), max(values)
    span = (high - low) or 1.0          # a flat curve is drawn at the bottom (ComfyUI divides by zero)
    scaled = [(v - low) / span for v in values]
    previous = (margin, height - int(scaled[0] * height))
    for i, value in enumerate(scaled[1:], start=1):
        point = (margin + int(i / len(values) * width), height - int(value * height))
        draw.line([previous, point], fill="blue", width=2)
        previous = point
    draw.line([(margin, 0), (margin, height)], fill="black", width=2)
    draw.line([(margin, height), (width + margin, height)], fill="black", width=2)
    font = ImageFont.load_default()
    draw.text((5, height // 2), "Loss", font=font, fill="black")
    draw.text((width // 2, height + 10), "Steps", font=font, fill="black")
    draw.text((margin - 30, 0), f"{high:.2f}", font=font, fill="black")
    draw.text((margin - 30, height - 10), f"{low:.2f}", font=font, fill="black")
    return image
