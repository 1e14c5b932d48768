"""Token merging for Stable Diffusion (Bolya & Hoffman 2023, "Token merging for fast stable diffusion",
arXiv:2303.17604), as ComfyUI's TomePatchModel applies it: in the self-attention of the full-resolution
transformer blocks, `ratio` of the query tokens are merged away before attention and copied back after.

Bipartite soft matching with a random 2-D partition (the paper's section 3 / 4.1): the token grid is cut
into 2 x 2 cells; one random token per cell is a destination, the rest are sources. Each source's most
similar destination (cosine similarity of the tokens) is its match; the r = int(N ratio) sources with the
highest similarity are averaged into their destinations (with them), the others stay. After attention every
merged source takes its destination's output. As in ComfyUI only the queries are merged (keys and values keep
every token), the metric is the query tokens themselves, and blocks below full resolution are left alone.
The partition is drawn from a generator per patched model (seeded 0; ComfyUI uses torch's global one).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import Tensor

from .objects import DiffusionModel

STRIDE = 2          # the cells' size in both directions (ComfyUI's sx = sy = 2)


def random_partition(h: int, w: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """(source indices, destination indices) of the row-major h x w grid: one destination at a random
    position of each whole STRIDE x STRIDE cell; tokens outside whole cells are sources."""
    cells_h, cells_w = h // STRIDE, w // STRIDE
    choice = torch.randint(STRIDE * STRIDE, (cells_h, cells_w), generator=generator)
    rows = torch.arange(cells_h)[:, None] * STRIDE + choice // STRIDE
    cols = torch.arange(cells_w)[None, :] * STRIDE + choice % STRIDE
    is_dst = torch.zeros(h, w, dtype=torch.bool)
    is_dst[rows, cols] = True
    flat = is_dst.flatten()
    return torch.nonzero(~flat).flatten(), torch.nonzero(flat).flatten()


@dataclass(frozen=True)
class Merge:
    """One merge of [B, N, C] tokens: `merge` -> [B, N - r, C] (kept sources, then destinations),
    `unmerge` back to [B, N, C]."""
    src: Tensor            # [Ns] grid indices of the sources
    dst: Tensor            # [Nd] grid indices of the destinations
    kept: Tensor           # [B, Ns - r] positions in `src` of the sources kept
    merged: Tensor         # [B, r] positions in `src` of the sources merged
    target: Tensor         # [B, r] positions in `dst` they merge into
    tokens: int

    def merge(self, x: Tensor) -> Tensor:
        b, _, c = x.shape
        src, dst = x[:, self.src], x[:, self.dst]
        kept = torch.gather(src, 1, self.kept[..., None].expand(b, -1, c))
        moving = torch.gather(src, 1, self.merged[..., None].expand(b, -1, c))
        dst = dst.scatter_reduce(1, self.target[..., None].expand(b, -1, c), moving, reduce="mean")
        return torch.cat([kept, dst], dim=1)

    def unmerge(self, x: Tensor) -> Tensor:
        b, _, c = x.shape
        kept_count = self.kept.shape[1]
        kept, dst = x[:, :kept_count], x[:, kept_count:]
        out = x.new_zeros(b, self.tokens, c)
        out[:, self.dst] = dst
        positions = self.src[None].expand(b, -1)
        out.scatter_(1, torch.gather(positions, 1, self.kept)[..., None].expand(b, -1, c), kept)
        out.scatter_(1, torch.gather(positions, 1, self.merged)[..., None].expand(b, -1, c),
                     torch.gather(dst, 1, self.target[..., None].expand(b, -1, c)))
        return out


def bipartite_merge(metric: Tensor, h: int, w: int, r: int, generator: torch.Generator) -> Merge | None:
    """The merge of r tokens of metric [B, h*w, C] (None when nothing merges)."""
    if r <= 0 or h == 1 or w == 1:
        return None
    src, dst = random_partition(h, w, generator)
    src, dst = src.to(metric.device), dst.to(metric.device)
    with torch.no_grad():
        unit = metric / metric.norm(dim=-1, keepdim=True)
        scores = unit[:, src] @ unit[:, dst].transpose(-1, -2)             # [B, Ns, Nd] cosine similarity
        r = min(r, len(src))
        best, target = scores.max(dim=-1)
        order = best.argsort(dim=-1, descending=True)                        # most similar sources first
    merged = order[:, :r]
    return Merge(src, dst, order[:, r:], merged, torch.gather(target, 1, merged), metric.shape[1])


@dataclass
class TokenMergingPatch:
    ratio: float
    generator: torch.Generator = field(default_factory=lambda: torch.Generator().manual_seed(0))
    pending: Merge | None = None

    def merge_queries(self, q: Tensor, k: Tensor, v: Tensor, extra_options: dict) -> tuple[Tensor, Tensor, Tensor]:
        _, _, height, width = extra_options["original_shape"]
        downsample = math.ceil(math.sqrt((height * width) // q.shape[1]))
        self.pending = None
        if downsample > 1:
            return q, k, v
        self.pending = bipartite_merge(q, height, width, int(q.shape[1] * self.ratio), self.generator)
        return (q if self.pending is None else self.pending.merge(q)), k, v

    def unmerge_output(self, out: Tensor, extra_options: dict) -> Tensor:
        pending, self.pending = self.pending, None
        return out if pending is None else pending.unmerge(out)


def with_token_merging(model: DiffusionModel, ratio: float) -> DiffusionModel:
    patch = TokenMergingPatch(ratio)
    twin = model.clone()
    twin.set_model_attn1_patch(patch.merge_queries)
    twin.set_model_attn1_output_patch(patch.unmerge_output)
    return twin

