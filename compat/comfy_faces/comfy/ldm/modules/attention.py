"""ComfyUI's ``comfy.ldm.modules.attention`` for plugins: the attention functions packs call on their own
q/k/v (``optimized_attention(q, k, v, heads, mask=None, ...)``, ``[B, N, heads*d]`` in and out unless
``skip_reshape`` / ``skip_output_reshape`` say ``[B, heads, N, d]``), over Plexus's models.attention
(its configured backend without a mask, torch SDPA with one), and ``wrap_attn`` with ComfyUI's
``transformer_options["optimized_attention_override"]`` hook."""
from __future__ import annotations

import functools
from typing import Any, Callable

import torch
import torch.nn.functional as F

from models import attention as _attention

_REGISTERED: dict[str, Callable] = {}


def _split_heads(t: torch.Tensor, heads: int) -> torch.Tensor:
    b, n, width = t.shape
    return t.view(b, n, heads, width // heads).transpose(1, 2)


def _attend(q, k, v, heads: int, mask=None, attn_precision=None, skip_reshape: bool = False,
            skip_output_reshape: bool = False, backend: Callable = _attention.attention_auto) -> torch.Tensor:
    if not skip_reshape:
        q, k, v = (_split_heads(t, heads) for t in (q, k, v))
    upcast = attn_precision == torch.float32
    if mask is None:
        out = backend(q, k, v, upcast)
    else:
        if mask.ndim == 2:
            mask = mask.unsqueeze(0)
        if mask.ndim == 3:
            mask = mask.unsqueeze(1)
        dtype = torch.float32 if upcast else q.dtype
        out = F.scaled_dot_product_attention(q.to(dtype), k.to(dtype), v.to(dtype),
                                             attn_mask=mask.to(dtype) if mask.is_floating_point() else mask)
        out = out.to(q.dtype)
    if skip_output_reshape:
        return out
    b, h, n, d = out.shape
    return out.transpose(1, 2).reshape(b, n, h * d)


def wrap_attn(func: Callable) -> Callable:
    """Route a call through ``transformer_options["optimized_attention_override"](func, *args, **kwargs)``
    when one is set (once: the override's own call of ``func`` runs it directly)."""
    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any):
        if kwargs.get("_inside_attn_wrapper"):
            return func(*args, **kwargs)
        options = kwargs.get("transformer_options") or {}
        override = options.get("optimized_attention_override") if isinstance(options, dict) else None
        if override is not None:
            return override(func, *args, **{**kwargs, "_inside_attn_wrapper": True})
        return func(*args, **kwargs)
    return wrapper


def _public(backend: Callable) -> Callable:
    @wrap_attn
    def attention(q, k, v, heads, mask=None, attn_precision=None, skip_reshape=False, skip_output_reshape=False,
                  **kwargs):
        return _attend(q, k, v, heads, mask, attn_precision, skip_reshape, skip_output_reshape, backend)
    return attention


attention_basic = _public(_attention.attention_sdpa)
attention_pytorch = _public(_attention.attention_sdpa)
attention_split = _public(_attention.attention_sliced)
attention_sub_quad = _public(_attention.attention_sub_quadratic)
optimized_attention = _public(_attention.attention_auto)
optimized_attention_masked = optimized_attention


def optimized_attention_for_device(device: Any = None, mask: bool = False, small_input: bool = False) -> Callable:
    return attention_pytorch if small_input else optimized_attention


def register_attention_function(name: str, func: Callable) -> None:
    _REGISTERED.setdefault(name, func)


def get_attention_function(name: str, default: Any = ...) -> Callable | None:
    builtin = {"basic": attention_basic, "pytorch": attention_pytorch, "split": attention_split,
               "sub_quad": attention_sub_quad, "optimized": optimized_attention}
    if name in builtin:
        return builtin[name]
    if name in _REGISTERED:
        return _REGISTERED[name]
    if default is ...:
        raise KeyError(f"attention function {name!r} is not registered")
    return default


# --- transformer block classes packs subclass or look for (Advanced-ControlNet's reference attention) ----------
class _NotInPlexus(torch.nn.Module):
    def __init__(self, *args: Any, **kwargs: Any):
        raise NotImplementedError(f"comfy.ldm.modules.attention.{type(self).__name__}: ComfyUI's transformer blocks "
                                  "are not built in Plexus (its UNet transformer is models/unet.py); no Plexus "
                                  "module is an instance of this class")


class BasicTransformerBlock(_NotInPlexus):
    pass


class SpatialTransformer(_NotInPlexus):
    pass


class SpatialVideoTransformer(SpatialTransformer):
    pass
