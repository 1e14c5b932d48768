"""bench/roofline.py rows for the SD3 medium MM-DiT (random bf16 weights, hidden 1536, 24 heads of 64):
batch 2 (the CFG pair), 154 context tokens of width 4096 (CLIP-L/G + T5 as ComfyUI concatenates them), the
2048-wide pooled vector.

A full 24-block forward at 1024² takes about a minute on 2 cores, so the row runs the first `BLOCKS` joint
blocks only (embedders, BLOCKS blocks, final layer): every joint block has the same shapes, so its multiple
of the FLOP bound is the full model's, and the full forward's time is about 24 / BLOCKS times the block
part. The row's name says how many blocks ran."""
from __future__ import annotations

import torch

from models.mmdit import MMDiT, MMDiTConfig
from models.testing import module_layout, random_tensor

DTYPE = torch.bfloat16
BLOCKS = 4


def build(depth: int = BLOCKS) -> MMDiT:
    config = MMDiTConfig(depth=depth)
    with torch.device("meta"):
        model = MMDiT(config)
    state = {k: random_tensor(k, s, DTYPE, 0) for k, s in module_layout(MMDiT, config, "").items()}
    model.load_state_dict(state, assign=True)
    return model.eval().requires_grad_(False)


def rows(sizes: list[int]) -> list:
    from bench.roofline import Forward

    model = build()
    out = []
    for size in sizes:
        g = torch.Generator().manual_seed(1)
        x = torch.randn(2, 16, size // 8, size // 8, generator=g).to(DTYPE)
        context = torch.randn(2, 154, 4096, generator=g).to(DTYPE)
        y = torch.randn(2, 2048, generator=g).to(DTYPE)
        t = torch.tensor([1000.0, 1000.0])
        out.append(Forward(f"sd3-mmdit ({BLOCKS}/24 blocks)", size, model,
                           lambda x=x, t=t, c=context, y=y: model(x, t, c, y)))
    return out
