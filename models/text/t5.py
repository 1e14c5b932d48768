"""The T5 v1.1 encoder (T5-XXL for SD3 / SD3.5), its SentencePiece tokenizer and prompt weighting.

Architecture: Raffel et al. 2020, "Exploring the Limits of Transfer Learning with a Unified Text-to-Text
Transformer" (JMLR 21), section 2.1: pre-norm blocks with RMS layer norms (no bias, no mean), relative
position buckets shared by every layer (computed in block 0), unscaled dot-product attention; the v1.1
changes (gated GELU feed-forward, no parameter sharing with an embedding output) per google-research's
t5 `released_checkpoints.md`. Parameter names are Hugging Face's `T5EncoderModel` layout, which is how
SD3 files store T5 (`encoder.block.N.layer.0.SelfAttention.q.weight`, `shared.weight`).

Weights stay in their stored dtype (fp8 e4m3 in sd3_medium_incl_clips_t5xxlfp8 and t5xxl_fp8_e4m3fn, no
scales): every matrix is cast to the compute dtype when it is used (`T5Linear`), one layer at a time, so a
4.9 B-parameter fp8 T5 takes 4.9 GB, not 9.8 (bf16) or 19.6 (fp32); the embedding rows are gathered
and then upcast (fp8 has no embedding kernel). ComfyUI does the same ("manual cast").

Tokens as ComfyUI's T5XXLTokenizer gives them (comfy/text_encoders/sd3_clip.py, sd1_clip.SDTokenizer):
each weighted segment tokenized without special tokens, concatenated, the end token 1 appended, padded
with 0 to at least 77 tokens, one chunk whatever the length, no attention mask. Weights: the CLIP rule of
`encoder.py` against the empty prompt [1, 0, 0, ...].
"""
from __future__ import annotations

import functools
import gzip
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import KeyMismatchError, UnknownModelError, summarise_keys
from ..files import release_file_pages
from .prompt import parse_weights

TOKENIZER_FILE = Path(__file__).resolve().parent.parent / "data" / "t5_tokenizer.json.gz"
END_TOKEN = 1
PAD_TOKEN = 0
MIN_LENGTH = 77


@dataclass(frozen=True)
class T5Config:
    vocab_size: int = 32128
    d_model: int = 4096
    d_kv: int = 64
    num_heads: int = 64
    d_ff: int = 10240
    num_layers: int = 24
    relative_attention_num_buckets: int = 32
    relative_attention_max_distance: int = 128
    layer_norm_eps: float = 1e-6
    kind: str = "t5xxl"

    @property
    def hidden_size(self) -> int:
        return self.d_model


class T5Linear(nn.Linear):
    """x @ W^T with W cast to x's dtype for this call (fp8 weights are stored, never computed in)."""

    def forward(self, x: Tensor) -> Tensor:
        w = self.weight
        if w.dtype in FP8_TO_HALF and x.device.type == "cpu" and w.device.type == "cpu":
            return fp8_linear_by_rows(x, w)
        return F.linear(x, w if w.dtype == x.dtype else w.to(x.dtype))


# fp8 -> fp16 by integer ops, exact for every finite value: e5m2 is the high byte of an fp16; e4m3fn's
# s.eeee.mmm shifted left 7 as a sign-extended int16 puts eeee.mmm in fp16's exponent and mantissa (the
# copy of s landing in the exponent's top bit is cleared), then * 2^(15-7) corrects the exponent bias
# (subnormals included: fp16 subnormals scale exactly). On the CPU this takes about a third of torch's
# fp8 -> float cast, which converts element by element.
FP8_TO_HALF = {torch.float8_e4m3fn: (7, -16385, 256.0), torch.float8_e5m2: (8, -1, 1.0)}
ROW_CHUNK_ELEMENTS = 1 << 21        # weight elements converted at a time: 12 MiB of scratch, stays in cache


def fp8_to_half(w: Tensor, out: Tensor) -> Tensor:
    """The fp8 tensor `w` as float16 values, computed in `out` (int16, same shape); returns its fp16 view."""
    shift, mask, scale = FP8_TO_HALF[w.dtype]
    out.copy_(w.view(torch.int8))                      # sign-extended
    out.bitwise_left_shift_(shift)
    if mask != -1:
        out.bitwise_and_(mask)
    half = out.view(torch.float16)
    return half.mul_(scale) if scale != 1.0 else half


def fp8_linear_by_rows(x: Tensor, w: Tensor) -> Tensor:
    """x @ w^T for an fp8 `w` on the CPU, the same values as `F.linear(x, w.to(x.dtype))`: `w` converted a
    block of rows at a time into small scratch buffers (no full-size copy of the weight is made, and the
    converted block is still in cache when the matmul reads it): 3.5x faster than casting whole on 2 cores
    for T5-XXL's 10240 x 4096 matrices at 77 tokens."""
    n, k = w.shape
    rows = max(1, min(n, ROW_CHUNK_ELEMENTS // k))
    x2 = x.reshape(-1, k)
    out = torch.empty(x2.shape[0], n, dtype=x.dtype)
    bits = torch.empty(rows, k, dtype=torch.int16)
    wide = torch.empty(rows, k, dtype=x.dtype) if x.dtype != torch.float16 else None
    for start in range(0, n, rows):
        block = w[start:start + rows]
        m = block.shape[0]
        half = fp8_to_half(block, bits[:m])
        if wide is not None:
            half = wide[:m].copy_(half)
        out[:, start:start + m] = x2 @ half.t()
    return out.view(*x.shape[:-1], n)


class T5Embedding(nn.Embedding):
    """forward(ids, dtype): the rows gathered, then upcast (fp8 has no embedding kernel)."""

    def forward(self, ids: Tensor, dtype: torch.dtype) -> Tensor:
        return self.weight[ids].to(dtype)


class T5LayerNorm(nn.Module):
    """weight * x / sqrt(mean(x^2) + eps), statistics in float32 (T5's RMS norm: no mean, no bias)."""

    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: Tensor) -> Tensor:
        variance = x.float().pow(2).mean(-1, keepdim=True)
        return (x.float() * torch.rsqrt(variance + self.eps)).to(x.dtype) * self.weight.to(x.dtype)


def relative_position_bucket(relative_position: Tensor, num_buckets: int, max_distance: int) -> Tensor:
    """Bidirectional buckets (Raffel et al. 2020, sec. 2.1): half the buckets per direction, exact for
    distances below num_buckets/4, logarithmic up to max_distance, the last bucket beyond."""
    num_buckets //= 2
    buckets = (relative_position > 0).long() * num_buckets
    n = relative_position.abs()
    max_exact = num_buckets // 2
    large = max_exact + (torch.log(n.float() / max_exact) / math.log(max_distance / max_exact)
                         * (num_buckets - max_exact)).long()
    large = torch.clamp(large, max=num_buckets - 1)
    return buckets + torch.where(n < max_exact, n, large)


class T5Attention(nn.Module):
    def __init__(self, config: T5Config, has_relative_bias: bool):
        super().__init__()
        inner = config.num_heads * config.d_kv
        self.config = config
        self.q = T5Linear(config.d_model, inner, bias=False)
        self.k = T5Linear(config.d_model, inner, bias=False)
        self.v = T5Linear(config.d_model, inner, bias=False)
        self.o = T5Linear(inner, config.d_model, bias=False)
        self.relative_attention_bias = (T5Embedding(config.relative_attention_num_buckets, config.num_heads)
                                        if has_relative_bias else None)

    def position_bias(self, length: int, device, dtype) -> Tensor:
        """[1, h, L, L] additive bias from bucketed key - query offsets."""
        pos = torch.arange(length, device=device)
        buckets = relative_position_bucket(pos[None, :] - pos[:, None], self.config.relative_attention_num_buckets,
                                           self.config.relative_attention_max_distance)          # [L, L]
        return self.relative_attention_bias(buckets, dtype).permute(2, 0, 1).unsqueeze(0)

    def forward(self, x: Tensor, bias: Tensor | None) -> tuple[Tensor, Tensor]:
        """-> (output, the position bias: the one given, or block 0's own computed here)."""
        b, n, _ = x.shape
        h = self.config.num_heads
        if bias is None:
            bias = self.position_bias(n, x.device, x.dtype)
        q, k, v = (p(x).view(b, n, h, -1).transpose(1, 2) for p in (self.q, self.k, self.v))  # [B, h, L, d]
        # T5 does not scale q k^T by 1/sqrt(d) (the init absorbs it): softmax(q k^T + bias) v
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias.to(q.dtype), scale=1.0)
        return self.o(out.transpose(1, 2).reshape(b, n, -1)), bias


class T5LayerSelfAttention(nn.Module):
    def __init__(self, config: T5Config, has_relative_bias: bool):
        super().__init__()
        self.SelfAttention = T5Attention(config, has_relative_bias)
        self.layer_norm = T5LayerNorm(config.d_model, config.layer_norm_eps)


class T5DenseGatedGelu(nn.Module):
    """wo(gelu_tanh(wi_0 x) * wi_1 x) (Shazeer 2020, "GLU Variants", eq. 6; T5 v1.1's gated-gelu)."""

    def __init__(self, config: T5Config):
        super().__init__()
        self.wi_0 = T5Linear(config.d_model, config.d_ff, bias=False)
        self.wi_1 = T5Linear(config.d_model, config.d_ff, bias=False)
        self.wo = T5Linear(config.d_ff, config.d_model, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        return self.wo(F.gelu(self.wi_0(x), approximate="tanh") * self.wi_1(x))


class T5LayerFF(nn.Module):
    def __init__(self, config: T5Config):
        super().__init__()
        self.DenseReluDense = T5DenseGatedGelu(config)
        self.layer_norm = T5LayerNorm(config.d_model, config.layer_norm_eps)


class T5Block(nn.Module):
    def __init__(self, config: T5Config, index: int):
        super().__init__()
        self.layer = nn.ModuleList([T5LayerSelfAttention(config, index == 0), T5LayerFF(config)])
        # weights that view a mapped file (load_t5_encoder): the block drops their pages from the resident set
        # when it has run (read again from the page cache next time), so T5-XXL holds one block's 190 MB at a
        # time, not 4.4 GiB. Measured against keeping them (bench/sd3_memory.py --size 512, quiet machine):
        # warm encode after sampling 5.67 s at peak RSS 0.60x the file, against 7.61 s at 1.01x; slow encodes
        # (99 s) came from a loaded machine evicting the page cache, which resident file pages do not prevent
        self.releases_file_pages = False

    def forward(self, x: Tensor, bias: Tensor | None) -> tuple[Tensor, Tensor]:
        attn, ff = self.layer
        out, bias = attn.SelfAttention(attn.layer_norm(x), bias)
        x = x + out
        x = x + ff.DenseReluDense(ff.layer_norm(x))
        if self.releases_file_pages:
            release_file_pages([p.data for p in self.parameters()])
        return x, bias


class T5Stack(nn.Module):
    def __init__(self, config: T5Config):
        super().__init__()
        self.block = nn.ModuleList(T5Block(config, i) for i in range(config.num_layers))
        self.final_layer_norm = T5LayerNorm(config.d_model, config.layer_norm_eps)


class T5EncoderModel(nn.Module):
    """Parameters `shared.weight` and `encoder.*` (HF names). forward(ids [B, L]) -> hidden [B, L, D]."""

    OFFLOAD_BLOCKS = ("encoder.block",)
    CASTS_WEIGHTS_PER_USE = True      # model management keeps the stored (fp8) weights; T5Linear casts them

    def __init__(self, config: T5Config):
        super().__init__()
        self.config = config
        self.shared = T5Embedding(config.vocab_size, config.d_model)
        self.encoder = T5Stack(config)

    def forward(self, ids: Tensor, dtype: torch.dtype) -> Tensor:
        # every weight is used inside the forward of the module that holds it (the position bias in block 0's),
        # so model management's streaming hooks (--novram) put it in place first
        x = self.shared(ids, dtype)
        bias = None
        for block in self.encoder.block:
            x, bias = block(x, bias)
        return self.encoder.final_layer_norm(x)


# --- layout ------------------------------------------------------------------------------------------------

IGNORED_KEYS = ("encoder.embed_tokens.weight",)    # a duplicate of shared.weight in SD3's all-in-one file


def t5_config_from_shapes(shapes: Mapping[str, tuple[int, ...]]) -> T5Config:
    if "shared.weight" not in shapes or "encoder.final_layer_norm.weight" not in shapes:
        raise UnknownModelError("Not a T5 encoder: expected shared.weight and encoder.final_layer_norm.weight",
                                summarise_keys(sorted(shapes)))
    vocab, d_model = shapes["shared.weight"]
    layers = {int(m.group(1)) for k in shapes if (m := re.match(r"encoder\.block\.(\d+)\.", k))}
    buckets, heads = shapes["encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight"]
    inner = shapes["encoder.block.0.layer.0.SelfAttention.q.weight"][0]
    return T5Config(vocab_size=vocab, d_model=d_model, d_kv=inner // heads, num_heads=heads,
                    d_ff=shapes["encoder.block.0.layer.1.DenseReluDense.wi_0.weight"][0], num_layers=len(layers),
                    relative_attention_num_buckets=buckets)


def t5_state_dict(state: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """The file's tensors the model takes (a T5 file may also carry `encoder.embed_tokens` or a decoder)."""
    return {k: v for k, v in state.items() if k.startswith(("shared.", "encoder.")) and k not in IGNORED_KEYS}


# --- tokenizer and the encoder object -------------------------------------------------------------------------

@functools.lru_cache(maxsize=1)
def t5_tokenizer():
    """Google's T5 SentencePiece vocabulary (32,100 pieces) as a `tokenizers` Tokenizer (models/data/README.md)."""
    from tokenizers import Tokenizer
    return Tokenizer.from_str(gzip.decompress(TOKENIZER_FILE.read_bytes()).decode("utf-8"))


def tokenize_t5(text: str, min_length: int = MIN_LENGTH) -> list[tuple[int, float]]:
    """Prompt -> one chunk of (token, weight): segments, end token, 0-padding to `min_length`."""
    tokenizer = t5_tokenizer()
    tokens: list[tuple[int, float]] = []
    for segment, weight in parse_weights(text):
        ids = tokenizer.encode(segment, add_special_tokens=False).ids
        tokens.extend((t, weight) for t in ids)
    tokens.append((END_TOKEN, 1.0))
    tokens.extend((PAD_TOKEN, 1.0) for _ in range(min_length - len(tokens)))
    return tokens


class T5TextEncoder(nn.Module):
    """T5 text tower with the interface of `encoder.TextEncoder`: tokenize / encode -> (cond, None)."""

    OFFLOAD_BLOCKS = ("model.encoder.block",)

    def __init__(self, config: T5Config, model: T5EncoderModel | None = None,
                 compute_dtype: torch.dtype | None = None):
        super().__init__()
        self.config = config
        self.model = model if model is not None else T5EncoderModel(config)
        self.compute_dtype = compute_dtype

    kind = "t5xxl"

    @property
    def device(self) -> torch.device:
        return self.model.shared.weight.device

    def _dtype(self) -> torch.dtype:
        stored = self.model.encoder.final_layer_norm.weight.dtype
        if self.compute_dtype is not None:
            return self.compute_dtype
        return stored if stored in (torch.float32, torch.float16, torch.bfloat16) else torch.float32

    def tokenize(self, text: str, embeddings=None) -> list[list[tuple[int, float]]]:
        return [tokenize_t5(text)]

    @torch.no_grad()
    def encode(self, text_or_tokens, **_) -> tuple[Tensor, None]:
        """-> (cond [1, L, D] float32, None): T5 has no pooled output."""
        chunks = self.tokenize(text_or_tokens) if isinstance(text_or_tokens, str) else text_or_tokens
        chunk = [t for c in chunks for t in c]
        rows = [[t for t, _ in chunk]]
        is_weighted = any(w != 1.0 for _, w in chunk)
        if is_weighted:
            rows.append(([END_TOKEN] + [PAD_TOKEN] * len(chunk))[:len(chunk)])
        z = self.model(torch.tensor(rows, device=self.device), self._dtype()).float()      # [n, L, D]
        if is_weighted:
            weights = torch.tensor([w for _, w in chunk], dtype=z.dtype, device=z.device)[:, None]
            is_one = torch.tensor([w == 1.0 for _, w in chunk], device=z.device)[:, None]
            z = torch.where(is_one, z[0], (z[0] - z[1]) * weights + z[1]).unsqueeze(0)
        return z[:1], None


def load_t5_encoder(state_dict: Mapping[str, Tensor], *, compute_dtype: torch.dtype | None = None) -> T5TextEncoder:
    """A T5 encoder over the file's tensors in their stored dtype (views stay views); `compute_dtype` is what
    it computes in (None: the stored float dtype, or float32 for fp8 files)."""
    params = t5_state_dict(state_dict)
    config = t5_config_from_shapes({k: tuple(v.shape) for k, v in params.items()})
    with torch.device("meta"):
        model = T5EncoderModel(config)
    expected = set(model.state_dict())
    missing, unexpected = sorted(expected - set(params)), sorted(set(params) - expected)
    if missing or unexpected:
        raise KeyMismatchError("The T5 encoder weights do not fit the T5 v1.1 layout",
                               f"missing: {summarise_keys(missing)}; unexpected: {summarise_keys(unexpected)}")
    model.load_state_dict(dict(params), strict=True, assign=True)
    for block in model.encoder.block:
        block.releases_file_pages = True
    return T5TextEncoder(config, model.eval().requires_grad_(False), compute_dtype)


def random_t5_state_dict(config: T5Config, *, seed: int = 0, dtype: torch.dtype = torch.float32,
                         with_embed_tokens_copy: bool = False) -> dict[str, Tensor]:
    """Random weights in the HF layout (what SD3 files store), deterministic per key and seed."""
    from models.testing import random_tensor
    with torch.device("meta"):
        layout = {k: tuple(v.shape) for k, v in T5EncoderModel(config).state_dict().items()}
    state = {k: random_tensor(k, s, torch.float32, seed, std=1.0 if k == "shared.weight" else None).to(dtype)
             for k, s in layout.items()}
    if with_embed_tokens_copy:
        state["encoder.embed_tokens.weight"] = state["shared.weight"].clone()
    return state
