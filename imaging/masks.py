"""MASK tensors [B, H, W] (1 = masked) and alpha: combining, feathering, thresholds, crops, colour
keys, RGBA split/join and Porter-Duff compositing.

MASK and alpha are opposites: a mask value m is an alpha of 1 - m (LoadImage's mask is 1 where the
picture is transparent), so joining an image with a mask writes 1 - m into the alpha channel.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from imaging.resize import upscale

MASK_OPERATIONS = ("multiply", "add", "subtract", "and", "or", "xor")
PORTER_DUFF_MODES = ("ADD", "CLEAR", "DARKEN", "DST", "DST_ATOP", "DST_IN", "DST_OUT", "DST_OVER", "LIGHTEN",
                     "MULTIPLY", "OVERLAY", "SCREEN", "SRC", "SRC_ATOP", "SRC_IN", "SRC_OUT", "SRC_OVER", "XOR")


def as_batch(mask: torch.Tensor) -> torch.Tensor:
    """Any [.., H, W] mask as [B, H, W]."""
    return mask.reshape((-1, mask.shape[-2], mask.shape[-1]))


def composite(destination: torch.Tensor, source: torch.Tensor, x: int, y: int, operation: str) -> torch.Tensor:
    """Combine `source` into `destination` at (x, y); the parts of source past the destination's edge
    are dropped. and/or/xor work on the masks rounded to 0/1. The result is clamped to 0..1."""
    out = as_batch(destination).clone()
    source = as_batch(source)
    right, bottom = min(x + source.shape[-1], out.shape[-1]), min(y + source.shape[-2], out.shape[-2])
    if right <= x or bottom <= y:
        return torch.clamp(out, 0.0, 1.0)
    src = source[:, :bottom - y, :right - x]
    dst = out[:, y:bottom, x:right]
    if operation == "multiply":
        combined = dst * src
    elif operation == "add":
        combined = dst + src
    elif operation == "subtract":
        combined = dst - src
    elif operation in ("and", "or", "xor"):
        logic = {"and": torch.logical_and, "or": torch.logical_or, "xor": torch.logical_xor}[operation]
        combined = logic(dst.round().bool(), src.round().bool()).to(out.dtype)
    else:
        raise ValueError(f"operation must be one of {MASK_OPERATIONS}, not {operation!r}")
    out[:, y:bottom, x:right] = combined
    return torch.clamp(out, 0.0, 1.0)


def _ramp(count: int, size: int) -> torch.Tensor:
    """Weights for the `size` pixels from an edge inwards: (k + 1) / count for the first `count`."""
    ramp = torch.ones(size)
    if count:
        ramp[:count] = torch.arange(1, count + 1, dtype=torch.float32) / count
    return ramp


def feather(mask: torch.Tensor, left: int, top: int, right: int, bottom: int) -> torch.Tensor:
    """Fade the mask linearly to the edges: the outermost pixel of a side fading over n pixels keeps
    1/n of its value, the n-th from the edge all of it. (ComfyUI's loop for the right and bottom
    sides starts one pixel off, scaling column 0 / row 0 and the second pixel from the edge instead
    of the edge itself; Plexus applies the same ramp on all four sides.)"""
    out = as_batch(mask).clone()
    h, w = out.shape[-2:]
    left, right, top, bottom = min(left, w), min(right, w), min(top, h), min(bottom, h)
    columns = _ramp(left, w) * _ramp(right, w).flip(0)
    rows = _ramp(top, h) * _ramp(bottom, h).flip(0)
    return out * rows.to(out)[:, None] * columns.to(out)[None, :]


def threshold(mask: torch.Tensor, value: float) -> torch.Tensor:
    return (mask > value).float()


def crop(mask: torch.Tensor, x: int, y: int, width: int, height: int) -> torch.Tensor:
    return as_batch(mask)[:, y:y + height, x:x + width]


def color_to_mask(image: torch.Tensor, color: int) -> torch.Tensor:
    """1 where the pixel's 8-bit RGB, packed as 0xRRGGBB, equals `color`."""
    rgb = (torch.clamp(image[..., :3], 0, 1.0) * 255.0).round().to(torch.int64)
    packed = (rgb[..., 0] << 16) + (rgb[..., 1] << 8) + rgb[..., 2]
    return (packed == color).float()


def mask_preview_image(mask: torch.Tensor) -> torch.Tensor:
    """The mask as a grey IMAGE [B, H, W, 3]."""
    return as_batch(mask)[..., None].expand(-1, -1, -1, 3)


def _resize_mask(mask: torch.Tensor, height: int, width: int) -> torch.Tensor:
    return F.interpolate(as_batch(mask)[:, None], size=(height, width), mode="bilinear").squeeze(1)


def split_alpha(image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """RGB and the mask (1 - alpha; all zeros for an image without alpha)."""
    alpha = image[..., 3] if image.shape[-1] > 3 else torch.ones_like(image[..., 0])
    return image[..., :3], 1.0 - alpha


def join_alpha(image: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """RGBA with alpha = 1 - mask (resized bilinearly to the image); the shorter batch decides."""
    alpha = 1.0 - _resize_mask(mask, image.shape[1], image.shape[2])
    count = min(len(image), len(alpha))
    return torch.cat((image[:count, ..., :3], alpha[:count, ..., None].to(image)), dim=-1)


def porter_duff(src: torch.Tensor, src_alpha: torch.Tensor, dst: torch.Tensor, dst_alpha: torch.Tensor,
                mode: str) -> tuple[torch.Tensor, torch.Tensor]:
    """One Porter-Duff operator (Porter & Duff 1984; the darken/lighten/multiply/screen/overlay
    extensions of the SVG compositing spec) on [H, W, C] images and [H, W, 1] alphas, not
    premultiplied in or out. Returns the image and its alpha."""
    a, b = src_alpha, dst_alpha
    s, d = src * a, dst * b          # premultiplied
    union = a + b - a * b
    operators = {
        "ADD": (torch.clamp(a + b, 0, 1), torch.clamp(s + d, 0, 1)),
        "CLEAR": (torch.zeros_like(b), torch.zeros_like(d)),
        "DARKEN": (union, (1 - b) * s + (1 - a) * d + torch.min(s, d)),
        "DST": (b, d),
        "DST_ATOP": (a, a * d + (1 - b) * s),
        "DST_IN": (a * b, d * a),
        "DST_OUT": ((1 - a) * b, (1 - a) * d),
        "DST_OVER": (b + (1 - b) * a, d + (1 - b) * s),
        "LIGHTEN": (union, (1 - b) * s + (1 - a) * d + torch.max(s, d)),
        "MULTIPLY": (a * b, s * d),
        "OVERLAY": (union, torch.where(2 * d < b, 2 * s * d, a * b - 2 * (b - s) * (a - d))),
        "SCREEN": (union, s + d - s * d),
        "SRC": (a, s),
        "SRC_ATOP": (b, b * s + (1 - a) * d),
        "SRC_IN": (a * b, s * b),
        "SRC_OUT": ((1 - b) * a, (1 - b) * s),
        "SRC_OVER": (a + (1 - a) * b, s + (1 - a) * d),
        "XOR": ((1 - b) * a + (1 - a) * b, (1 - b) * s + (1 - a) * d),
    }
    if mode not in operators:
        raise ValueError(f"mode must be one of {PORTER_DUFF_MODES}, not {mode!r}")
    out_alpha, out_image = operators[mode]
    out_image = torch.where(out_alpha > 1e-5, out_image / out_alpha, torch.zeros_like(out_image))
    return torch.clamp(out_image, 0, 1), out_alpha


def _fit(x: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """[H, W, C] resized (bicubic, centre crop) to height x width."""
    if x.shape[:2] == (height, width):
        return x
    return upscale(x.movedim(-1, 0)[None], width, height, "bicubic", "center")[0].movedim(0, -1)


def porter_duff_composite(source: torch.Tensor, source_mask: torch.Tensor, destination: torch.Tensor,
                          destination_mask: torch.Tensor, mode: str) -> tuple[torch.Tensor, torch.Tensor]:
    """PorterDuffImageComposite: masks in and out (alpha = 1 - mask); the source and both masks are
    resized to the destination; the shortest batch decides."""
    count = min(len(source), len(source_mask), len(destination), len(destination_mask))
    images, masks = [], []
    for i in range(count):
        dst = destination[i]
        if source[i].shape[-1] != dst.shape[-1]:
            raise ValueError(f"source has {source[i].shape[-1]} channels and destination {dst.shape[-1]}; "
                             "they need the same number")
        h, w = dst.shape[:2]
        dst_alpha = _fit(1 - destination_mask[i][..., None], h, w)
        src = _fit(source[i], h, w)
        src_alpha = _fit(1 - source_mask[i][..., None], h, w)
        image, alpha = porter_duff(src, src_alpha, dst, dst_alpha, mode)
        images.append(image)
        masks.append(1 - alpha[..., 0])
    return torch.stack(images), torch.stack(masks)
