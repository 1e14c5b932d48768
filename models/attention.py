"""Attention backends shared by the UNet and the VAE.

Every backend computes softmax(q k^T / sqrt(d)) v (Vaswani et al. 2017, eq. 1) on tensors shaped
[B, heads, N, d]; they differ only in how much memory the N x M score matrix takes:

- "sdpa" (default): `torch.nn.functional.scaled_dot_product_attention`, which picks a fused kernel.
- "sliced": the score matrix for a slice of queries at a time (the "attention slicing" of
  A1111/diffusers); peak memory B*heads*slice*M instead of B*heads*N*M.
- "sub_quadratic": chunked over queries and keys with a running log-sum-exp, so peak memory is bounded by
  the chunk sizes (Rabe & Staats 2021, "Self-attention does not need O(n^2) memory", arXiv:2112.05682, alg. 1).

`upcast=True` computes the scores and softmax in float32 when the inputs are fp16/bf16 (needed by SD2.x in
fp16, whose attention logits overflow fp16: Stability-AI/stablediffusion `ldm/modules/attention.py` computes
q k^T in fp32 by default, `_ATTN_PRECISION = "fp32"`, and diffusers' SD2.1 config sets `upcast_attention`).
The backend is chosen when a model is built (or with `set_attention_backend` on a model), never through a
module-level global.
"""
from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

AttentionFn = Callable[[Tensor, Tensor, Tensor, bool], Tensor]

SLICE_QUERIES = 1024          # sliced: queries per slice
CHUNK_QUERIES = 1024          # sub_quadratic: queries per chunk
CHUNK_KEYS = 4096             # sub_quadratic: keys per chunk


def _needs_upcast(q: Tensor, upcast: bool) -> bool:
    return upcast and q.dtype in (torch.float16, torch.bfloat16)


def attention_sdpa(q: Tensor, k: Tensor, v: Tensor, upcast: bool = False) -> Tensor:
    """q [B, h, N, d], k/v [B, h, M, d] -> [B, h, N, d]."""
    if _needs_upcast(q, upcast):
        return F.scaled_dot_product_attention(q.float(), k.float(), v.float()).to(q.dtype)
    return F.scaled_dot_product_attention(q, k, v)


def attention_sliced(q: Tensor, k: Tensor, v: Tensor, upcast: bool = False) -> Tensor:
    """Exact attention, SLICE_QUERIES query rows at a time."""
    scale = 1.0 / math.sqrt(q.shape[-1])
    out = torch.empty_like(q)
    compute = torch.float32 if _needs_upcast(q, upcast) else q.dtype
    kt = k.to(compute).transpose(-1, -2)                        # [B, h, d, M]
    vc = v.to(compute)
    for start in range(0, q.shape[-2], SLICE_QUERIES):
        qs = q[..., start:start + SLICE_QUERIES, :].to(compute)
        scores = torch.matmul(qs, kt) * scale                   # [B, h, n, M]
        out[..., start:start + SLICE_QUERIES, :] = torch.matmul(scores.softmax(-1), vc).to(q.dtype)
    return out


def attention_sub_quadratic(q: Tensor, k: Tensor, v: Tensor, upcast: bool = False) -> Tensor:
    """Exact attention with memory bounded by CHUNK_QUERIES x CHUNK_KEYS (Rabe & Staats 2021, alg. 1)."""
    scale = 1.0 / math.sqrt(q.shape[-1])
    compute = torch.float32 if _needs_upcast(q, upcast) else q.dtype
    out = torch.empty_like(q)
    for qs in range(0, q.shape[-2], CHUNK_QUERIES):
        qc = q[..., qs:qs + CHUNK_QUERIES, :].to(compute) * scale          # [B, h, n, d]
        acc = torch.zeros_like(qc)                                          # sum_j exp(s_j - m) v_j
        denom = qc.new_zeros(qc.shape[:-1] + (1,))                          # sum_j exp(s_j - m)
        running_max = qc.new_full(qc.shape[:-1] + (1,), -math.inf)
        for ks in range(0, k.shape[-2], CHUNK_KEYS):
            kc = k[..., ks:ks + CHUNK_KEYS, :].to(compute)
            vc = v[..., ks:ks + CHUNK_KEYS, :].to(compute)
            scores = torch.matmul(qc, kc.transpose(-1, -2))                 # [B, h, n, m]
            new_max = torch.maximum(running_max, scores.amax(-1, keepdim=True))
            correction = torch.exp(running_max - new_max)                   # rescale earlier chunks
            weights = torch.exp(scores - new_max)
            acc = acc * correction + torch.matmul(weights, vc)
            denom = denom * correction + weights.sum(-1, keepdim=True)
            running_max = new_max
        out[..., qs:qs + CHUNK_QUERIES, :] = (acc / denom).to(q.dtype)
    return out


ATTENTION_BACKENDS: dict[str, AttentionFn] = {
    "sdpa": attention_sdpa,
    "sliced": attention_sliced,
    "sub_quadratic": attention_sub_quadratic,
}


def attention_backend(name: str) -> AttentionFn:
    """The backend function for a setting value; raises with the valid names."""
    try:
        return ATTENTION_BACKENDS[name]
    except KeyError:
        raise ValueError(f"unknown attention backend {name!r}; choose one of {sorted(ATTENTION_BACKENDS)}") \
            from None


def set_attention_backend(model: torch.nn.Module, name: str) -> None:
    """Switch every attention layer inside `model` (anything with an `attention_fn` attribute)."""
    fn = attention_backend(name)
    for module in model.modules():
        if hasattr(module, "attention_fn"):
            module.attention_fn = fn


def set_attention_upcast(model: torch.nn.Module, is_upcast: bool) -> None:
    """Turn fp32 attention scores on or off for every attention layer inside `model` that has the switch
    (the dtype policy decides; SD2.x asks for it in fp16)."""
    for module in model.modules():
        if hasattr(module, "attention_fn") and hasattr(module, "upcast"):
            module.upcast = is_upcast
