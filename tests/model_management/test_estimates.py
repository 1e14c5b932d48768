"""Working-memory estimates grow with what they should and shrink with chunked attention."""
from __future__ import annotations

import torch

from model_management import estimate_working_memory


def test_estimates_scale_with_batch_area_dtype_and_attention_backend() -> None:
    base = estimate_working_memory((2, 4, 64, 64), torch.float16, attention_backend="sdpa")
    assert estimate_working_memory((4, 4, 64, 64), torch.float16, attention_backend="sdpa") == 2 * base
    assert estimate_working_memory((2, 4, 64, 64), torch.float32, attention_backend="sdpa") == 2 * base
    assert estimate_working_memory((2, 4, 128, 128), torch.float16, attention_backend="sdpa") == 4 * base
    naive = estimate_working_memory((2, 4, 64, 64), torch.float16, attention_backend="naive")
    sliced = estimate_working_memory((2, 4, 64, 64), torch.float16, attention_backend="sliced")
    chunked = estimate_working_memory((2, 4, 64, 64), torch.float16, attention_backend="sub_quadratic")
    assert naive > sliced > base and naive > chunked > base
    big = (2, 4, 128, 128)                 # sliced and chunked attention keep large images bounded
    for bounded, dtype in (("sliced", torch.float16), ("sub_quadratic", torch.float16), ("auto", torch.bfloat16)):
        extra = estimate_working_memory(big, dtype, attention_backend=bounded) - \
            estimate_working_memory(big, dtype, attention_backend="sdpa")
        assert 0 < extra == estimate_working_memory((2, 4, 256, 256), dtype, attention_backend=bounded) - \
            estimate_working_memory((2, 4, 256, 256), dtype, attention_backend="sdpa"), bounded
    # "auto" runs SDPA unless in bf16
    assert estimate_working_memory(big, torch.float16) == estimate_working_memory(big, torch.float16,
                                                                                  attention_backend="sdpa")
    assert estimate_working_memory((2, 4, 64, 64), torch.float16, attention_backend="sdpa", memory_factor=1.5) == int(base * 1.5)


def test_the_sliced_estimate_uses_the_attention_slice_size() -> None:
    """model_management mirrors models.attention's bound on one slice's scores (it never imports models/)."""
    from model_management import estimates
    from models import attention
    assert estimates.SLICE_SCORE_BYTES == attention.SLICE_SCORE_BYTES
