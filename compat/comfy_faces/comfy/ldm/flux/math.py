"""ComfyUI's ``comfy.ldm.flux.math`` for plugins, written over torch and the attention face.

ComfyUI keeps rotary embeddings as one rotation matrix per value pair: ``rope(pos, dim, theta)`` gives
``[..., L, dim/2, 2, 2]`` (``[[cos, -sin], [sin, cos]]`` of ``pos * theta^(-2j/dim)``), and ``apply_rope1``
multiplies each pair ``(x[2j], x[2j+1])`` of ``x [..., L, d]`` by its matrix. Plexus's own Flux keeps the
cos / sin halves instead (models.flux.rope_frequencies / apply_rope); the result is the same rotation."""
from __future__ import annotations

import torch
from torch import Tensor

from comfy.ldm.modules.attention import optimized_attention


def rope(pos: Tensor, dim: int, theta: float) -> Tensor:
    if dim % 2:
        raise ValueError(f"comfy.ldm.flux.math.rope: dim must be even, got {dim}")
    exponents = torch.arange(0, dim, 2, dtype=torch.float64, device=pos.device) / dim
    angles = pos.to(torch.float64).unsqueeze(-1) * (1.0 / theta ** exponents)   # [..., L, dim/2]
    cos, sin = angles.cos(), angles.sin()
    matrix = torch.stack([cos, -sin, sin, cos], dim=-1).unflatten(-1, (2, 2))
    return matrix.to(torch.float32)


def apply_rope1(x: Tensor, freqs_cis: Tensor) -> Tensor:
    pairs = x.to(freqs_cis.dtype).unflatten(-1, (-1, 2)).unsqueeze(-1)          # [..., d/2, 2, 1]
    rotated = torch.matmul(freqs_cis, pairs).squeeze(-1)                         # [..., d/2, 2]
    return rotated.flatten(-2).type_as(x)


def apply_rope(xq: Tensor, xk: Tensor, freqs_cis: Tensor) -> tuple[Tensor, Tensor]:
    return apply_rope1(xq, freqs_cis), apply_rope1(xk, freqs_cis)


def attention(q: Tensor, k: Tensor, v: Tensor, pe: Tensor | None, mask=None, transformer_options={}) -> Tensor:
    """q, k, v ``[B, heads, L, d]`` -> ``[B, L, heads*d]``, rotating q and k by ``pe`` first."""
    if pe is not None:
        q, k = apply_rope1(q, pe).type_as(v), apply_rope1(k, pe).type_as(v)
    return optimized_attention(q, k, v, q.shape[1], skip_reshape=True, mask=mask,
                               transformer_options=transformer_options)
