"""Resizing of channel-first tensors [B, C, H, W], with the methods the nodes offer.

`upscale` is the one entry point: optional centre crop to the target aspect ratio, then one of
torch's interpolation modes, Lanczos (through Pillow, per image), or "bislerp" (bilinear
interpolation where each blend of two feature vectors is a spherical interpolation of their
directions with a linear interpolation of their lengths; used for latents, whose vectors'
directions carry the content).
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

TORCH_METHODS = ("nearest-exact", "bilinear", "area", "bicubic")
IMAGE_METHODS = ("nearest-exact", "bilinear", "area", "bicubic", "lanczos")
LATENT_METHODS = ("nearest-exact", "bilinear", "area", "bicubic", "bislerp")
CROP_METHODS = ("disabled", "center")


def center_crop_to_aspect(x: torch.Tensor, width: int, height: int) -> torch.Tensor:
    """Crop the middle of x [.., H, W] so that its aspect ratio becomes width:height."""
    old_h, old_w = x.shape[-2], x.shape[-1]
    old_aspect, new_aspect = old_w / old_h, width / height
    crop_x = crop_y = 0
    if old_aspect > new_aspect:
        crop_x = round((old_w - old_w * (new_aspect / old_aspect)) / 2)
    elif old_aspect < new_aspect:
        crop_y = round((old_h - old_h * (old_aspect / new_aspect)) / 2)
    return x[..., crop_y:old_h - crop_y, crop_x:old_w - crop_x]


def upscale(x: torch.Tensor, width: int, height: int, method: str, crop: str = "disabled") -> torch.Tensor:
    """Resize x [B, C, H, W] to [B, C, height, width]."""
    if crop == "center":
        x = center_crop_to_aspect(x, width, height)
    if method == "bislerp":
        return bislerp(x, width, height)
    if method == "lanczos":
        return lanczos(x, width, height)
    if method not in TORCH_METHODS:
        raise ValueError(f"unknown upscale method {method!r}; expected one of {TORCH_METHODS + ('lanczos', 'bislerp')}")
    dtype = x.dtype
    out = F.interpolate(x.float(), size=(height, width), mode=method)
    return out.to(dtype)


def lanczos(x: torch.Tensor, width: int, height: int) -> torch.Tensor:
    """Pillow's Lanczos resampling, image by image (values are clipped to 0..1 on the way)."""
    frames = []
    for image in x.float().clamp(0, 1).movedim(1, -1).cpu().numpy():   # [H, W, C]
        pixels = (image * 255).round().astype(np.uint8)
        channels = pixels.shape[-1]
        pil = Image.fromarray(pixels[..., 0] if channels == 1 else pixels)
        resized = np.asarray(pil.resize((width, height), Image.Resampling.LANCZOS), dtype=np.float32) / 255
        frames.append(torch.from_numpy(resized.reshape(height, width, channels)))
    return torch.stack(frames).movedim(-1, 1).to(x.dtype)


def _source_coords(size_in: int, size_out: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Bilinear (align_corners=False) sample positions: lower index, upper index, weight of upper."""
    pos = (torch.arange(size_out, dtype=torch.float64) + 0.5) * (size_in / size_out) - 0.5
    pos = pos.clamp(0, size_in - 1)
    lo = pos.floor().long()
    hi = (lo + 1).clamp(max=size_in - 1)
    return lo, hi, (pos - lo).float()


def slerp(a: torch.Tensor, b: torch.Tensor, t: torch.Tensor, dim: int = 1) -> torch.Tensor:
    """Spherical interpolation of directions, linear interpolation of norms, along `dim`.

    Shoemake (1985), "Animating rotation with quaternion curves"; falls back to a linear blend where
    the directions are (nearly) parallel.
    """
    norm_a = a.norm(dim=dim, keepdim=True)
    norm_b = b.norm(dim=dim, keepdim=True)
    unit_a = a / norm_a.clamp_min(1e-12)
    unit_b = b / norm_b.clamp_min(1e-12)
    cos = (unit_a * unit_b).sum(dim=dim, keepdim=True).clamp(-1, 1)
    omega = torch.acos(cos)
    sin_omega = torch.sin(omega)
    parallel = sin_omega.abs() < 1e-4
    safe = torch.where(parallel, torch.ones_like(sin_omega), sin_omega)
    direction = (torch.sin((1 - t) * omega) * unit_a + torch.sin(t * omega) * unit_b) / safe
    direction = torch.where(parallel, (1 - t) * unit_a + t * unit_b, direction)
    return direction * ((1 - t) * norm_a + t * norm_b)


def bislerp(x: torch.Tensor, width: int, height: int) -> torch.Tensor:
    """Bilinear resize of x [B, C, H, W] in which every blend is a `slerp` over the channel axis."""
    dtype = x.dtype
    x = x.float()
    lo, hi, t = _source_coords(x.shape[-1], width)
    x = slerp(x[..., lo], x[..., hi], t.view(1, 1, 1, -1))                   # [B, C, H, width]
    lo, hi, t = _source_coords(x.shape[-2], height)
    x = slerp(x[..., lo, :], x[..., hi, :], t.view(1, 1, -1, 1))             # [B, C, height, width]
    return x.to(dtype)
