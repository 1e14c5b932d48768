"""The attention backends against the formula softmax(q k^T / sqrt(d)) v computed in float64, and "auto"'s
choice of kernel."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from models import attention
from models.attention import ATTENTION_BACKENDS, attention_backend_name, set_attention_backend
from models.checkpoint import load_checkpoint


def reference(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    q, k, v = q.double(), k.double(), v.double()
    return torch.softmax(q @ k.transpose(-1, -2) / q.shape[-1] ** 0.5, -1) @ v


@pytest.fixture
def small_chunks(monkeypatch):
    """Slices and chunks far smaller than the sequences, with ragged last ones."""
    monkeypatch.setattr(attention, "SLICE_SCORE_BYTES", 7 * 3 * 2 * 17 * 4)   # 7 rows of fp32 scores
    monkeypatch.setattr(attention, "SLICE_QUERIES", 9)
    monkeypatch.setattr(attention, "CHUNK_QUERIES", 5)
    monkeypatch.setattr(attention, "CHUNK_KEYS", 6)


@pytest.mark.parametrize("name", sorted(ATTENTION_BACKENDS))
def test_backends_match_the_formula_over_many_slices(small_chunks, name):
    fn = ATTENTION_BACKENDS[name]
    q, k, v = torch.randn(2, 3, 29, 8), torch.randn(2, 3, 17, 8), torch.randn(2, 3, 17, 12)
    expected = reference(q, k, v)
    got = fn(q, k, v, False)
    assert got.shape == (2, 3, 29, 12) and got.dtype == torch.float32
    assert (got.double() - expected).abs().max() < 1e-5, name
    half = fn(q.half(), k.half(), v.half(), True)
    assert half.dtype == torch.float16 and (half.double() - expected).abs().max() < 1e-2, name


@pytest.mark.parametrize("name", sorted(ATTENTION_BACKENDS))
def test_backends_take_head_views_of_a_projection(name):
    """The UNet hands over [B, h, N, d] views of a [B, N, h*d] projection (not contiguous)."""
    b, n, heads, d = 2, 33, 4, 40              # 40: SD1.x's narrow heads, padded to 48 on the CPU
    projected = torch.randn(3, b, n, heads * d)
    q, k, v = (t.view(b, n, heads, d).transpose(1, 2) for t in projected)
    assert not q.is_contiguous()
    got = ATTENTION_BACKENDS[name](q, k, v, False)
    assert got.shape == (b, heads, n, d)
    assert (got.double() - reference(q, k, v)).abs().max() < 1e-5, name


def test_sliced_bf16_is_within_bf16_rounding_of_the_formula(small_chunks):
    q, k, v = (torch.randn(2, 8, 64, 40) for _ in range(3))
    expected = reference(q, k, v)
    got = attention.attention_sliced(q.bfloat16(), k.bfloat16(), v.bfloat16())
    fused = F.scaled_dot_product_attention(q.bfloat16(), k.bfloat16(), v.bfloat16())
    assert got.dtype == torch.bfloat16
    err, fused_err = ((t.double() - expected).abs() for t in (got, fused))
    # bf16 keeps 8 bits: both within a few units of 2^-8 of the values' scale, the mean far below it
    assert err.max() < 0.03 and err.mean() < 4e-3
    assert fused_err.max() < 0.03


def test_auto_slices_bf16_on_the_cpu_and_uses_sdpa_otherwise():
    q, k, v = (torch.randn(1, 2, 50, 40) for _ in range(3))
    lo = [t.bfloat16() for t in (q, k, v)]
    assert torch.equal(attention.attention_auto(*lo), attention.attention_sliced(*lo))
    assert torch.equal(attention.attention_auto(q, k, v), F.scaled_dot_product_attention(q, k, v))
    upcast = attention.attention_auto(*lo, True)     # SD2.x's fp32 scores: the fused kernel in fp32
    assert torch.equal(upcast, F.scaled_dot_product_attention(*(t.float() for t in lo)).bfloat16())


def test_a_model_remembers_its_backend(tiny_checkpoint):
    unet = load_checkpoint(tiny_checkpoint("sd1")).unet
    assert attention_backend_name(unet) == "auto"
    set_attention_backend(unet, "sub_quadratic")
    assert attention_backend_name(unet) == "sub_quadratic"
    assert {m.attention_fn for m in unet.modules() if hasattr(m, "attention_fn")} == \
        {attention.attention_sub_quadratic}


def test_bf16_unet_with_auto_attention_stays_as_close_to_fp32_as_with_sdpa(tiny_checkpoint):
    """Rounding the scores to bf16 ("auto" on the CPU) adds nothing visible to a bf16 UNet's own error."""
    ckpt = load_checkpoint(tiny_checkpoint("sd1"))
    x, t, ctx = torch.randn(2, 4, 16, 16), torch.tensor([10.0, 900.0]), torch.randn(2, 5, 32)
    with torch.no_grad():
        expected = ckpt.unet(x, t, ctx).double()
        ckpt.unet.to(torch.bfloat16)
        errors = {}
        for name in ("sdpa", "auto"):
            set_attention_backend(ckpt.unet, name)
            errors[name] = ((ckpt.unet(x, t, ctx).double() - expected).norm() / expected.norm()).item()
    assert errors["sdpa"] < 0.05
    assert errors["auto"] < 1.25 * errors["sdpa"], errors
