"""Operations on LATENT dicts ({"samples": [B, C, h, w], "noise_mask"?, "batch_index"?}).

Each function returns a new dict and never modifies its input in place. Pixel sizes are converted
to latent cells with `downscale` (8 for the SD family).
"""
from __future__ import annotations

import math

import torch

from imaging.resize import upscale

ROTATIONS = ("none", "90 degrees", "180 degrees", "270 degrees")
FLIPS = ("x-axis: vertically", "y-axis: horizontally")


def empty(width: int, height: int, batch_size: int, *, channels: int = 4, downscale: int = 8) -> dict:
    return {"samples": torch.zeros([batch_size, channels, height // downscale, width // downscale])}


def _expand_masks(masks: torch.Tensor, batch: int) -> torch.Tensor:
    if masks.shape[0] < batch:
        masks = masks.repeat(math.ceil(batch / masks.shape[0]), 1, 1, 1)[:batch]
    return masks


def from_batch(latent: dict, batch_index: int, length: int) -> dict:
    """Take `length` items starting at `batch_index`, remembering their original positions (for noise)."""
    samples = latent["samples"]
    start = min(samples.shape[0] - 1, batch_index)
    length = min(samples.shape[0] - start, length)
    out = dict(latent, samples=samples[start:start + length].clone())
    if "noise_mask" in latent:
        masks = latent["noise_mask"]
        out["noise_mask"] = masks.clone() if masks.shape[0] == 1 else \
            _expand_masks(masks, samples.shape[0])[start:start + length].clone()
    if "batch_index" in latent:
        out["batch_index"] = latent["batch_index"][start:start + length]
    else:
        out["batch_index"] = list(range(start, start + length))
    return out


def repeat_batch(latent: dict, amount: int) -> dict:
    samples = latent["samples"]
    out = dict(latent, samples=samples.repeat((amount, 1, 1, 1)))
    if "noise_mask" in latent and latent["noise_mask"].shape[0] > 1:
        masks = _expand_masks(latent["noise_mask"], samples.shape[0])
        out["noise_mask"] = masks.repeat((amount, 1, 1, 1))
    if "batch_index" in latent:
        indices = latent["batch_index"]
        offset = max(indices) - min(indices) + 1
        out["batch_index"] = indices + [i + k * offset for k in range(1, amount) for i in indices]
    return out


def resize_to(latent: dict, width: int, height: int, method: str, crop: str, *, downscale: int = 8) -> dict:
    """Resize to a pixel size; a zero side keeps the aspect ratio; both zero is a no-op. Minimum 64 px."""
    if width == 0 and height == 0:
        return latent
    samples = latent["samples"]
    h, w = samples.shape[2], samples.shape[3]
    if width == 0:
        height = max(64, height)
        width = max(64, round(w * height / h))
    elif height == 0:
        width = max(64, width)
        height = max(64, round(h * width / w))
    else:
        width, height = max(64, width), max(64, height)
    return dict(latent, samples=upscale(samples, width // downscale, height // downscale, method, crop))


def rescale(latent: dict, scale_by: float, method: str) -> dict:
    samples = latent["samples"]
    width, height = round(samples.shape[3] * scale_by), round(samples.shape[2] * scale_by)
    return dict(latent, samples=upscale(samples, width, height, method, "disabled"))


def rotate(latent: dict, rotation: str) -> dict:
    quarter_turns = {r: i for i, r in enumerate(ROTATIONS)}[rotation]
    return dict(latent, samples=torch.rot90(latent["samples"], k=quarter_turns, dims=[3, 2]))


def flip(latent: dict, flip_method: str) -> dict:
    dim = 2 if flip_method.startswith("x") else 3
    return dict(latent, samples=torch.flip(latent["samples"], dims=[dim]))


def crop(latent: dict, width: int, height: int, x: int, y: int, *, downscale: int = 8) -> dict:
    samples = latent["samples"]
    x = min(x // downscale, samples.shape[3] - 8)
    y = min(y // downscale, samples.shape[2] - 8)
    x, y = max(x, 0), max(y, 0)
    return dict(latent, samples=samples[:, :, y:y + height // downscale, x:x + width // downscale])


def feather_mask(shape: torch.Size, feather: int, *, top: bool, bottom: bool, left: bool, right: bool) -> torch.Tensor:
    """A mask of ones whose edges ramp linearly to 1/feather over `feather` cells on the chosen sides."""
    mask = torch.ones(shape)
    for t in range(feather):
        ramp = (t + 1) / feather
        if top:
            mask[:, :, t] *= ramp
        if bottom:
            mask[:, :, mask.shape[2] - 1 - t] *= ramp
        if left:
            mask[:, :, :, t] *= ramp
        if right:
            mask[:, :, :, mask.shape[3] - 1 - t] *= ramp
    return mask


def composite(dest: dict, source: dict, x: int, y: int, feather: int = 0, *, downscale: int = 8) -> dict:
    """Paste `source` into `dest` at pixel position (x, y), optionally feathering the inner edges."""
    x, y, feather = x // downscale, y // downscale, feather // downscale
    to = dest["samples"]
    out = to.clone()
    src = source["samples"][:, :, :to.shape[2] - y, :to.shape[3] - x]
    region = (slice(None), slice(None), slice(y, y + src.shape[2]), slice(x, x + src.shape[3]))
    if feather == 0:
        out[region] = src
    else:
        mask = feather_mask(src.shape, feather, top=y != 0, bottom=y + src.shape[2] < to.shape[2],
                            left=x != 0, right=x + src.shape[3] < to.shape[3])
        out[region] = src * mask + out[region] * (1 - mask)
    return dict(dest, samples=out)


def blend(first: dict, second: dict, blend_factor: float) -> dict:
    """first * factor + second * (1 - factor); `second` is resized (centre crop, bicubic) to match."""
    a, b = first["samples"], second["samples"]
    if a.shape != b.shape:
        b = upscale(b, a.shape[3], a.shape[2], "bicubic", "center")
    return dict(first, samples=a * blend_factor + b * (1 - blend_factor))


def set_noise_mask(latent: dict, mask: torch.Tensor) -> dict:
    return dict(latent, noise_mask=mask.reshape((-1, 1, mask.shape[-2], mask.shape[-1])))


def empty_video(width: int, height: int, length: int, batch_size: int, *, channels: int, frames_per_latent: int,
                downscale: int) -> dict:
    """Zeros [B, C, (length - 1) // frames_per_latent + 1, H / downscale, W / downscale]: a causal video
    VAE's latent, whose first frame stands alone and each later latent frame covers frames_per_latent
    frames (HunyuanVideo / Wan: 16 channels, 4, 8; Mochi: 12, 6, 8; LTX-Video: 128, 8, 32; Cosmos: 16, 8, 8)."""
    frames = (length - 1) // frames_per_latent + 1
    return {"samples": torch.zeros([batch_size, channels, frames, height // downscale, width // downscale])}


def trim_frames(latent: dict, amount: int) -> dict:
    """TrimVideoLatent: the latent without its first `amount` latent frames (dim 2); other keys kept."""
    out = dict(latent)
    out["samples"] = latent["samples"][:, :, amount:]
    return out


def empty_sequence(length: int, batch_size: int, *, shape: tuple[int, ...], kind: str | None = None) -> dict:
    """Zeros [B, *shape, length] for sequence latents (ACE-Step audio: shape (8, 16); Hunyuan3D-2: (64,)
    with length = the resolution), with the latent's "type" when the family marks one."""
    latent = {"samples": torch.zeros([batch_size, *shape, length])}
    if kind is not None:
        latent["type"] = kind
    return latent


def ace_step_frames(seconds: float) -> int:
    """ACE-Step's latent length: 44.1 kHz audio, a hop of 512 samples, 8x temporal compression."""
    return int(seconds * 44100 / 512 / 8)
