"""ComfyUI's ``comfy.ldm.modules.diffusionmodules.openaimodel`` for plugins. Plexus's UNet is models/unet.py,
built by its loaders, so ``UNetModel``, ``ResBlock``, ``VideoResBlock`` and ``Upsample`` are names packs can
subclass and test with ``isinstance`` (no Plexus module is one) and building one raises a clear error.
``TimestepBlock``, ``TimestepEmbedSequential`` (children that are TimestepBlocks get ``(x, emb)``, the others
``x``) and ``Downsample`` (stride-2 conv, or average pooling) are real, for packs' own networks."""
from __future__ import annotations

from torch import Tensor, nn

import comfy.ops
from comfy.ldm.modules.diffusionmodules.util import avg_pool_nd


class _NotInPlexus(nn.Module):
    def __init__(self, *args, **kwargs):
        raise NotImplementedError(f"comfy.ldm.modules.diffusionmodules.openaimodel.{type(self).__name__}: "
                                  "ComfyUI's UNet modules are not built in Plexus (its UNet is models/unet.py)")


class UNetModel(_NotInPlexus):
    pass


class ResBlock(_NotInPlexus):
    pass


class VideoResBlock(ResBlock):
    pass


class Upsample(_NotInPlexus):
    pass


class TimestepBlock(nn.Module):
    """A module whose forward takes the timestep embedding as its second argument."""

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:
        raise NotImplementedError


class TimestepEmbedSequential(nn.Sequential, TimestepBlock):
    def forward(self, x: Tensor, emb: Tensor | None = None, *args, **kwargs) -> Tensor:
        """``(x, emb, context, transformer_options, ...)`` as ComfyUI calls it; only ``x`` and ``emb`` are used."""
        for layer in self:
            if isinstance(layer, _NotInPlexus):
                raise NotImplementedError(f"TimestepEmbedSequential: {type(layer).__name__} is not built in Plexus")
            x = layer(x, emb) if isinstance(layer, TimestepBlock) else layer(x)
        return x


class Downsample(nn.Module):
    def __init__(self, channels: int, use_conv: bool, dims: int = 2, out_channels: int | None = None,
                 padding: int = 1, dtype=None, device=None, operations=comfy.ops.disable_weight_init):
        super().__init__()
        self.channels, self.out_channels = channels, out_channels or channels
        self.use_conv, self.dims = use_conv, dims
        stride = (1, 2, 2) if dims == 3 else 2
        if use_conv:
            self.op = operations.conv_nd(dims, channels, self.out_channels, 3, stride=stride, padding=padding,
                                         dtype=dtype, device=device)
        else:
            if channels != self.out_channels:
                raise ValueError("Downsample without a conv keeps the channel count")
            self.op = avg_pool_nd(dims, kernel_size=stride, stride=stride)

    def forward(self, x: Tensor) -> Tensor:
        if x.shape[1] != self.channels:
            raise ValueError(f"Downsample: expected {self.channels} channels, got {x.shape[1]}")
        return self.op(x)
