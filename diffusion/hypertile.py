"""HyperTile (tfernd/HyperTile, 2023): the UNet's self-attention on large latents split into tiles, so its
cost grows with the tile count instead of quadratically with the token count. ComfyUI's HyperTile node.

An attn1 patch rearranges the queries of the self-attention blocks that run at the input's resolution
(and at up to `max_depth` halvings of it) from [B, H*W, C] into [B*nh*nw, (H/nh)*(W/nw), C] tiles; the
output patch puts the tiles back. As in ComfyUI only the queries are tiled: the attention reshapes keys and
values by the queries' batch (`unet_patches.attention`, ComfyUI's optimized attention), so each tile attends
to one contiguous run of H*W/(nh*nw) tokens. The tile counts nh / nw are picked from the divisors of H and
W that keep tiles at least `tile_size / 8` latent pixels (times 2^depth with scale_depth): one of the
`swap_size` largest counts, at random (a generator per patched model, seeded 0; ComfyUI uses torch's
global one). As in ComfyUI the draw is randint(0, n - 1), upper end exclusive, so the last of the n
choices is never taken (swap_size 2 always cuts the most tiles), and the token grid is read with
h = sqrt(N W/H), w = sqrt(N H/W) (the sides swapped on non-square latents; the tiling is still undone
exactly).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import Tensor

from .objects import DiffusionModel


def tile_count(size: int, min_tile: int, choices: int, generator: torch.Generator) -> int:
    """How many tiles to cut `size` into: size // d for the divisors d >= min(min_tile, size), one of the
    first `choices` of them (the most tiles first) but the last, at random (ComfyUI's draw)."""
    min_tile = min(min_tile, size)
    counts = [size // d for d in range(min_tile, size + 1) if size % d == 0][:choices]
    index = int(torch.randint(0, len(counts) - 1, (1,), generator=generator)) if len(counts) > 1 else 0
    return counts[index]


def to_tiles(x: Tensor, h: int, w: int, nh: int, nw: int) -> Tensor:
    """[B, (nh th nw tw), C] tokens (row-major over H = nh th, W = nw tw) -> [B nh nw, th tw, C]."""
    b, _, c = x.shape
    return (x.view(b, nh, h // nh, nw, w // nw, c).permute(0, 1, 3, 2, 4, 5)
            .reshape(b * nh * nw, (h // nh) * (w // nw), c))


def from_tiles(x: Tensor, h: int, w: int, nh: int, nw: int) -> Tensor:
    """The inverse of `to_tiles`."""
    c = x.shape[-1]
    b = x.shape[0] // (nh * nw)
    return (x.view(b, nh, nw, h // nh, w // nw, c).permute(0, 1, 3, 2, 4, 5).reshape(b, h * w, c))


@dataclass
class HyperTilePatch:
    """The attn1 patch and output patch pair; `pending` carries one block's tiling to its output patch."""
    tile_size: int
    swap_size: int
    max_depth: int
    scale_depth: bool
    generator: torch.Generator = field(default_factory=lambda: torch.Generator().manual_seed(0))
    pending: tuple[int, int, int, int] | None = None

    def tile_in(self, q: Tensor, k: Tensor, v: Tensor, extra_options: dict) -> tuple[Tensor, Tensor, Tensor]:
        tokens = q.shape[-2]
        shape = extra_options["original_shape"]
        sizes = [(shape[-2] / 2 ** i) * (shape[-1] / 2 ** i) for i in range(self.max_depth + 1)]
        if tokens not in sizes:
            return q, k, v
        aspect = shape[-1] / shape[-2]
        h, w = round(math.sqrt(tokens * aspect)), round(math.sqrt(tokens / aspect))
        factor = 2 ** sizes.index(tokens) if self.scale_depth else 1
        latent_tile = max(32, self.tile_size) // 8 * factor
        nh = tile_count(h, latent_tile, self.swap_size, self.generator)
        nw = tile_count(w, latent_tile, self.swap_size, self.generator)
        if nh * nw > 1:
            q = to_tiles(q, h, w, nh, nw)
            self.pending = (nh, nw, h, w)
        return q, k, v

    def tile_out(self, out: Tensor, extra_options: dict) -> Tensor:
        if self.pending is None:
            return out
        nh, nw, h, w = self.pending
        self.pending = None
        return from_tiles(out, h, w, nh, nw)


def with_hypertile(model: DiffusionModel, tile_size: int, swap_size: int, max_depth: int,
                   scale_depth: bool) -> DiffusionModel:
    patch = HyperTilePatch(tile_size, swap_size, max_depth, scale_depth)
    twin = model.clone()
    twin.set_model_attn1_patch(patch.tile_in)
    twin.set_model_attn1_output_patch(patch.tile_out)
    return twin
