"""A diffusion model whose layer weights are stored in fp8 and computed in a wider dtype (UNETLoader's
`weight_dtype`: fp8_e4m3fn, fp8_e4m3fn_fast, fp8_e5m2).

What ComfyUI does with these options (nodes.py UNETLoader, comfy/ops.py `manual_cast`; behaviour, not
code): the diffusion model is built in the fp8 dtype, so the file's weights are rounded to fp8 when they are
loaded, and every layer casts its weight and bias to the compute dtype when it runs. `_fast` adds fp8 matrix
multiplication where the device has it (recent NVIDIA GPUs); elsewhere it is the same as fp8_e4m3fn, and so
it is here (no fp8 matrix kernels are used).

Here: the parameters of the model's Linear, Conv, LayerNorm, GroupNorm and Embedding layers (weight and
bias, all but a few kB of the model) are converted to fp8 once, at load; other tensors (position-embedding
grids, RMS-norm scales) keep the compute dtype. The model computes in `compute_dtype` (its `compute_dtype`
attribute, which MMDiT / Flux / UNetModel read instead of their weights' dtype), and while it runs a
torch-function mode casts each fp8 weight to the activations' dtype inside the functional call that uses it
(`F.linear` on the CPU converts a block of rows at a time: models/text/t5.py `fp8_linear_by_rows`), so the
full-width weights are never held. The model is marked `CASTS_WEIGHTS_PER_USE`, so model management keeps the
fp8 weights on the device as they are (model_management/weights.py). A 2 B-parameter MM-DiT holds 2 GB of
weights instead of 4 GB in bf16.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.overrides import TorchFunctionMode

from .errors import ModelError
from .text.t5 import FP8_TO_HALF, fp8_linear_by_rows

WEIGHT_DTYPES = {"fp8_e4m3fn": torch.float8_e4m3fn, "fp8_e4m3fn_fast": torch.float8_e4m3fn,
                 "fp8_e5m2": torch.float8_e5m2}
FP8_LAYERS = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose2d, nn.LayerNorm, nn.GroupNorm,
              nn.Embedding)
# the functional calls those layers' forwards make; their fp8 tensor arguments are cast for the call
CASTING_FUNCTIONS = frozenset({F.linear, F.conv1d, F.conv2d, F.conv3d, F.conv_transpose2d, F.layer_norm,
                               F.group_norm, F.embedding})


def weight_dtype_of(name: str) -> torch.dtype | None:
    """UNETLoader's `weight_dtype` value -> the storage dtype (None for "default")."""
    if name == "default":
        return None
    if name not in WEIGHT_DTYPES:
        raise ModelError(f"unknown weight_dtype {name!r}; choose one of {['default', *WEIGHT_DTYPES]}")
    return WEIGHT_DTYPES[name]


class CastFp8Weights(TorchFunctionMode):
    """Inside it, a CASTING_FUNCTIONS call gets its fp8 tensor arguments cast to `dtype`."""

    def __init__(self, dtype: torch.dtype):
        super().__init__()
        self.dtype = dtype

    def _cast(self, value):
        return value.to(self.dtype) if isinstance(value, Tensor) and value.dtype in FP8_TO_HALF else value

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func not in CASTING_FUNCTIONS:
            return func(*args, **kwargs)
        if func is F.linear and len(args) >= 2:
            x, w = args[0], args[1]
            bias = args[2] if len(args) > 2 else kwargs.get("bias")
            if w.dtype in FP8_TO_HALF and w.device.type == "cpu" and x.device.type == "cpu" \
                    and x.dtype in (torch.float32, torch.bfloat16, torch.float16):
                out = fp8_linear_by_rows(x, w)
                return out if bias is None else out + self._cast(bias).to(out.dtype)
        return func(*(self._cast(a) for a in args), **{k: self._cast(v) for k, v in kwargs.items()})


class _Fp8Forward:
    """The model's own forward, run inside CastFp8Weights (set as the instance's `forward`)."""

    def __init__(self, forward, dtype: torch.dtype):
        self.forward, self.dtype = forward, dtype

    def __call__(self, *args, **kwargs):
        with CastFp8Weights(self.dtype):
            return self.forward(*args, **kwargs)


def store_weights_in_fp8(model: nn.Module, fp8: torch.dtype, compute_dtype: torch.dtype) -> nn.Module:
    """Round the layer weights of `model` to `fp8` (in place, each converted tensor replacing its source, so
    a file view's pages are released by the caller's usual release) and make it compute in `compute_dtype`."""
    if fp8 not in FP8_TO_HALF:
        raise ModelError(f"{fp8} is not an fp8 dtype")
    if not hasattr(model, "compute_dtype"):
        raise ModelError(f"{type(model).__name__} cannot store its weights in fp8 (it has no compute_dtype)")
    for layer in model.modules():
        if isinstance(layer, FP8_LAYERS):
            for name, param in layer.named_parameters(recurse=False):
                if param.is_floating_point():
                    setattr(layer, name, nn.Parameter(param.data.to(fp8), requires_grad=False))
    return compute_per_use(model, compute_dtype)


def compute_per_use(model: nn.Module, compute_dtype: torch.dtype) -> nn.Module:
    """Make `model`, whose layer weights are already fp8 (a loader built it so), compute in `compute_dtype`
    with each fp8 weight cast inside the call that uses it."""
    if not hasattr(model, "compute_dtype"):
        raise ModelError(f"{type(model).__name__} cannot keep its weights in fp8 (it has no compute_dtype)")
    model.compute_dtype = compute_dtype
    model.CASTS_WEIGHTS_PER_USE = True
    model.forward = _Fp8Forward(model.forward, compute_dtype)
    return model


class ScaledFp8Linear(nn.Linear):
    """A Linear of a ComfyUI `scaled_fp8` file: fp8 `weight` whose true value is weight * `scale_weight` (a
    float32 scalar buffer). forward: F.linear(x * scale, weight, bias), which is x @ (weight * scale)^T + bias
    (the scale is a scalar), so the fp8 weight is used as stored and cast per use like any other.
    A weight that is not fp8 is its true value already: model management merges a patch (LoRA) into
    weight * scale_weight in float32 (`SCALED_WEIGHTS`, model_management/weights.py `true_value`) and puts the
    result, in the compute dtype, in the slot; it is used as it is, without the scale (ComfyUI re-rounds such a
    weight to fp8 / scale with stochastic rounding; keeping it wide is the exact patched value)."""

    SCALED_WEIGHTS = {"weight": "scale_weight"}
    scale_weight: Tensor

    @classmethod
    def convert(cls, layer: nn.Linear, scale: Tensor) -> None:
        layer.__class__ = cls
        layer.register_buffer("scale_weight", scale.detach().to(torch.float32).reshape(()).clone())

    def forward(self, x: Tensor) -> Tensor:
        if self.weight.dtype not in FP8_TO_HALF:          # the true (patched) value: no scale again
            return F.linear(x, self.weight.to(x.dtype), None if self.bias is None else self.bias.to(x.dtype))
        return F.linear(x * self.scale_weight.to(x.dtype), self.weight, self.bias)
