"""T2I-Adapter (full and light) in TencentARC's original layout, as ComfyUI's ControlNetLoader reads it.

Architecture: Mou et al. 2023, "T2I-Adapter: Learning Adapters to Dig out More Controllable Ability for
Text-to-Image Diffusion Models" (arXiv:2302.08453), sec. 3.2 and fig. 3: the hint image is pixel-unshuffled
to the latent grid (8x8 blocks for SD1.x, 16x16 for SDXL), then one stage of residual conv blocks per UNet
resolution level (average-pool 2x between stages) gives one feature map per level; each is added to the
UNet's encoder features of that level. Time-independent, so it runs once per sampling run.

Module names are TencentARC's (`T2I-Adapter/ldm/modules/encoders/adapter.py`): full `conv_in`,
`body.K.{in_conv,block1,block2,down_opt.op}`; light `body.L.{in_conv,body.J.block1,body.J.block2,out_conv}`.
Shapes: B batch, Ch hint channels, H/W latent height/width (the hint is [B, Ch, 8H, 8W]).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from models.controlnet import ControlResiduals


@dataclass(frozen=True)
class T2IAdapterConfig:
    kind: str = "full"                             # "full" | "light"
    in_channels: int = 64                          # after pixel-unshuffle: hint channels x unshuffle**2
    channels: tuple[int, ...] = (320, 640, 1280, 1280)   # one per stage (UNet level)
    num_res_blocks: int = 2                        # per stage
    kernel_size: int = 1                           # full: in_conv / block2 kernel (published SD1.5 files: 1)
    use_conv_down: bool = False                    # full: a strided conv instead of average pooling
    is_xl: bool = False                            # SDXL: 16x16 unshuffle, features at SDXL's blocks

    @property
    def unshuffle(self) -> int:
        return 16 if self.is_xl else 8

    @property
    def hint_channels(self) -> int:
        return self.in_channels // (self.unshuffle * self.unshuffle)


def _pool_down(x: Tensor) -> Tensor:
    """2x average pooling; an odd side gets one zero-padded row/column (TencentARC `Downsample`)."""
    return F.avg_pool2d(x, 2, 2, padding=(x.shape[2] % 2, x.shape[3] % 2))


class _DownConv(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.op = nn.Conv2d(channels, channels, 3, stride=2, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        return self.op(x)


class AdapterResBlock(nn.Module):
    """[down], [in_conv to the stage width], conv3x3-ReLU-conv(k), plus the input (TencentARC `ResnetBlock`, sk=True)."""

    def __init__(self, in_channels: int, out_channels: int, is_down: bool, kernel_size: int, use_conv_down: bool):
        super().__init__()
        pad = kernel_size // 2
        self.is_down = is_down
        if is_down and use_conv_down:
            self.down_opt = _DownConv(in_channels)
        self.in_conv = nn.Conv2d(in_channels, out_channels, kernel_size, 1, pad) if in_channels != out_channels else None
        self.block1 = nn.Conv2d(out_channels, out_channels, 3, 1, 1)
        self.block2 = nn.Conv2d(out_channels, out_channels, kernel_size, 1, pad)

    def forward(self, x: Tensor) -> Tensor:
        if self.is_down:
            x = self.down_opt(x) if hasattr(self, "down_opt") else _pool_down(x)
        if self.in_conv is not None:
            x = self.in_conv(x)
        return self.block2(F.relu(self.block1(x))) + x


class LightResBlock(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.block1 = nn.Conv2d(channels, channels, 3, 1, 1)
        self.block2 = nn.Conv2d(channels, channels, 3, 1, 1)

    def forward(self, x: Tensor) -> Tensor:
        return self.block2(F.relu(self.block1(x))) + x


class LightStage(nn.Module):
    """[pool], 1x1 in to a quarter of the width, residual blocks, 1x1 out (TencentARC `extractor`)."""

    def __init__(self, in_channels: int, out_channels: int, num_res_blocks: int, is_down: bool):
        super().__init__()
        inner = out_channels // 4
        self.is_down = is_down
        self.in_conv = nn.Conv2d(in_channels, inner, 1)
        self.body = nn.Sequential(*[LightResBlock(inner) for _ in range(num_res_blocks)])
        self.out_conv = nn.Conv2d(inner, out_channels, 1)

    def forward(self, x: Tensor) -> Tensor:
        if self.is_down:
            x = _pool_down(x)
        return self.out_conv(self.body(self.in_conv(x)))


class T2IAdapter(nn.Module):
    """hint [B, Ch, 8H, 8W] in [0, 1] -> one feature map per stage (ComfyUI/TencentARC order: finest first)."""

    def __init__(self, config: T2IAdapterConfig):
        super().__init__()
        self.config = config
        c = config.channels
        if config.kind == "light":
            self.body = nn.ModuleList(LightStage(config.in_channels if i == 0 else c[i - 1], c[i],
                                                 config.num_res_blocks, is_down=i > 0) for i in range(len(c)))
            return
        # full: SD1 pools before stages 1..3; SDXL keeps stage 1 at stage 0's size and pools before stage 2
        down_stages = {2} if config.is_xl else set(range(1, len(c)))
        blocks = []
        for i in range(len(c)):
            for j in range(config.num_res_blocks):
                first = j == 0 and i > 0
                blocks.append(AdapterResBlock(c[i - 1] if first else c[i], c[i], first and i in down_stages,
                                              config.kernel_size, config.use_conv_down))
        self.body = nn.ModuleList(blocks)
        self.conv_in = nn.Conv2d(config.in_channels, c[0], 3, 1, 1)

    @property
    def dtype(self) -> torch.dtype:
        return self.body[0].block1.weight.dtype if self.config.kind == "full" else self.body[0].in_conv.weight.dtype

    def features(self, hint: Tensor) -> list[Tensor]:
        x = F.pixel_unshuffle(hint.to(self.dtype), self.config.unshuffle)   # [B, Ch*u*u, 8H/u, 8W/u]
        out = []
        if self.config.kind == "light":
            for stage in self.body:
                x = stage(x)
                out.append(x)
            return out
        x = self.conv_in(x)
        n = self.config.num_res_blocks
        for i in range(len(self.config.channels)):
            for block in self.body[i * n:(i + 1) * n]:
                x = block(x)
            out.append(x)
        return out

    def forward(self, hint: Tensor) -> ControlResiduals:
        return residuals_for_features(self.features(hint), self.config.is_xl)


def residuals_for_features(features: list[Tensor], is_xl: bool) -> ControlResiduals:
    """Where ComfyUI adds each stage's feature map: SD1.x after input blocks 2, 5, 8, 11 (each level's last
    res block); SDXL after blocks 3, 5 and 8 and the last one after the middle block."""
    if is_xl:
        positions = (3, 5, 8)
        return ControlResiduals(after_input={p: f for p, f in zip(positions, features)},
                                middle=features[3] if len(features) > 3 else None)
    return ControlResiduals(after_input={3 * i + 2: f for i, f in enumerate(features)})
