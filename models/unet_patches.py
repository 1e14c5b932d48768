"""Hook points of the LDM UNet for model patches, in ComfyUI's `transformer_options` shape.

A sampling call that carries patches runs the UNet inside :func:`patched_call`; outside one, the UNet
runs its plain forward (nothing here is consulted, the compiled path is untouched). The options dict:

    {"patches": {"attn1_patch": [fn, ...], "attn2_patch": [...], "attn1_output_patch": [...],
                 "attn2_output_patch": [...], "middle_patch": [...], "input_block_patch": [...],
                 "input_block_patch_after_skip": [...], "output_block_patch": [...]},
     "patches_replace": {"attn1": {key: fn}, "attn2": {key: fn}},
     ...any other entries (e.g. "cond_or_uncond", "sigmas") are passed to the patches as they are}

Signatures (the same as ComfyUI's, so plugins' patch functions run unchanged):

- attn1_patch / attn2_patch: `fn(n, context, value, extra_options) -> (n, context, value)`, on the
  normed tokens before the attention projections (self-attention: context = value = n).
- attn1_replace / attn2_replace, keyed `(block_name, block_id)` or `(block_name, block_id, index)`
  (index: the transformer block inside its SpatialTransformer): `fn(q, k, v, extra_options) -> out`,
  q/k/v the projected [B, N, heads*d] tensors, out before `to_out` (:func:`attention` computes the
  plain result).
- attn1_output_patch / attn2_output_patch: `fn(out, extra_options) -> out`, after `to_out`.
- middle_patch: `fn(x, extra_options) -> x`, between self- and cross-attention.
- input_block_patch / input_block_patch_after_skip: `fn(h, transformer_options) -> h`, after each input
  block, before / after its skip is kept; output_block_patch: `fn(h, skip, transformer_options) -> (h,
  skip)` before each output block concatenates its skip.

`extra_options` is the options without "patches"/"patches_replace", plus "block" (("input", 4),
("middle", 0), ("output", 3)), "block_index", "transformer_index", "original_shape", "n_heads" and
"dim_head". Block ids are the UNet's `input_blocks` / `output_blocks` indices, whatever its depths.
"""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
import threading
from typing import Any

from torch import Tensor, nn

_STATE = threading.local()      # per thread (torch.compile traces a threading.local read; a ContextVar fails)

PATCH_LISTS = ("attn1_patch", "attn2_patch", "attn1_output_patch", "attn2_output_patch", "middle_patch",
               "input_block_patch", "input_block_patch_after_skip", "output_block_patch")


def has_patches(transformer_options: dict | None) -> bool:
    if not transformer_options:
        return False
    patches = transformer_options.get("patches") or {}
    replace = transformer_options.get("patches_replace") or {}
    return any(patches.get(name) for name in PATCH_LISTS) or any(replace.get(k) for k in ("attn1", "attn2"))


@contextmanager
def patched_call(transformer_options: dict) -> Iterator[dict]:
    """Run the UNet calls inside with these options (a per-call copy, which the forward annotates)."""
    options = dict(transformer_options)
    previous = getattr(_STATE, "options", None)
    _STATE.options = options
    try:
        yield options
    finally:
        _STATE.options = previous


def active() -> dict | None:
    """The options of the patched call in progress, or None (the plain forward)."""
    return getattr(_STATE, "options", None)


# --- UNetModel.forward hooks ---------------------------------------------------------------------------

def begin(unet: nn.Module, options: dict, x: Tensor) -> None:
    """At the start of a forward: the input shape, and each transformer block's position numbered once
    (`block_index` inside its SpatialTransformer, `transformer_index` over the whole UNet)."""
    options["original_shape"] = list(x.shape)
    if not getattr(unet, "_patch_positions_numbered", False):
        count = 0
        for module in unet.modules():
            blocks = getattr(module, "transformer_blocks", None)
            if blocks is None:
                continue
            for index, block in enumerate(blocks):
                block._patch_position = (index, count)
            count += 1
        unet._patch_positions_numbered = True


def enter(options: dict, block_name: str, block_id: int) -> None:
    options["block"] = (block_name, block_id)


def _patch_list(options: dict, name: str) -> list:
    return (options.get("patches") or {}).get(name) or []


def after_input_block(options: dict, h: Tensor) -> Tensor:
    for fn in _patch_list(options, "input_block_patch"):
        h = fn(h, options)
    return h


def after_skip(options: dict, h: Tensor) -> Tensor:
    for fn in _patch_list(options, "input_block_patch_after_skip"):
        h = fn(h, options)
    return h


def before_output_block(options: dict, h: Tensor, skip: Tensor) -> tuple[Tensor, Tensor]:
    for fn in _patch_list(options, "output_block_patch"):
        h, skip = fn(h, skip, options)
    return h, skip


# --- BasicTransformerBlock with patches ----------------------------------------------------------------

def attention(q: Tensor, k: Tensor, v: Tensor, heads: int, attn: nn.Module | None = None) -> Tensor:
    """softmax(q k^T / sqrt(d)) v on [B, N, heads*d] tensors -> [B, N, heads*d] (the plain result an
    attention replace can fall back on; `attn` picks that layer's backend and upcast)."""
    from models.attention import attention_sdpa
    fn = getattr(attn, "attention_fn", attention_sdpa)
    upcast = getattr(attn, "upcast", False)
    b, n, _ = q.shape
    q, k, v = (t.view(b, -1, heads, t.shape[-1] // heads).transpose(1, 2) for t in (q, k, v))
    return fn(q, k, v, upcast).transpose(1, 2).reshape(b, n, -1)


def _attend(attn: nn.Module, n: Tensor, context: Tensor, value: Tensor) -> Tensor:
    """The layer's own attention, with a value input that may differ from the context."""
    if value is context:
        return attn(n, context)
    k_in, v_in = context, value
    if attn.kv_patch is not None:
        k_in, v_in = attn.kv_patch(k_in, v_in)
    return attn.to_out(attention(attn.to_q(n), attn.to_k(k_in), attn.to_v(v_in), attn.heads, attn))


def _replacement(options: dict, kind: str, block_key: tuple | None, position: tuple | None):
    table = (options.get("patches_replace") or {}).get(kind) or {}
    if not table or block_key is None:
        return None
    full = (block_key[0], block_key[1], position[0] if position else 0)
    return table.get(full, table.get(block_key))


def transformer_block(block: nn.Module, x: Tensor, context: Tensor, options: dict) -> Tensor:
    """BasicTransformerBlock.forward with the patches of `options` (see the module notes)."""
    position = getattr(block, "_patch_position", (0, 0))
    options["block_index"], options["transformer_index"] = position
    extra: dict[str, Any] = {k: v for k, v in options.items() if k not in ("patches", "patches_replace")}
    extra["n_heads"] = block.attn1.heads
    extra["dim_head"] = block.attn1.to_q.out_features // block.attn1.heads
    block_key = options.get("block")

    def attend(kind: str, attention, n: Tensor, context_in: Tensor) -> Tensor:
        """One attention of the block with its patches (`<kind>_patch` on (n, context, value), the
        replacement, `<kind>_output_patch`), as ComfyUI's BasicTransformerBlock applies them."""
        ctx = val = context_in
        for fn in _patch_list(options, f"{kind}_patch"):
            n, ctx, val = fn(n, ctx, val, extra)
        out = _attend_with(attention, n, ctx, val, _replacement(options, kind, block_key, position), extra)
        for fn in _patch_list(options, f"{kind}_output_patch"):
            out = fn(out, extra)
        return out

    n = block.norm1(x)
    x = x + attend("attn1", block.attn1, n, n)
    for fn in _patch_list(options, "middle_patch"):
        x = fn(x, extra)
    x = x + attend("attn2", block.attn2, block.norm2(x), context)
    return x + block.ff(block.norm3(x))


def _attend_with(attn: nn.Module, n: Tensor, context: Tensor, value: Tensor, replace, extra: dict) -> Tensor:
    if replace is None:
        return _attend(attn, n, context, value)
    q, k, v = attn.to_q(n), attn.to_k(context), attn.to_v(value)
    return attn.to_out(replace(q, k, v, extra))
