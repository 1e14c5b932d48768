"""Working-memory estimates grow with what they should and shrink with chunked attention."""
from __future__ import annotations

import torch

from model_management import estimate_working_memory


def test_estimates_scale_with_batch_area_dtype_and_attention_backend() -> None:
    base = estimate_working_memory((2, 4, 64, 64), torch.float16)
    assert estimate_working_memory((4, 4, 64, 64), torch.float16) == 2 * base
    assert estimate_working_memory((2, 4, 64, 64), torch.float32) == 2 * base
    assert estimate_working_memory((2, 4, 128, 128), torch.float16) == 4 * base
    naive = estimate_working_memory((2, 4, 64, 64), torch.float16, attention_backend="naive")
    sliced = estimate_working_memory((2, 4, 64, 64), torch.float16, attention_backend="sliced")
    chunked = estimate_working_memory((2, 4, 64, 64), torch.float16, attention_backend="sub_quadratic")
    assert naive > sliced > base and naive > chunked > base
    big = (2, 4, 128, 128)                 # chunked attention is what keeps large images bounded
    assert estimate_working_memory(big, torch.float16, attention_backend="sub_quadratic") < \
        estimate_working_memory(big, torch.float16, attention_backend="sliced")
    assert estimate_working_memory((2, 4, 64, 64), torch.float16, memory_factor=1.5) == int(base * 1.5)
