"""Arithmetic on LATENT dicts: sums, scaling, interpolation, concatenation, cuts, batches, and the
latent operations (sharpen, Reinhard tone map) that LatentApplyOperation runs.

Like `latent_ops`, every function returns a new dict (a shallow copy of the first input with new
``samples``) and never modifies its inputs. Where two latents of different sizes meet, the second is
resized (bilinear, centre crop) to the first and repeated to its batch size, as ComfyUI does.
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F

from imaging.image_ops import repeat_to_batch
from imaging.resize import upscale

CONCAT_DIMS = ("x", "-x", "y", "-y", "t", "-t")
CUT_DIMS = ("x", "y", "t")
SEED_BEHAVIORS = ("random", "fixed")

LatentOperation = Callable[..., torch.Tensor]   # called as operation(latent=tensor) -> tensor


def _like(latent: dict, samples: torch.Tensor) -> dict:
    out = dict(latent)
    out["samples"] = samples
    return out


def match_shape(target: torch.Size, samples: torch.Tensor, *, repeat_batch: bool = True) -> torch.Tensor:
    """`samples` resized (bilinear, centre crop) to target's spatial size and, if asked, its batch."""
    if samples.shape[1:] != target[1:]:
        samples = upscale(samples, target[-1], target[-2], "bilinear", "center")
    return repeat_to_batch(samples, target[0]) if repeat_batch else samples


def add(first: dict, second: dict) -> dict:
    a = first["samples"]
    return _like(first, a + match_shape(a.shape, second["samples"]))


def subtract(first: dict, second: dict) -> dict:
    a = first["samples"]
    return _like(first, a - match_shape(a.shape, second["samples"]))


def multiply(latent: dict, multiplier: float) -> dict:
    return _like(latent, latent["samples"] * multiplier)


def interpolate(first: dict, second: dict, ratio: float) -> dict:
    """Interpolate directions and lengths of the per-pixel channel vectors separately: the blend of
    the unit vectors, renormalised, times the blend of the lengths (ratio 1 gives `first`)."""
    a = first["samples"]
    b = match_shape(a.shape, second["samples"])
    norm_a = torch.linalg.vector_norm(a, dim=1, keepdim=True)
    norm_b = torch.linalg.vector_norm(b, dim=1, keepdim=True)
    mixed = torch.nan_to_num(a / norm_a) * ratio + torch.nan_to_num(b / norm_b) * (1.0 - ratio)
    direction = torch.nan_to_num(mixed / torch.linalg.vector_norm(mixed, dim=1, keepdim=True))
    return _like(first, direction * (norm_a * ratio + norm_b * (1.0 - ratio)))


def concat(first: dict, second: dict, dim: str) -> dict:
    """Join along width ("x"), height ("y") or time ("t"); a leading "-" puts `second` first."""
    if dim not in CONCAT_DIMS:
        raise ValueError(f"dim must be one of {CONCAT_DIMS}, not {dim!r}")
    a = first["samples"]
    b = repeat_to_batch(second["samples"], a.shape[0])
    axis = {"x": -1, "y": -2, "t": -3}[dim[-1]]
    parts = (b, a) if dim.startswith("-") else (a, b)
    return _like(first, torch.cat(parts, dim=axis))


def cut(latent: dict, dim: str, index: int, amount: int) -> dict:
    """`amount` cells from `index` (negative counts from the end) along x, y or t, clamped to the size."""
    samples = latent["samples"]
    axis = samples.ndim - 1 - CUT_DIMS.index(dim)
    size = samples.shape[axis]
    if index >= 0:
        index = min(index, size - 1)
        amount = min(size - index, amount)
    else:
        index = max(index, -size)
        amount = min(-index, amount)
    return _like(latent, torch.narrow(samples, axis, index % size, amount))


def batch(first: dict, second: dict) -> dict:
    """Stack two batches (the second resized to the first's size); batch indices are carried along."""
    a = first["samples"]
    b = match_shape(a.shape, second["samples"], repeat_batch=False)
    out = _like(first, torch.cat((a, b), dim=0))
    out["batch_index"] = (list(first.get("batch_index", range(a.shape[0])))
                          + list(second.get("batch_index", range(b.shape[0]))))
    return out


def set_seed_behavior(latent: dict, seed_behavior: str) -> dict:
    """"fixed": every item gets the noise of the first item's index; "random": each its own."""
    out = dict(latent)
    if seed_behavior == "random":
        out.pop("batch_index", None)
    elif seed_behavior == "fixed":
        first = list(latent.get("batch_index", [0]))[0]
        out["batch_index"] = [first] * latent["samples"].shape[0]
    else:
        raise ValueError(f"seed_behavior must be one of {SEED_BEHAVIORS}, not {seed_behavior!r}")
    return out


def rebatch(latents: list[dict], batch_size: int) -> list[dict]:
    """Regroup a list of latent batches into batches of `batch_size` items; items of different
    spatial sizes never share a batch. Noise masks (at pixel size) and batch indices follow their
    items; a batch whose mask is all ones drops it."""
    groups: list[list[tuple[torch.Tensor, torch.Tensor, int]]] = []
    position = 0
    for latent in latents:
        samples = latent["samples"]
        count, height, width = samples.shape[0], samples.shape[-2], samples.shape[-1]
        mask = latent.get("noise_mask")
        if mask is None:
            mask = torch.ones((count, 1, height * 8, width * 8))
        mask = repeat_to_batch(mask.reshape((-1, 1) + mask.shape[-2:]), count)
        indices = list(latent.get("batch_index", range(position, position + count)))
        position += count
        items = [(samples[i:i + 1], mask[i:i + 1], indices[i]) for i in range(count)]
        for item in items:
            current = groups[-1] if groups else None
            if (current is None or len(current) >= batch_size
                    or current[0][0].shape[-2:] != item[0].shape[-2:]):
                groups.append([item])
            else:
                current.append(item)
    out = []
    for group in groups:
        entry = {"samples": torch.cat([s for s, _, _ in group]), "batch_index": [i for _, _, i in group]}
        mask = torch.cat([m for _, m, _ in group])
        if mask.mean() != 1.0:
            entry["noise_mask"] = mask
        out.append(entry)
    return out


def apply_operation(latent: dict, operation: LatentOperation) -> dict:
    return _like(latent, operation(latent=latent["samples"]))


def gaussian_kernel(size: int, sigma: float) -> torch.Tensor:
    """A size x size Gaussian over the grid [-1, 1]^2 (so sigma is relative to the radius), sum 1."""
    axis = torch.linspace(-1, 1, size)
    y, x = torch.meshgrid(axis, axis, indexing="ij")
    kernel = torch.exp(-(x * x + y * y) / (2.0 * sigma * sigma))
    return kernel / kernel.sum()


def sharpen_kernel(radius: int, sigma: float, alpha: float) -> torch.Tensor:
    """Unsharp-mask kernel: -10*alpha times a Gaussian, with the centre raised so the kernel sums to 1."""
    kernel = gaussian_kernel(2 * radius + 1, sigma) * -(alpha * 10)
    kernel[radius, radius] += 1.0 - kernel.sum()
    return kernel


def filter_channels(x: torch.Tensor, kernel: torch.Tensor, radius: int) -> torch.Tensor:
    """Convolve each channel of x [B, C, H, W] with `kernel` over a reflect-padded border."""
    channels = x.shape[1]
    weight = kernel.to(x).expand(channels, 1, *kernel.shape)
    padded = F.pad(x, (radius, radius, radius, radius), mode="reflect")
    return F.conv2d(padded, weight, groups=channels)


def sharpen_operation(radius: int, sigma: float, alpha: float) -> LatentOperation:
    """Sharpen the directions of the per-pixel channel vectors and keep their lengths."""
    kernel = sharpen_kernel(radius, sigma, alpha)

    def sharpen(latent: torch.Tensor, **_: object) -> torch.Tensor:
        length = torch.linalg.vector_norm(latent, dim=1, keepdim=True) + 1e-6
        return length * filter_channels(latent / length, kernel, radius)

    return sharpen


def tonemap_reinhard_operation(multiplier: float) -> LatentOperation:
    """Reinhard tone mapping, L/(1+L), of the per-pixel vector lengths, with L measured against
    (mean + 5 std) * multiplier of each item's lengths (Reinhard et al. 2002, eq. 3)."""

    def tonemap(latent: torch.Tensor, **_: object) -> torch.Tensor:
        length = torch.linalg.vector_norm(latent, dim=1, keepdim=True) + 1e-10
        mean = length.mean(dim=(1, 2, 3), keepdim=True)
        std = length.std(dim=(1, 2, 3), keepdim=True)
        top = (std * 5 + mean) * multiplier
        scaled = length / top
        return latent / length * (scaled / (scaled + 1.0)) * top

    return tonemap
