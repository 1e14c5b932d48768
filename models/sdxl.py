"""SDXL's size conditioning: the "ADM" vector that the UNet's `label_emb` turns into a time-embedding offset.

Podell et al. 2023, "SDXL: Improving Latent Diffusion Models for High-Resolution Image Synthesis"
(arXiv:2307.01952), sec. 2.2 "micro-conditioning": each scalar (original size, crop offset, target size;
the refiner's aesthetic score instead of the target size) is embedded with the sinusoidal timestep
embedding of width 256 (cos half first) and the embeddings are concatenated after bigG's pooled output:

    base:    y = [pooled (1280), emb(height), emb(width), emb(crop_h), emb(crop_w),
                  emb(target_height), emb(target_width)]                       -> 1280 + 6 * 256 = 2816
    refiner: y = [pooled (1280), emb(height), emb(width), emb(crop_h), emb(crop_w), emb(aesthetic_score)]
                                                                               -> 1280 + 5 * 256 = 2560

The order and the embedding follow ComfyUI `model_base.SDXL.encode_adm` / `SDXLRefiner.encode_adm` and
diffusers' `add_time_ids` (original size, crop top-left, target size) with `Timesteps(256,
flip_sin_to_cos=True, downscale_freq_shift=0)`. crop_h is the crop's top offset, crop_w its left offset.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from models.unet import timestep_embedding

SIZE_EMBED_DIM = 256                 # width of each micro-conditioning embedding
BASE_ADM_CHANNELS = 1280 + 6 * SIZE_EMBED_DIM        # 2816
REFINER_ADM_CHANNELS = 1280 + 5 * SIZE_EMBED_DIM     # 2560


def embed_scalars(values: Sequence[float], dim: int = SIZE_EMBED_DIM) -> Tensor:
    """[n] scalars -> [n * dim]: each through the sinusoidal embedding, concatenated in order."""
    return timestep_embedding(torch.tensor([float(v) for v in values]), dim).reshape(-1)   # [n, dim] -> [n*dim]


def base_adm(pooled: Tensor, *, width: int, height: int, crop_w: int = 0, crop_h: int = 0,
             target_width: int | None = None, target_height: int | None = None,
             embed_dim: int = SIZE_EMBED_DIM) -> Tensor:
    """SDXL base: pooled [B, P] -> y [B, P + 6 * embed_dim]. Target size defaults to the original size."""
    sizes = [height, width, crop_h, crop_w, height if target_height is None else target_height,
             width if target_width is None else target_width]
    return _with_pooled(pooled, embed_scalars(sizes, embed_dim))


def refiner_adm(pooled: Tensor, *, width: int, height: int, crop_w: int = 0, crop_h: int = 0,
                aesthetic_score: float = 6.0, embed_dim: int = SIZE_EMBED_DIM) -> Tensor:
    """SDXL refiner: pooled [B, P] -> y [B, P + 5 * embed_dim] (aesthetic score in place of the target size)."""
    return _with_pooled(pooled, embed_scalars([height, width, crop_h, crop_w, aesthetic_score], embed_dim))


def _with_pooled(pooled: Tensor, flat: Tensor) -> Tensor:
    flat = flat.to(pooled.device, pooled.dtype).unsqueeze(0).expand(pooled.shape[0], -1)   # [B, n*dim]
    return torch.cat([pooled, flat], dim=1)
