"""Run a model in another compute dtype than its weights' (ComfyUI's ModelComputeDtype / manual cast).

    with computing_in(unet, torch.bfloat16):
        out = unet(x, t, context)          # activations in bf16, each weight cast to bf16 as it is used

The model's `compute_dtype` attribute (read by UNetModel, MMDiT and Flux to cast their inputs) is set for
the call, and a torch-function mode casts the floating-point tensor arguments of the layer functions
(linear, convolutions, norms, embeddings) to that dtype inside the call that uses them, so no second copy of
the weights is held. The stored weights are untouched.
"""
from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.overrides import TorchFunctionMode

LAYER_FUNCTIONS = frozenset({F.linear, F.conv1d, F.conv2d, F.conv3d, F.conv_transpose1d, F.conv_transpose2d,
                             F.layer_norm, F.group_norm, F.embedding, F.rms_norm})


class CastLayerArguments(TorchFunctionMode):
    """Inside it, a LAYER_FUNCTIONS call gets its floating-point tensor arguments cast to `dtype`."""

    def __init__(self, dtype: torch.dtype):
        super().__init__()
        self.dtype = dtype

    def _cast(self, value):
        if isinstance(value, Tensor) and value.is_floating_point() and value.dtype != self.dtype:
            return value.to(self.dtype)
        return value

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func not in LAYER_FUNCTIONS:
            return func(*args, **kwargs)
        return func(*(self._cast(a) for a in args), **{k: self._cast(v) for k, v in kwargs.items()})


@contextlib.contextmanager
def computing_in(module: nn.Module, dtype: torch.dtype) -> Iterator[None]:
    """`module` computes in `dtype` while inside (its `compute_dtype` restored afterwards)."""
    previous = getattr(module, "compute_dtype", None)
    module.compute_dtype = dtype
    try:
        with CastLayerArguments(dtype):
            yield
    finally:
        module.compute_dtype = previous
