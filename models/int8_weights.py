"""A diffusion model whose Linear and Conv2d weights are stored in int8 and multiplied in int8 with dynamically
quantised activations (the opt-in `--int8-unet` weight mode; issue 22).

Weights: symmetric, per output channel, quantised once at load: `weight` is int8 in [-127, 127] and
`weight_scale` (float32, shaped to broadcast over the weight: [out, 1] or [out, 1, 1, 1]) gives the true value
`weight * weight_scale`. That halves the weights' RAM against bf16 (a quarter against fp32), whatever the speed.

Activations, per call:
- Linear: symmetric per token (a row of the flattened input): `x ~ xq * sx`, sx = max|x_row| / 127. oneDNN's
  int8 GEMM (`onednn::qlinear_pointwise`, AVX-512 VNNI here, AMX where the CPU has it) gives
  `sw[n] * sum_k xq[m, k] * wq[n, k]` (exact int32 sums), and the row scale sx[m] and the bias are applied after
  (oneDNN takes only one activation scale per call, hence the activation scale 1 in the call).
- Conv2d: asymmetric per tensor (a 3x3 kernel mixes positions, so a per-position scale does not factor out):
  uint8 with scale (max - min) / 255 over the input, zero at `zero_point`, through `onednn::qconv2d_pointwise`.

The weights are reordered into oneDNN's blocked layout on every call (`qlinear_prepack` / `qconv_prepack`): a
pass over the int8 weight, small against the product, and it keeps one copy of each weight.

Error against the float product, per output element (the formula `tests/models/test_int8_weights.py` checks):
|y - x.w| <= sum_k (|x_k| sw / 2 + |w_k| sx / 2 + sx sw / 4) for the linear (rounding to the nearest level
moves a value by at most half a step), plus the output dtype's rounding.

LoRA and other weight patches: the manager merges a patch into the true value (`SCALED_WEIGHTS`,
model_management/weights.py `true_value`, in float32) and puts the result, in the compute dtype, in the slot; a
layer whose weight is not int8 runs it as a float layer (the exact patched value, not re-quantised; its int8
speed and memory saving are lost while patched). Layers that the int8 kernels cannot run (grouped or strided
oddities, another device) are left in float at conversion; a call the kernels cannot take (an input on another
device or in fp16) runs the dequantised weight.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .errors import ModelError

INT8_LEVELS = 127
KERNEL_DTYPES = (torch.float32, torch.bfloat16)


def is_int8_available() -> bool:
    """The oneDNN int8 kernels are built in (PyTorch's x86 CPU builds)."""
    return torch.backends.mkldnn.is_available() and hasattr(torch.ops.onednn, "qlinear_pointwise")


def quantize_weight(weight: Tensor) -> tuple[Tensor, Tensor]:
    """Symmetric per output channel: (int8 weight, float32 scale shaped [out, 1, ...])."""
    w = weight.detach().float()
    scale = w.abs().amax(dim=tuple(range(1, w.dim())), keepdim=True).clamp_min(1e-12) / INT8_LEVELS
    return torch.round(w / scale).clamp_(-INT8_LEVELS, INT8_LEVELS).to(torch.int8), scale


def dequantize(weight: Tensor, scale: Tensor) -> Tensor:
    return weight.float() * scale.float()


def quantize_per_token(x: Tensor) -> tuple[Tensor, Tensor]:
    """Rows of a [M, K] input -> (int8 [M, K], float32 scale [M, 1]); x ~ xq * scale."""
    scale = x.abs().amax(dim=-1, keepdim=True).float().clamp_min_(1e-12).div_(INT8_LEVELS)
    # torch.div promotes a bf16 input to float32 against the float32 scale (and never writes into `x`); no clamp:
    # |x| / scale <= 127 up to float32 rounding, which rounds to at most 127
    return torch.div(x, scale).round_().to(torch.int8), scale


def quantize_per_tensor_uint8(x: Tensor) -> tuple[Tensor, float, int]:
    """Asymmetric over the whole tensor -> (uint8, scale, zero point); x ~ (xq - zero) * scale. The range
    always holds 0 (zero padding is then exact)."""
    lo, hi = torch.aminmax(x.detach())
    lo, hi = min(float(lo), 0.0), max(float(hi), 0.0)
    scale = max(hi - lo, 1e-12) / 255
    zero = int(min(255, max(0, round(-lo / scale))))
    q = torch.div(x, torch.tensor(scale, dtype=torch.float32)).round_().add_(zero).clamp_(0, 255).to(torch.uint8)
    return q, scale, zero


def _out_dtype(x: Tensor) -> torch.dtype:
    return x.dtype if x.dtype in KERNEL_DTYPES else torch.float32


class _Int8Weight:
    """The int8 `weight` + float32 per-output-channel `weight_scale` of Int8Linear / Int8Conv2d; model
    management reads SCALED_WEIGHTS (true value = weight * scale)."""

    SCALED_WEIGHTS = {"weight": "weight_scale"}
    weight_scale: Tensor

    @classmethod
    def convert(cls, layer: nn.Module) -> None:
        q, scale = quantize_weight(layer.weight)
        layer.__class__ = cls
        layer.weight = nn.Parameter(q, requires_grad=False)
        layer.register_buffer("weight_scale", scale)


class Int8Linear(_Int8Weight, nn.Linear):
    """nn.Linear with an int8 `weight` and float32 per-row `weight_scale` (see the module docstring)."""

    def forward(self, x: Tensor) -> Tensor:
        w, bias = self.weight, self.bias
        if w.dtype != torch.int8:                       # a patched weight: its true value, in float
            return F.linear(x, w.to(x.dtype), None if bias is None else bias.to(x.dtype))
        if x.device.type != "cpu" or x.dtype not in KERNEL_DTYPES or x.numel() == 0:
            return F.linear(x, dequantize(w, self.weight_scale).to(x.dtype),
                            None if bias is None else bias.to(x.dtype))
        rows = x.reshape(-1, x.shape[-1])
        xq, sx = quantize_per_token(rows)
        packed = torch.ops.onednn.qlinear_prepack(w, None)
        out_dtype = _out_dtype(x)
        y = torch.ops.onednn.qlinear_pointwise(
            xq, 1.0, 0, packed, self.weight_scale.reshape(-1).float(), _zeros(w.shape[0]), None, 1.0, 0,
            out_dtype, "none", [], "")
        y = y.mul_(sx.to(out_dtype))
        if bias is not None:
            y = y.add_(bias.to(out_dtype))
        return y.reshape(*x.shape[:-1], w.shape[0])


def _zeros(n: int) -> Tensor:
    return torch.zeros(n, dtype=torch.long)


def _is_int8_conv(conv: nn.Conv2d) -> bool:
    return conv.groups == 1 and conv.padding_mode == "zeros" and not isinstance(conv.padding, str)


class Int8Conv2d(_Int8Weight, nn.Conv2d):
    """nn.Conv2d with an int8 `weight` and float32 per-output-channel `weight_scale`."""

    def forward(self, x: Tensor) -> Tensor:
        w, bias = self.weight, self.bias
        if w.dtype != torch.int8:
            return self._conv_forward(x, w.to(x.dtype), None if bias is None else bias.to(x.dtype))
        if x.device.type != "cpu" or x.dtype not in KERNEL_DTYPES or x.dim() != 4 or x.numel() == 0:
            return self._conv_forward(x, dequantize(w, self.weight_scale).to(x.dtype),
                                      None if bias is None else bias.to(x.dtype))
        xq, sx, zero = quantize_per_tensor_uint8(x)
        xq = xq.contiguous(memory_format=torch.channels_last)
        stride, padding, dilation = list(self.stride), list(self.padding), list(self.dilation)
        sw = self.weight_scale.reshape(-1).float()
        packed = torch.ops.onednn.qconv_prepack(w, sw, sx, zero, stride, padding, dilation, 1, list(x.shape))
        out_dtype = _out_dtype(x)
        return torch.ops.onednn.qconv2d_pointwise(
            xq, sx, zero, packed, sw, _zeros(w.shape[0]), None if bias is None else bias.to(out_dtype),
            stride, padding, dilation, 1, 1.0, 0, out_dtype, "none", [], "")


def store_weights_in_int8(model: nn.Module, compute_dtype: torch.dtype) -> int:
    """Quantise the weights of `model`'s plain nn.Linear and nn.Conv2d layers in place (each float weight
    replaced by its int8 copy, so the float one is freed) and make the model compute in `compute_dtype`.
    Returns how many layers were converted."""
    if not is_int8_available():
        raise ModelError("int8 weights need PyTorch's oneDNN int8 kernels (an x86 CPU build)")
    if not hasattr(model, "compute_dtype"):
        raise ModelError(f"{type(model).__name__} cannot store its weights in int8 (it has no compute_dtype)")
    count = 0
    for layer in model.modules():
        kind = type(layer)
        if not (kind is nn.Linear or (kind is nn.Conv2d and _is_int8_conv(layer))):
            continue
        if not layer.weight.is_floating_point() or layer.weight.device.type != "cpu":
            continue
        (Int8Linear if kind is nn.Linear else Int8Conv2d).convert(layer)
        count += 1
    model.compute_dtype = compute_dtype
    return count
