"""ComfyUI's ``comfy.ldm.modules.diffusionmodules.model`` for plugins: ``Normalize`` and ``ResnetBlock`` (the
LDM autoencoder block with ComfyUI's module names: ``norm1``, ``swish``, ``conv1``, ``temb_proj`` when
``temb_channels > 0``, ``norm2``, ``dropout``, ``conv2``, ``nin_shortcut`` / ``conv_shortcut``), real layers.
Plexus's own VAE uses models.vae.ResnetBlock, which is a different class: a pack that patches
``isinstance(m, ResnetBlock)`` modules leaves Plexus's VAE as it is."""
from __future__ import annotations

import torch
from torch import Tensor, nn

import comfy.ops

ops = comfy.ops.disable_weight_init


def Normalize(in_channels: int, num_groups: int = 32) -> nn.GroupNorm:
    return ops.GroupNorm(num_groups=num_groups, num_channels=in_channels, eps=1e-6, affine=True)


class ResnetBlock(nn.Module):
    def __init__(self, *, in_channels: int, out_channels: int | None = None, conv_shortcut: bool = False,
                 dropout: float = 0.0, temb_channels: int = 512, conv_op=ops.Conv2d, norm_op=Normalize):
        super().__init__()
        out_channels = out_channels or in_channels
        self.in_channels, self.out_channels, self.use_conv_shortcut = in_channels, out_channels, conv_shortcut
        self.swish = nn.SiLU(inplace=True)
        self.norm1 = norm_op(in_channels)
        self.conv1 = conv_op(in_channels, out_channels, kernel_size=3, stride=1, padding=1)
        if temb_channels > 0:
            self.temb_proj = ops.Linear(temb_channels, out_channels)
        self.norm2 = norm_op(out_channels)
        self.dropout = nn.Dropout(dropout, inplace=True)
        self.conv2 = conv_op(out_channels, out_channels, kernel_size=3, stride=1, padding=1)
        if in_channels != out_channels:
            if conv_shortcut:
                self.conv_shortcut = conv_op(in_channels, out_channels, kernel_size=3, stride=1, padding=1)
            else:
                self.nin_shortcut = conv_op(in_channels, out_channels, kernel_size=1, stride=1, padding=0)

    def forward(self, x: Tensor, temb: Tensor | None = None) -> Tensor:
        h = self.conv1(self.swish(self.norm1(x)))
        if temb is not None:
            h = h + self.temb_proj(self.swish(temb))[:, :, None, None]
        h = self.conv2(self.dropout(self.swish(self.norm2(h))))
        if self.in_channels != self.out_channels:
            x = self.conv_shortcut(x) if self.use_conv_shortcut else self.nin_shortcut(x)
        return x + h
