"""Attention backends shared by the UNet and the VAE.

Every backend computes softmax(q k^T / sqrt(d)) v (Vaswani et al. 2017, eq. 1) on tensors shaped
[B, heads, N, d]; they differ only in how much memory the N x M score matrix takes:

- "auto" (default): "sliced" for bf16 on the CPU, "sdpa" everywhere else (see below).
- "sdpa": `torch.nn.functional.scaled_dot_product_attention`, which picks a fused kernel.
- "sliced": the score matrix for a slice of queries at a time (the "attention slicing" of
  A1111/diffusers), every head at once; a slice has at most SLICE_QUERIES rows and its scores take at
  most SLICE_SCORE_BYTES, so peak memory is bounded whatever the image size.

Why "auto" slices bf16 on the CPU: PyTorch's fused CPU kernel multiplies small blocks (256 x 512 scores
at a time), which runs far below the machine's bf16 matrix throughput when the head is narrow (SD1.x has
40-wide heads at the largest level). Two batched matrix products over a whole slice, with the softmax in
between done in place while the slice is still in cache, are faster: at 4,096 tokens x 40 on an AVX-512
BF16 CPU 250 ms against 336 ms per call, and ahead at every SD1.x shape (`bench/attention.py`). The price
is that the scores are rounded to bf16 before the softmax (the fused kernel keeps them in fp32). That
rounding is of the same size as the one q and k already carry, being bf16 outputs of bf16 layers, and a
full-size UNet's output moves no further from its fp32 result for it (tests/models/test_attention.py,
`bench/attention.py --unet`). In fp32 the fused kernel is the faster one, so "auto" keeps it there.
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

DEFAULT_ATTENTION = "auto"

SLICE_QUERIES = 256           # sliced: query rows per slice (measured best of 64..1024 on SD1.x shapes)...
SLICE_SCORE_BYTES = 32 << 20  # ...and the scores of one slice (all heads) take at most this much
VALUE_WIDTH_MULTIPLE = 16     # sliced, CPU: values padded to a multiple of this width
CHUNK_QUERIES = 1024          # sub_quadratic: queries per chunk
CHUNK_KEYS = 4096             # sub_quadratic: keys per chunk


def _needs_upcast(q: Tensor, upcast: bool) -> bool:
    return upcast and q.dtype in (torch.float16, torch.bfloat16)


def attention_auto(q: Tensor, k: Tensor, v: Tensor, upcast: bool = False) -> Tensor:
    """The default: "sliced" for bf16 on the CPU (faster there, see the module notes), else "sdpa". Under
    torch.compile always "sdpa": inductor cannot lower the sliced path's `out=` views (diffusion/compile.py)."""
    if q.device.type == "cpu" and q.dtype == torch.bfloat16 and not upcast and not torch.compiler.is_compiling():
        return attention_sliced(q, k, v)
    return attention_sdpa(q, k, v, upcast)


def attention_sdpa(q: Tensor, k: Tensor, v: Tensor, upcast: bool = False) -> Tensor:
    """q [B, h, N, d], k/v [B, h, M, d] -> [B, h, N, d]."""
    if _needs_upcast(q, upcast):
        return F.scaled_dot_product_attention(q.float(), k.float(), v.float()).to(q.dtype)
    return F.scaled_dot_product_attention(q, k, v)


def attention_sliced(q: Tensor, k: Tensor, v: Tensor, upcast: bool = False) -> Tensor:
    """Exact attention, a slice of query rows at a time for every head at once, the slice's scores
    (at most SLICE_SCORE_BYTES) kept in one buffer that the softmax overwrites in place."""
    compute = torch.float32 if _needs_upcast(q, upcast) else q.dtype
    *lead, n, d = q.shape
    m, dv = k.shape[-2], v.shape[-1]
    heads = math.prod(lead)
    scale = 1.0 / math.sqrt(d)
    queries = torch.empty(heads, n, d, dtype=compute, device=q.device)
    torch.mul(q, scale, out=queries.view(q.shape))                       # [heads, N, d], contiguous
    keys_t = k.to(compute).reshape(heads, m, d).transpose(1, 2).contiguous()    # [heads, d, M]
    values = v.to(compute).reshape(heads, m, dv)
    pad = (-dv) % VALUE_WIDTH_MULTIPLE if q.device.type == "cpu" else 0
    if pad:                      # oneDNN's kernels run 40-wide products at half the speed of 48-wide ones
        values = F.pad(values, (0, pad))                                  # [heads, M, dv + pad]
    itemsize = torch.empty((), dtype=compute).element_size()
    rows = max(1, min(n, SLICE_QUERIES, SLICE_SCORE_BYTES // max(1, heads * m * itemsize)))
    scores = torch.empty(heads, rows, m, dtype=compute, device=q.device)
    out = torch.empty(heads, n, dv + pad, dtype=compute, device=q.device)
    for start in range(0, n, rows):
        stop = min(n, start + rows)
        block = scores.view(-1)[:heads * (stop - start) * m].view(heads, stop - start, m)  # contiguous
        torch.bmm(queries[:, start:stop], keys_t, out=block)
        torch.ops.aten._softmax.out(block, -1, False, out=block)         # in place: no second buffer
        torch.bmm(block, values, out=out[:, start:stop])
    return out[..., :dv].reshape(*lead, n, dv).to(q.dtype)


def attention_sub_quadratic(q: Tensor, k: Tensor, v: Tensor, upcast: bool = False) -> Tensor:
    """Exact attention with memory bounded by CHUNK_QUERIES x CHUNK_KEYS (Rabe & Staats 2021, alg. 1)."""
    scale = 1.0 / math.sqrt(q.shape[-1])
    compute = torch.float32 if _needs_upcast(q, upcast) else q.dtype
    out = q.new_empty(q.shape[:-1] + v.shape[-1:])
    for qs in range(0, q.shape[-2], CHUNK_QUERIES):
        qc = q[..., qs:qs + CHUNK_QUERIES, :].to(compute) * scale          # [B, h, n, d]
        acc = qc.new_zeros(qc.shape[:-1] + v.shape[-1:])                    # sum_j exp(s_j - m) v_j
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
    "auto": attention_auto,
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
    model.attention_backend_name = name


def attention_backend_name(model: torch.nn.Module) -> str:
    """The backend `model` was built with or last switched to."""
    return getattr(model, "attention_backend_name", DEFAULT_ATTENTION)


def set_attention_upcast(model: torch.nn.Module, is_upcast: bool) -> None:
    """Turn fp32 attention scores on or off for every attention layer inside `model` that has the switch
    (the dtype policy decides; SD2.x asks for it in fp16)."""
    for module in model.modules():
        if hasattr(module, "attention_fn") and hasattr(module, "upcast"):
            module.upcast = is_upcast
