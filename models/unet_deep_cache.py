"""The LDM UNet's forward split for DeepCache-style block reuse (Ma et al. 2023, "DeepCache: Accelerating
Diffusion Models for Free", arXiv:2312.00858, sec. 3.2-3.3).

A UNet's deep features (everything below the first `depth` input blocks) change slowly between
neighbouring sampling steps. A full step runs the whole network and keeps the feature that enters
output block `len(output_blocks) - depth`; a cached step runs only the `depth` shallow input blocks
(for their fresh skips), then the last `depth` output blocks on the kept feature.

    out, deep = forward_parts(unet, x, t, context, depth=1)                 # full step: deep is kept
    out, _ = forward_parts(unet, x2, t2, context, depth=1, deep=deep)       # cached step

A full step gives the same output as `unet(x, t, context)` (no patches, no ControlNet: callers run the
plain forward for those). Shapes: B batch, C channels, H/W latent size.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from models.unet import timestep_embedding


def max_depth(unet: nn.Module) -> int:
    """The deepest split this UNet allows (every input block but the last is shallow at most)."""
    return min(len(unet.input_blocks), len(unet.output_blocks)) - 1


def forward_parts(unet: nn.Module, x: Tensor, timesteps: Tensor, context: Tensor, *, depth: int,
                  y: Tensor | None = None, deep: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """(prediction [B, Cout, H, W], deep feature) of one forward; with `deep` given, only the shallow
    blocks run and the given feature stands in for the deep part (then the returned feature is `deep`)."""
    if not 1 <= depth <= max_depth(unet):
        raise ValueError(f"cache depth {depth} is outside 1..{max_depth(unet)} for this UNet")
    dtype = unet.compute_dtype or unet.out[2].weight.dtype
    emb = unet.time_embed(timestep_embedding(timesteps, unet.config.model_channels).to(dtype))  # [B, ted]
    if unet.config.adm_in_channels:
        emb = emb + unet._label_embedding(y, len(x), dtype)
    h = x.to(dtype)
    context = context.to(dtype)
    skips: list[Tensor] = []
    shallow_inputs = unet.input_blocks if deep is None else unet.input_blocks[:depth]
    for block in shallow_inputs:
        h = block(h, emb, context)
        skips.append(h)
    first_shallow_output = len(unet.output_blocks) - depth
    if deep is None:
        h = unet.middle_block(h, emb, context)
        for block in unet.output_blocks[:first_shallow_output]:
            h = _output_block(block, h, skips, emb, context)
        deep = h
    else:
        h = deep
    for block in unet.output_blocks[first_shallow_output:]:
        h = _output_block(block, h, skips, emb, context)
    return unet.out(h), deep


def _output_block(block: nn.Module, h: Tensor, skips: list[Tensor], emb: Tensor, context: Tensor) -> Tensor:
    h = torch.cat([h, skips.pop()], dim=1)                # [B, C + Cskip, H, W]
    return block(h, emb, context, size=tuple(skips[-1].shape[-2:]) if skips else None)
