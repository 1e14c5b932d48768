"""Geometry and batching of IMAGE tensors [B, H, W, C]: flips, quarter turns, stitching two images
side by side, fitting into a padded box, scaling to a largest side, slicing and regrouping batches.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from imaging.resize import upscale

ROTATIONS = ("none", "90 degrees", "180 degrees", "270 degrees")
FLIPS = ("x-axis: vertically", "y-axis: horizontally")
STITCH_DIRECTIONS = ("right", "down", "left", "up")
STITCH_COLORS: dict[str, tuple[float, float, float]] = {
    "white": (1.0, 1.0, 1.0), "black": (0.0, 0.0, 0.0), "red": (1.0, 0.0, 0.0),
    "green": (0.0, 1.0, 0.0), "blue": (0.0, 0.0, 1.0),
}
PAD_COLORS = ("white", "black")


def _resized(image: torch.Tensor, width: int, height: int, method: str) -> torch.Tensor:
    return upscale(image.movedim(-1, 1), width, height, method, "disabled").movedim(1, -1)


def flip(image: torch.Tensor, flip_method: str) -> torch.Tensor:
    """"x-axis" mirrors top to bottom, "y-axis" left to right."""
    return torch.flip(image, dims=[1] if flip_method.startswith("x") else [2])


def rotate(image: torch.Tensor, rotation: str) -> torch.Tensor:
    """Quarter turns clockwise."""
    turns = ROTATIONS.index(rotation)
    return torch.rot90(image, k=turns, dims=[2, 1])


def _extend_batch(image: torch.Tensor, size: int) -> torch.Tensor:
    """Repeat the last item until the batch has `size` items."""
    if image.shape[0] >= size:
        return image
    return torch.cat((image, image[-1:].expand(size - image.shape[0], *image.shape[1:])))


def _pad_centered(image: torch.Tensor, axis: int, size: int, value: float) -> torch.Tensor:
    missing = size - image.shape[axis]
    if missing <= 0:
        return image
    before, after = missing // 2, missing - missing // 2
    pad = (0, 0, before, after) if axis == 2 else (0, 0, 0, 0, before, after)
    return F.pad(image, pad, mode="constant", value=value)


def stitch(image1: torch.Tensor, image2: torch.Tensor | None, direction: str, match_image_size: bool,
           spacing_width: int, spacing_color: str) -> torch.Tensor:
    """Put image2 to the `direction` of image1. With `match_image_size` image2 is scaled (Lanczos)
    to image1's height (left/right) or width (up/down), keeping its aspect ratio; otherwise the
    smaller one is padded, centred. An optional strip of `spacing_color` (an even width) goes between."""
    if image2 is None:
        return image1
    batch = max(image1.shape[0], image2.shape[0])
    image1, image2 = _extend_batch(image1, batch), _extend_batch(image2, batch)
    horizontal = direction in ("left", "right")
    color = STITCH_COLORS[spacing_color]
    if match_image_size:
        h1, w1 = image1.shape[1:3]
        h2, w2 = image2.shape[1:3]
        aspect = w2 / h2
        size = (int(h1 * aspect), h1) if horizontal else (w1, int(w1 / aspect))
        image2 = _resized(image2, size[0], size[1], "lanczos")
    else:
        # Padding uses a grey value: the spacing's colour when it is grey, else black.
        pad_value = color[0] if len(set(color)) == 1 else 0.0
        axis = 1 if horizontal else 2
        target = max(image1.shape[axis], image2.shape[axis])
        image1 = _pad_centered(image1, axis, target, pad_value)
        image2 = _pad_centered(image2, axis, target, pad_value)
    channels = max(image1.shape[-1], image2.shape[-1])
    image1, image2 = (torch.cat((im, torch.ones(*im.shape[:-1], channels - im.shape[-1]).to(im)), dim=-1)
                      if im.shape[-1] < channels else im for im in (image1, image2))
    parts = [image2, image1] if direction in ("left", "up") else [image1, image2]
    if spacing_width > 0:
        spacing_width += spacing_width % 2
        if horizontal:
            shape = (batch, max(image1.shape[1], image2.shape[1]), spacing_width, channels)
        else:
            shape = (batch, spacing_width, max(image1.shape[2], image2.shape[2]), channels)
        strip = torch.zeros(shape).to(image1)
        strip[..., :min(3, channels)] = torch.tensor(color[:min(3, channels)]).to(image1)
        if channels == 4:
            strip[..., 3] = 1.0
        parts.insert(1, strip)
    return torch.cat(parts, dim=2 if horizontal else 1)


def resize_and_pad(image: torch.Tensor, width: int, height: int, padding_color: str, method: str) -> torch.Tensor:
    """Scale to fit inside width x height keeping the aspect ratio (sides truncated), centred on a
    white or black canvas."""
    batch, h, w, channels = image.shape
    scale = min(width / w, height / h)
    new_w, new_h = int(w * scale), int(h * scale)
    resized = _resized(image, new_w, new_h, method)
    canvas = torch.full((batch, height, width, channels), 0.0 if padding_color == "black" else 1.0,
                        dtype=image.dtype)
    top, left = (height - new_h) // 2, (width - new_w) // 2
    canvas[:, top:top + new_h, left:left + new_w] = resized
    return canvas


def scale_to_max_dimension(image: torch.Tensor, method: str, largest_size: int) -> torch.Tensor:
    """Scale so the longer side is `largest_size`; the other side keeps the aspect ratio (rounded)."""
    h, w = image.shape[1], image.shape[2]
    if h > w:
        w, h = round(w / h * largest_size), largest_size
    elif w > h:
        w, h = largest_size, round(h / w * largest_size)
    else:
        w = h = largest_size
    return _resized(image, w, h, method)


def from_batch(image: torch.Tensor, batch_index: int, length: int) -> torch.Tensor:
    """`length` images from `batch_index`, both clamped to the batch."""
    batch_index = min(image.shape[0] - 1, batch_index)
    length = min(image.shape[0] - batch_index, length)
    return image[batch_index:batch_index + length].clone()


def repeat(image: torch.Tensor, amount: int) -> torch.Tensor:
    return image.repeat((amount, 1, 1, 1))


def rebatch(images: list[torch.Tensor], batch_size: int) -> list[torch.Tensor]:
    """All images of all batches, in order, regrouped into batches of `batch_size` (the last may be
    smaller). Images of different sizes cannot share a batch: that raises ValueError."""
    singles = [batch[i:i + 1] for batch in images for i in range(batch.shape[0])]
    out = []
    for start in range(0, len(singles), batch_size):
        group = singles[start:start + batch_size]
        if any(item.shape[1:] != group[0].shape[1:] for item in group):
            raise ValueError("RebatchImages needs images of one size within a batch; got "
                             f"{sorted({tuple(item.shape[1:3]) for item in group})}")
        out.append(torch.cat(group, dim=0))
    return out


def image_size(image: torch.Tensor) -> tuple[int, int, int]:
    """(width, height, batch size)."""
    return image.shape[2], image.shape[1], image.shape[0]


def batch_images(images: list[torch.Tensor]) -> torch.Tensor:
    """One batch of all images in order; each is resized (bilinear, centre crop) to the first's size
    and given an opaque alpha channel when others have one."""
    first = images[0]
    channels = max(image.shape[-1] for image in images)
    out = []
    for image in images:
        if image.shape[1:3] != first.shape[1:3]:
            image = upscale(image.movedim(-1, 1), first.shape[2], first.shape[1], "bilinear", "center").movedim(1, -1)
        if image.shape[-1] < channels:
            image = torch.cat((image, torch.ones(*image.shape[:-1], channels - image.shape[-1]).to(image)), dim=-1)
        out.append(image)
    return torch.cat(out, dim=0)
