"""ComfyUI's ``comfy.ldm.modules.diffusionmodules.util`` helpers for plugins that build their own networks:
``timestep_embedding`` over models.unet.timestep_embedding (``repeat_only`` repeats the timestep instead),
``zero_module``, ``conv_nd``, ``linear``, ``avg_pool_nd``; all real."""
from __future__ import annotations

import torch
from torch import Tensor, nn

import comfy.ops
from models.unet import timestep_embedding as _timestep_embedding


def timestep_embedding(timesteps: Tensor, dim: int, max_period: float = 10000, repeat_only: bool = False) -> Tensor:
    if repeat_only:
        return timesteps[:, None].expand(-1, dim)
    return _timestep_embedding(timesteps, dim, max_period)


def zero_module(module: nn.Module) -> nn.Module:
    for p in module.parameters():
        p.detach().zero_()
    return module


def conv_nd(dims: int, *args, **kwargs) -> nn.Module:
    return comfy.ops.disable_weight_init.conv_nd(dims, *args, **kwargs)


def linear(*args, **kwargs) -> nn.Linear:
    return comfy.ops.disable_weight_init.Linear(*args, **kwargs)


def avg_pool_nd(dims: int, *args, **kwargs) -> nn.Module:
    pools = {1: nn.AvgPool1d, 2: nn.AvgPool2d, 3: nn.AvgPool3d}
    if dims not in pools:
        raise ValueError(f"avg_pool_nd: unsupported dimensions: {dims}")
    return pools[dims](*args, **kwargs)
