"""Pixel filters on IMAGE tensors [B, H, W, C] in 0..1: blend modes, Gaussian blur and unsharp
masking, palette quantisation (Pillow's median cut, optional Floyd-Steinberg or ordered Bayer
dithering), grey-scale morphology, the YCbCr transform and seeded noise.
"""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from imaging.latent_math import filter_channels, gaussian_kernel, sharpen_kernel
from imaging.resize import upscale

BLEND_MODES = ("normal", "multiply", "screen", "overlay", "soft_light", "difference")
DITHERS = ("none", "floyd-steinberg", "bayer-2", "bayer-4", "bayer-8", "bayer-16")
MORPHOLOGY_OPERATIONS = ("erode", "dilate", "open", "close", "gradient", "bottom_hat", "top_hat")


def _soft_light_curve(x: torch.Tensor) -> torch.Tensor:
    # The W3C compositing spec's D(Cb) for soft-light.
    return torch.where(x <= 0.25, ((16 * x - 12) * x + 4) * x, torch.sqrt(x))


def blend_layers(base: torch.Tensor, top: torch.Tensor, mode: str) -> torch.Tensor:
    """The separable blend modes of the W3C Compositing and Blending spec (difference is signed)."""
    if mode == "normal":
        return top
    if mode == "multiply":
        return base * top
    if mode == "screen":
        return 1 - (1 - base) * (1 - top)
    if mode == "overlay":
        return torch.where(base <= 0.5, 2 * base * top, 1 - 2 * (1 - base) * (1 - top))
    if mode == "soft_light":
        return torch.where(top <= 0.5, base - (1 - 2 * top) * base * (1 - base),
                           base + (2 * top - 1) * (_soft_light_curve(base) - base))
    if mode == "difference":
        return base - top
    raise ValueError(f"blend mode must be one of {BLEND_MODES}, not {mode!r}")


def _match_channels(first: torch.Tensor, second: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Give the image with fewer channels an opaque alpha channel so RGB meets RGBA."""
    if first.shape[-1] == second.shape[-1]:
        return first, second
    if first.shape[-1] < second.shape[-1]:
        return torch.cat((first, torch.ones_like(first[..., :1])), dim=-1), second
    return first, torch.cat((second, torch.ones_like(second[..., :1])), dim=-1)


def blend(image1: torch.Tensor, image2: torch.Tensor, blend_factor: float, mode: str) -> torch.Tensor:
    """image1 mixed with blend(image1, image2) by `blend_factor`, clamped to 0..1; image2 is resized
    (bicubic, centre crop) to image1's size first."""
    image1, image2 = _match_channels(image1, image2)
    if image1.shape != image2.shape:
        image2 = upscale(image2.movedim(-1, 1), image1.shape[2], image1.shape[1], "bicubic", "center").movedim(1, -1)
    mixed = blend_layers(image1, image2, mode)
    return torch.clamp(image1 * (1 - blend_factor) + mixed * blend_factor, 0, 1)


def blur(image: torch.Tensor, radius: int, sigma: float) -> torch.Tensor:
    """Gaussian blur with a (2 radius + 1)^2 kernel over [-1, 1]^2, reflect-padded edges."""
    if radius == 0:
        return image
    kernel = gaussian_kernel(2 * radius + 1, sigma)
    return filter_channels(image.movedim(-1, 1), kernel, radius).movedim(1, -1)


def sharpen(image: torch.Tensor, radius: int, sigma: float, alpha: float) -> torch.Tensor:
    """Unsharp masking with `sharpen_kernel`, clamped to 0..1."""
    if radius == 0:
        return image
    kernel = sharpen_kernel(radius, sigma, alpha)
    return torch.clamp(filter_channels(image.movedim(-1, 1), kernel, radius).movedim(1, -1), 0, 1)


def bayer_matrix(order: int) -> np.ndarray:
    """The normalised order x order Bayer threshold matrix, values centred on 0 in (-0.5, 0.5)."""
    matrix = np.zeros((1, 1), dtype=np.float64)
    for level in range(1, int(math.log2(order)) + 1):
        q = 4 ** level
        m = q * matrix
        matrix = np.block([[m - 1.5, m + 0.5], [m + 1.5, m - 0.5]]) / q
    return matrix


def _bayer_dither(pixels: np.ndarray, palette: Image.Image, order: int) -> Image.Image:
    colors = len(palette.getpalette()) // 3
    spread = 2 * 256 / colors
    threshold = spread * bayer_matrix(order) + 0.5
    h, w = pixels.shape[:2]
    tiled = np.tile(threshold, (math.ceil(h / order), math.ceil(w / order)))[:h, :w, None]
    shifted = np.clip(pixels.astype(np.float32) + tiled, 0, 255).astype(np.uint8)
    return Image.fromarray(shifted).quantize(palette=palette, dither=Image.Dither.NONE)


def quantize(image: torch.Tensor, colors: int, dither: str) -> torch.Tensor:
    """Reduce each image to a palette of `colors` (Pillow's median cut on the image itself)."""
    if dither not in DITHERS:
        raise ValueError(f"dither must be one of {DITHERS}, not {dither!r}")
    out = torch.empty_like(image[..., :3])
    for index, frame in enumerate(image[..., :3]):
        pixels = (frame * 255).to(torch.uint8).cpu().numpy()
        pil = Image.fromarray(pixels, mode="RGB")
        palette = pil.quantize(colors=colors)   # the palette, quantised again below with our dither
        if dither == "none":
            reduced = pil.quantize(palette=palette, dither=Image.Dither.NONE)
        elif dither == "floyd-steinberg":
            reduced = pil.quantize(palette=palette, dither=Image.Dither.FLOYDSTEINBERG)
        else:
            reduced = _bayer_dither(pixels, palette, int(dither.split("-")[-1]))
        out[index] = torch.from_numpy(np.asarray(reduced.convert("RGB"), dtype=np.float32) / 255)
    return out


def _window_extreme(x: torch.Tensor, size: int, *, largest: bool) -> torch.Tensor:
    """Max (or min) over a size x size window anchored at (size // 2, size // 2); pixels outside the
    image are ignored (geodesic border)."""
    before, after = size // 2, size - 1 - size // 2
    fill = -math.inf if largest else math.inf
    padded = F.pad(x, (before, after, before, after), value=fill)
    if largest:
        return F.max_pool2d(padded, size, stride=1)
    return -F.max_pool2d(-padded, size, stride=1)


def morphology(image: torch.Tensor, operation: str, kernel_size: int) -> torch.Tensor:
    """Flat grey-scale morphology with a square kernel, channel by channel (Serra 1982)."""
    x = image.movedim(-1, 1).float()

    def dilate(t: torch.Tensor) -> torch.Tensor:
        return _window_extreme(t, kernel_size, largest=True)

    def erode(t: torch.Tensor) -> torch.Tensor:
        return _window_extreme(t, kernel_size, largest=False)

    operations = {
        "erode": lambda: erode(x),
        "dilate": lambda: dilate(x),
        "open": lambda: dilate(erode(x)),
        "close": lambda: erode(dilate(x)),
        "gradient": lambda: dilate(x) - erode(x),
        "top_hat": lambda: x - dilate(erode(x)),
        "bottom_hat": lambda: erode(dilate(x)) - x,
    }
    if operation not in operations:
        raise ValueError(f"operation must be one of {MORPHOLOGY_OPERATIONS}, not {operation!r}")
    return operations[operation]().to(image.dtype).movedim(1, -1)


# ITU-R BT.601 luma weights and the JPEG (JFIF) full-range YCbCr offsets.
_KR, _KG, _KB = 0.299, 0.587, 0.114


def rgb_to_yuv(image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Y, Cb (U) and Cr (V) planes, each broadcast to the image's three channels (so they preview)."""
    r, g, b = image[..., 0:1], image[..., 1:2], image[..., 2:3]
    y = _KR * r + _KG * g + _KB * b
    u = (b - y) * 0.564 + 0.5
    v = (r - y) * 0.713 + 0.5
    shape = image[..., :3].shape
    return y.expand(shape), u.expand(shape), v.expand(shape)


def yuv_to_rgb(y: torch.Tensor, u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Inverse of `rgb_to_yuv`; each plane is averaged over its channels first."""
    y, u, v = (plane.mean(dim=-1, keepdim=True) for plane in (y, u, v))
    cb, cr = u - 0.5, v - 0.5
    return torch.cat((y + 1.403 * cr, y - 0.714 * cr - 0.344 * cb, y + 1.773 * cb), dim=-1)


def add_noise(image: torch.Tensor, seed: int, strength: float) -> torch.Tensor:
    """image + strength * N(0, 1) noise from a CPU generator seeded with `seed`, clamped to 0..1."""
    generator = torch.Generator(device="cpu").manual_seed(seed)
    noise = torch.randn(image.shape, generator=generator, device="cpu").to(image)
    return torch.clamp(image + strength * noise, 0.0, 1.0)
