"""ComfyUI's ``comfy.ops`` for plugins: layer classes packs build their own modules from. Plexus casts
weights per call where it stores them in another dtype (models/), so ``manual_cast`` and
``disable_weight_init`` here are torch's layers with ComfyUI's ``comfy_cast_weights`` flag and without
the slow default initialisation (packs load weights right after)."""
from __future__ import annotations

import torch
from torch import nn


def _cast_forward(layer_type: type) -> type:
    class Layer(layer_type):
        comfy_cast_weights = False

        def reset_parameters(self):
            return None

        def forward(self, *args, **kwargs):
            x = args[0] if args else None
            if isinstance(x, torch.Tensor) and x.is_floating_point() and self.weight is not None \
                    and self.weight.dtype != x.dtype:
                return _forward_cast(self, layer_type, x, *args[1:], **kwargs)
            return super().forward(*args, **kwargs)

    Layer.__name__ = layer_type.__name__
    Layer.__qualname__ = layer_type.__name__
    return Layer


def _forward_cast(layer, layer_type, x, *args, **kwargs):
    weight = layer.weight.to(x.dtype)
    bias = layer.bias.to(x.dtype) if getattr(layer, "bias", None) is not None else None
    if layer_type is nn.Linear:
        return torch.nn.functional.linear(x, weight, bias)
    if layer_type in (nn.Conv1d, nn.Conv2d, nn.Conv3d):
        return layer._conv_forward(x, weight, bias)
    if layer_type is nn.GroupNorm:
        return torch.nn.functional.group_norm(x, layer.num_groups, weight, bias, layer.eps)
    if layer_type is nn.LayerNorm:
        return torch.nn.functional.layer_norm(x, layer.normalized_shape, weight, bias, layer.eps)
    return layer_type.forward(layer, x.to(layer.weight.dtype), *args, **kwargs).to(x.dtype)


class disable_weight_init:
    Linear = _cast_forward(nn.Linear)
    Conv1d = _cast_forward(nn.Conv1d)
    Conv2d = _cast_forward(nn.Conv2d)
    Conv3d = _cast_forward(nn.Conv3d)
    GroupNorm = _cast_forward(nn.GroupNorm)
    LayerNorm = _cast_forward(nn.LayerNorm)
    ConvTranspose2d = nn.ConvTranspose2d
    Embedding = nn.Embedding

    @classmethod
    def conv_nd(cls, dims: int, *args, **kwargs):
        return {1: cls.Conv1d, 2: cls.Conv2d, 3: cls.Conv3d}[dims](*args, **kwargs)


class manual_cast(disable_weight_init):
    pass


def cast_bias_weight(s, input=None, dtype=None, device=None, bias_dtype=None):
    dtype = dtype or (input.dtype if input is not None else s.weight.dtype)
    device = device or (input.device if input is not None else s.weight.device)
    weight = s.weight.to(device=device, dtype=dtype)
    bias = s.bias.to(device=device, dtype=bias_dtype or dtype) if getattr(s, "bias", None) is not None else None
    return weight, bias


def pick_operations(weight_dtype, compute_dtype, load_device=None, disable_fast_fp8=False, fp8_optimizations=False,
                    scaled_fp8=None, model_config=None):
    return manual_cast if weight_dtype != compute_dtype else disable_weight_init
