"""Operations on IMAGE tensors [B, H, W, C] (0..1) and MASK tensors [B, H, W] (1 = masked)."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from imaging.resize import upscale

MEGAPIXEL = 1024 * 1024


def _channels_first(image: torch.Tensor) -> torch.Tensor:
    return image.movedim(-1, 1)


def _channels_last(image: torch.Tensor) -> torch.Tensor:
    return image.movedim(1, -1)


def resize_to(image: torch.Tensor, width: int, height: int, method: str, crop: str) -> torch.Tensor:
    """Resize to width x height pixels; a zero side keeps the aspect ratio; both zero is a no-op."""
    if width == 0 and height == 0:
        return image
    h, w = image.shape[1], image.shape[2]
    if width == 0:
        width = max(1, round(w * height / h))
    elif height == 0:
        height = max(1, round(h * width / w))
    return _channels_last(upscale(_channels_first(image), width, height, method, crop))


def rescale(image: torch.Tensor, scale_by: float, method: str) -> torch.Tensor:
    width, height = round(image.shape[2] * scale_by), round(image.shape[1] * scale_by)
    return _channels_last(upscale(_channels_first(image), width, height, method, "disabled"))


def rescale_to_total_pixels(image: torch.Tensor, megapixels: float, method: str,
                            resolution_steps: int = 1) -> torch.Tensor:
    """Resize to about `megapixels` keeping the aspect ratio; sides rounded to multiples of `resolution_steps`."""
    scale_by = math.sqrt(megapixels * MEGAPIXEL / (image.shape[1] * image.shape[2]))
    width = max(resolution_steps, round(image.shape[2] * scale_by / resolution_steps) * resolution_steps)
    height = max(resolution_steps, round(image.shape[1] * scale_by / resolution_steps) * resolution_steps)
    return _channels_last(upscale(_channels_first(image), width, height, method, "disabled"))


def invert(image: torch.Tensor) -> torch.Tensor:
    return 1.0 - image


def batch(first: torch.Tensor, second: torch.Tensor) -> torch.Tensor:
    """Concatenate two image batches; the second is resized (bilinear, centre crop) to the first's size."""
    if first.shape[1:] != second.shape[1:]:
        second = _channels_last(upscale(_channels_first(second), first.shape[2], first.shape[1], "bilinear", "center"))
    return torch.cat((first, second), dim=0)


def crop(image: torch.Tensor, width: int, height: int, x: int, y: int) -> torch.Tensor:
    x = min(x, image.shape[2] - 1)
    y = min(y, image.shape[1] - 1)
    return image[:, y:y + height, x:x + width, :]


def solid_color(width: int, height: int, batch_size: int, color: int) -> torch.Tensor:
    """An image filled with a 0xRRGGBB colour."""
    rgb = [((color >> shift) & 0xFF) / 0xFF for shift in (16, 8, 0)]
    return torch.tensor(rgb, dtype=torch.float32).expand(batch_size, height, width, 3).contiguous()


def pad_for_outpaint(image: torch.Tensor, left: int, top: int, right: int, bottom: int,
                     feathering: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Grow the canvas with grey (0.5) borders; the mask is 1 on the new area and fades into the
    original image over `feathering` pixels (quadratic falloff) on the sides that were extended."""
    b, h, w, c = image.shape
    padded = torch.full((b, h + top + bottom, w + left + right, c), 0.5, dtype=torch.float32)
    padded[:, top:top + h, left:left + w, :] = image
    mask = torch.ones((h + top + bottom, w + left + right), dtype=torch.float32)
    inner = torch.zeros((h, w), dtype=torch.float32)
    if feathering > 0 and feathering * 2 < h and feathering * 2 < w:
        rows = torch.arange(h).view(-1, 1).expand(h, w)
        cols = torch.arange(w).view(1, -1).expand(h, w)
        far_h, far_w = torch.full_like(rows, h), torch.full_like(cols, w)
        distance = torch.stack([
            rows if top else far_h, (h - rows) if bottom else far_h,
            cols if left else far_w, (w - cols) if right else far_w,
        ]).amin(dim=0).float()
        ramp = ((feathering - distance) / feathering).clamp_min(0)
        inner = torch.where(distance < feathering, ramp * ramp, inner)
    mask[top:top + h, left:left + w] = inner
    return padded, mask


def repeat_to_batch(tensor: torch.Tensor, batch_size: int) -> torch.Tensor:
    if tensor.shape[0] > batch_size:
        return tensor[:batch_size]
    if tensor.shape[0] < batch_size:
        reps = math.ceil(batch_size / tensor.shape[0])
        return tensor.repeat((reps,) + (1,) * (tensor.dim() - 1))[:batch_size]
    return tensor


def composite_masked(destination: torch.Tensor, source: torch.Tensor, x: int, y: int,
                     mask: torch.Tensor | None = None, *, cell: int = 1, resize_source: bool = False) -> torch.Tensor:
    """Paste `source` onto `destination` (both channel-first [B, C, H, W]) at (x, y) pixels, blended by
    `mask` (1 = take source). Positions are in pixels; `cell` pixels make one tensor cell (8 for latents)."""
    destination = destination.clone()
    if resize_source:
        source = F.interpolate(source, size=destination.shape[2:], mode="bilinear")
    source = repeat_to_batch(source, destination.shape[0])
    x = max(-source.shape[3] * cell, min(x, destination.shape[3] * cell))
    y = max(-source.shape[2] * cell, min(y, destination.shape[2] * cell))
    left, top = x // cell, y // cell
    if mask is None:
        mask = torch.ones_like(source)
    else:
        mask = F.interpolate(mask.reshape((-1, 1, mask.shape[-2], mask.shape[-1])).float(),
                             size=source.shape[2:], mode="bilinear")
        mask = repeat_to_batch(mask, source.shape[0])
    # the part of the source that lands inside the destination
    src_top, src_left = max(0, -top), max(0, -left)
    dst_top, dst_left = max(0, top), max(0, left)
    height = min(source.shape[2] - src_top, destination.shape[2] - dst_top)
    width = min(source.shape[3] - src_left, destination.shape[3] - dst_left)
    if height <= 0 or width <= 0:
        return destination
    src = source[:, :, src_top:src_top + height, src_left:src_left + width]
    m = mask[:, :, src_top:src_top + height, src_left:src_left + width]
    region = destination[:, :, dst_top:dst_top + height, dst_left:dst_left + width]
    destination[:, :, dst_top:dst_top + height, dst_left:dst_left + width] = m * src + (1 - m) * region
    return destination


def composite_images(destination: torch.Tensor, source: torch.Tensor, x: int, y: int,
                     mask: torch.Tensor | None, resize_source: bool) -> torch.Tensor:
    out = composite_masked(_channels_first(destination), _channels_first(source), x, y, mask,
                           cell=1, resize_source=resize_source)
    return _channels_last(out)


# --- masks -----------------------------------------------------------------------------------------

def solid_mask(value: float, width: int, height: int) -> torch.Tensor:
    return torch.full((1, height, width), value, dtype=torch.float32)


def mask_to_image(mask: torch.Tensor) -> torch.Tensor:
    return mask.reshape((-1, 1, mask.shape[-2], mask.shape[-1])).movedim(1, -1).expand(-1, -1, -1, 3)


def image_to_mask(image: torch.Tensor, channel: str) -> torch.Tensor:
    return image[:, :, :, ("red", "green", "blue", "alpha").index(channel)]


def grow(mask: torch.Tensor, expand: int, tapered_corners: bool) -> torch.Tensor:
    """Dilate (expand > 0) or erode (expand < 0) by |expand| pixels; tapered corners use a cross-shaped
    3x3 structuring element, otherwise a full square."""
    m = mask.reshape((-1, 1, mask.shape[-2], mask.shape[-1])).float()
    kernel = torch.tensor([[0.0, 1, 0], [1, 1, 1], [0, 1, 0]]) if tapered_corners else torch.ones(3, 3)
    selected = kernel.flatten().bool()
    sign = 1.0 if expand > 0 else -1.0
    for _ in range(abs(expand)):
        patches = F.unfold(F.pad(m * sign, (1, 1, 1, 1), value=-math.inf), kernel_size=3)   # [B, 9, H*W]
        m = patches[:, selected].amax(dim=1).view_as(m) * sign
    return m.reshape((-1, mask.shape[-2], mask.shape[-1]))
