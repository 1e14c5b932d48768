"""ComfyUI's ``comfy.ldm.lightricks.vae.causal_conv3d`` for plugins: LTX's ``CausalConv3d``, a real layer (an
inner ``conv`` Conv3d, padded in height / width by the conv and in time by repeating the first frame, or the
first and last frames when ``causal=False``). Plexus has no LTX-Video VAE that uses it."""
from __future__ import annotations

import torch
from torch import Tensor, nn

import comfy.ops


class CausalConv3d(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3, stride=1, dilation: int = 1,
                 groups: int = 1, spatial_padding_mode: str = "zeros", **kwargs):
        super().__init__()
        self.in_channels, self.out_channels = in_channels, out_channels
        self.time_kernel_size = kernel_size
        self.conv = comfy.ops.disable_weight_init.Conv3d(
            in_channels, out_channels, (kernel_size,) * 3, stride=stride, dilation=(dilation, 1, 1),
            padding=(0, kernel_size // 2, kernel_size // 2), padding_mode=spatial_padding_mode, groups=groups)

    def forward(self, x: Tensor, causal: bool = True) -> Tensor:
        extra = self.time_kernel_size - 1
        first = x[:, :, :1]
        if causal:
            x = torch.cat([first.expand(-1, -1, extra, -1, -1), x], dim=2)
        else:
            last = x[:, :, -1:]
            x = torch.cat([first.expand(-1, -1, extra // 2, -1, -1), x, last.expand(-1, -1, extra // 2, -1, -1)], dim=2)
        return self.conv(x)

    @property
    def weight(self) -> Tensor:
        return self.conv.weight
