"""LoRA extraction from a weight difference (ComfyUI's LoraSave; the SVD recipe of kohya-ss/sd-scripts
`extract_lora_from_models.py`): the best rank-r factorisation of delta W in the Frobenius norm is its
truncated SVD (Eckart-Young), delta W ~ (U_r S_r) V_r^T; the factors are clamped to the 0.99 quantile of
their values (symmetrically: |x| <= q), which trims outliers fp16 could not store well.

Convolutions: a 3x3 (or larger) kernel is flattened to [out, in*kh*kw] and the down factor reshaped back
to [r, in, kh, kw] with a 1x1 up factor [out, r, 1, 1]; 1x1 kernels are squeezed to matrices.
"""
from __future__ import annotations

import torch
from torch import Tensor

CLAMP_QUANTILE = 0.99


def extract_lora(diff: Tensor, rank: int, clamp_quantile: float | None = CLAMP_QUANTILE) -> tuple[Tensor, Tensor]:
    """delta W [out, in(, kh, kw)] -> (up, down) with up @ down ~ delta W at rank min(rank, out, in).
    `clamp_quantile` None keeps the factors as the SVD gives them."""
    is_conv = diff.ndim == 4
    kernel = tuple(diff.shape[2:4]) if is_conv else None
    out_dim, in_dim = diff.shape[:2]
    rank = min(rank, in_dim, out_dim)
    matrix = diff.flatten(1) if is_conv else diff                  # [out, in * kh * kw]
    u, s, vh = torch.linalg.svd(matrix.float(), full_matrices=False)
    up = u[:, :rank] @ torch.diag(s[:rank])                        # [out, r]
    down = vh[:rank, :]                                            # [r, in * kh * kw]
    if clamp_quantile is not None:
        bound = torch.quantile(torch.cat([up.flatten(), down.flatten()]), clamp_quantile)
        up, down = up.clamp(-bound, bound), down.clamp(-bound, bound)
    if is_conv:
        up = up.reshape(out_dim, rank, 1, 1)
        down = down.reshape(rank, in_dim, *kernel)
    return up, down


def write_lora_file(path, tensors: dict[str, Tensor]) -> None:
    """The extracted tensors as one .safetensors file (no metadata, as ComfyUI's LoraSave)."""
    from safetensors.torch import save_file
    save_file(tensors, str(path))
