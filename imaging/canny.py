"""Canny edge detection on IMAGE tensors [B, H, W, C] in 0..1 (ComfyUI's `Canny` node).

Canny 1986, "A Computational Approach to Edge Detection" (IEEE TPAMI 8(6)): Gaussian smoothing, the
gradient, non-maximum suppression along the gradient direction, then double thresholds with hysteresis.

ComfyUI's node calls kornia.filters.canny with its defaults (5x5 Gaussian, sigma 1); this module computes
the same thing in plain torch, step for step, so the node needs no extra dependency:
- grey = 0.299 R + 0.587 G + 0.114 B (ITU-R BT.601, kornia rgb_to_grayscale);
- separable 5x5 Gaussian, sigma 1, normalised, "reflect" border (mirror without repeating the edge pixel);
- unnormalised 3x3 Sobel gradients with a "replicate" border; magnitude sqrt(gx^2 + gy^2 + 1e-6), so the
  thresholds are in those units (a unit step reaches about 2.59 after the blur, not 1);
- the direction rounded to a multiple of 45 degrees; a pixel survives non-maximum suppression when it beats
  both neighbours along it: strictly on the left / upper side, ">=" on the right / lower side of a
  horizontal / vertical gradient, strictly both ways on a diagonal (OpenCV's tie rule), and strictly
  beats the flat border magnitude sqrt(1e-6);
- weak pixels: magnitude > low; strong: > high; hysteresis keeps weak pixels 8-connected to a strong one.
The node outputs the binary edge map as a 3-channel IMAGE.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from execution.errors import PlexusError

BT601_LUMA = (0.299, 0.587, 0.114)
GAUSSIAN_SIZE = 5
GAUSSIAN_SIGMA = 1.0
EPS = 1e-6
# (dy, dx) of the neighbour in direction k (0 = +x, counted towards +y in 45-degree steps)
_NEIGHBOURS = ((0, 1), (1, 1), (1, 0), (1, -1), (0, -1), (-1, -1), (-1, 0), (-1, 1))
JUMPS_PER_ROUND = 4               # hysteresis: pointer jumps per propagation round
_TIE_DIRECTIONS = (0, 2)           # right and down: ">=" (the pixel left of / above a tied pair is kept)


def _grey(x: Tensor) -> Tensor:                                    # [B, C, H, W] -> [B, 1, H, W]
    if x.shape[1] == 1:
        return x
    r, g, b = x[:, 0:1], x[:, 1:2], x[:, 2:3]
    return BT601_LUMA[0] * r + BT601_LUMA[1] * g + BT601_LUMA[2] * b


def _gaussian_blur(x: Tensor, size: int = GAUSSIAN_SIZE, sigma: float = GAUSSIAN_SIGMA) -> Tensor:
    offsets = torch.arange(size, dtype=x.dtype, device=x.device) - size // 2
    taps = torch.exp(-offsets ** 2 / (2 * sigma ** 2))
    taps = taps / taps.sum()
    pad = size // 2
    x = F.pad(x, (pad, pad, pad, pad), mode="reflect")
    x = F.conv2d(x, taps.view(1, 1, 1, size))                     # along W
    return F.conv2d(x, taps.view(1, 1, size, 1))                  # along H


def _sobel(x: Tensor) -> tuple[Tensor, Tensor]:
    """Unnormalised Sobel (d/dx, d/dy), replicate border: [B, 1, H, W] each."""
    k = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]], dtype=x.dtype, device=x.device)
    x = F.pad(x, (1, 1, 1, 1), mode="replicate")
    return F.conv2d(x, k.view(1, 1, 3, 3)), F.conv2d(x, k.t().contiguous().view(1, 1, 3, 3))


def _non_maximum_suppressed(gx: Tensor, gy: Tensor) -> Tensor:
    """The gradient magnitude where it is a local maximum along the gradient direction, else 0."""
    height, width = gx.shape[-2:]
    # the magnitude one pixel beyond the image is that of a flat pixel (no gradient), sqrt(EPS)
    padded = torch.sqrt(F.pad(gx, (1, 1, 1, 1)) ** 2 + F.pad(gy, (1, 1, 1, 1)) ** 2 + EPS)
    magnitude = padded[..., 1:1 + height, 1:1 + width]
    neighbours = torch.stack([padded[..., 1 + dy:1 + dy + height, 1 + dx:1 + dx + width]
                              for dy, dx in _NEIGHBOURS], dim=2)              # [B, 1, 8, H, W]
    octant = torch.round(torch.nan_to_num(torch.atan2(gy, gx)) * (4 / math.pi))  # -4..4, 45-degree steps
    forward, backward = (octant % 8).long(), ((octant + 4) % 8).long()
    is_max = torch.ones_like(magnitude, dtype=torch.bool)
    for direction in (forward, backward):
        neighbour = torch.gather(neighbours, 2, direction.unsqueeze(2)).squeeze(2)
        accepts_tie = (direction == _TIE_DIRECTIONS[0]) | (direction == _TIE_DIRECTIONS[1])
        is_max &= (magnitude > neighbour) | (accepts_tie & (magnitude == neighbour))
    is_max &= magnitude > math.sqrt(EPS)
    return magnitude * is_max


def _hysteresis(weak: Tensor, strong: Tensor) -> Tensor:
    """Strong pixels plus the weak pixels 8-connected to one through weak pixels: the same fixed point as
    growing the strong set one pixel at a time (kornia's loop), found by labelling the connected components
    of the candidates instead (Shiloach & Vishkin 1982: each pixel's label is a pixel index, the component's
    smallest once done; a round hooks each label onto the smallest label next to its pixels, then jumps
    pointers), so a long edge chain takes a few rounds, not one per pixel."""
    candidates = weak | strong                                             # [B, 1, H, W]
    b, _, h, w = candidates.shape
    n = h * w
    none = float(n)                                                        # the label of a non-candidate
    index = torch.arange(n, dtype=torch.float64).view(1, 1, h, w).expand(b, 1, h, w)
    labels = torch.where(candidates, index, none).reshape(b, n)
    sentinel = torch.full((b, 1), none, dtype=torch.float64)
    while True:
        grid = labels.view(b, 1, h, w)
        lowest = torch.where(candidates, -F.max_pool2d(-grid, 3, stride=1, padding=1), none).reshape(b, n)
        parents = torch.cat([torch.minimum(labels, lowest), sentinel], 1)   # [B, n + 1]: label of pixel i
        parents = parents.scatter_reduce(1, labels.long(), lowest, "amin")  # hook: label -> smaller neighbour
        for _ in range(JUMPS_PER_ROUND):
            parents = torch.gather(parents, 1, parents.long())              # pointer jumping
        updated = parents[:, :n]
        if torch.equal(updated, labels):
            break
        labels = updated
    ids = labels.long()
    has_strong = torch.zeros(b, n + 1, dtype=torch.bool).scatter_reduce(
        1, ids, strong.reshape(b, n), "amax")                              # component -> holds a strong pixel
    return candidates & torch.gather(has_strong, 1, ids).view(b, 1, h, w)


def canny_edges(x: Tensor, low_threshold: float, high_threshold: float) -> Tensor:
    """x [B, C, H, W] (C 1 or 3, float) -> binary edges [B, 1, H, W] in x's float dtype."""
    grey = _grey(x.float())
    gx, gy = _sobel(_gaussian_blur(grey))
    magnitude = _non_maximum_suppressed(gx, gy)
    return _hysteresis(magnitude > low_threshold, magnitude > high_threshold).to(x.dtype)


def canny(image: Tensor, low_threshold: float, high_threshold: float) -> Tensor:
    """The Canny node: IMAGE [B, H, W, C] -> its edges as a white-on-black IMAGE [B, H, W, 3]."""
    if not 0 < low_threshold <= high_threshold:
        raise PlexusError("invalid_input", "Canny: low_threshold must be positive and at most high_threshold",
                          f"got low_threshold {low_threshold}, high_threshold {high_threshold}")
    if image.ndim != 4 or image.shape[-1] not in (1, 3, 4):
        raise PlexusError("invalid_input", "Canny: image must be an IMAGE [batch, height, width, 1|3|4 channels]",
                          f"got shape {tuple(image.shape)}")
    pixels = image[..., :3].movedim(-1, 1)                                 # RGBA: the alpha is not an edge source
    edges = canny_edges(pixels.float(), low_threshold, high_threshold)    # [B, 1, H, W]
    return edges.movedim(1, -1).expand(*edges.shape[:1], *edges.shape[2:], 3).contiguous().to(image.dtype)
