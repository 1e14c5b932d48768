"""Working-memory estimates: how much device memory a call needs beyond the weights.

These are deliberate over-estimates from shapes alone (model_management never sees the
architecture); a model family passes `memory_factor` to scale them. A too-low estimate is caught
by the OOM fall-back chain, a too-high one only costs a partial load that was not needed.
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import torch

# Live activations per latent pixel and batch element at the highest-resolution level of an SD1.x
# UNet: 320 channels x about 10 tensors alive at once (residual, norm, conv in/out, attention q/k/v/out).
ACTIVATION_VALUES_PER_PIXEL = 3200
QUADRATIC_BACKENDS = {"naive": None}    # backend -> heads computed at once (None = all)
SLICE_SCORE_BYTES = 32 << 20             # models.attention.SLICE_SCORE_BYTES: one slice's scores


def estimate_working_memory(latent_shape: Sequence[int], dtype: torch.dtype, *,
                            attention_backend: str = "auto", heads: int = 8, memory_factor: float = 1.0,
                            chunk_queries: int = 1024, chunk_keys: int = 4096) -> int:
    """Bytes of working memory for one forward on a latent `[B, C, *spatial]` (B includes the CFG batch).

    Attention over N = prod(spatial) tokens costs B*h*N^2 fp32 scores when the backend materialises
    them ("naive"), B*h*chunk_q*chunk_k with sub-quadratic chunking (Rabe & Staats 2021,
    arXiv:2112.05682), one bounded slice of scores with "sliced" (and "auto" in bf16, which slices on the CPU), and O(N)
    with SDPA's fused kernels (counted as activations)."""
    batch, tokens = latent_shape[0], math.prod(latent_shape[2:])
    itemsize = torch.empty((), dtype=dtype).element_size()
    activations = batch * tokens * ACTIVATION_VALUES_PER_PIXEL * itemsize
    if attention_backend in QUADRATIC_BACKENDS:
        at_once = QUADRATIC_BACKENDS[attention_backend] or heads
        scores = batch * at_once * tokens * tokens * 4
    elif attention_backend == "sliced" or (attention_backend == "auto" and dtype == torch.bfloat16):
        scores = SLICE_SCORE_BYTES                  # "auto" slices bf16 on the CPU (over-counted on a GPU)
    elif attention_backend == "sub_quadratic":
        scores = batch * heads * min(tokens, chunk_queries) * min(tokens, chunk_keys) * 4
    else:
        scores = 0
    return int((activations + scores) * memory_factor)
