"""RRDBNet, the ESRGAN / Real-ESRGAN image upscaler, with detection from a state dict's keys and shapes.

Architecture (Wang et al. 2018, "ESRGAN: Enhanced Super-Resolution Generative Adversarial Networks",
https://arxiv.org/abs/1809.00219, section 3.1 and fig. 4; names follow BasicSR's `rrdbnet_arch.py`):

    conv_first (3x3) -> trunk of `num_blocks` RRDBs -> conv_body (3x3), added to the conv_first features
    -> per 2x stage: nearest-neighbour upsampling x2, 3x3 conv, LeakyReLU(0.2)
    -> conv_hr (3x3) + LeakyReLU(0.2) -> conv_last (3x3)

An RRDB (residual-in-residual dense block) is 3 residual dense blocks in a row whose output is scaled
by beta = 0.2 and added to the block input. A residual dense block is 5 3x3 convs; conv k sees the block
input concatenated with the outputs of convs 1..k-1 (each adds `growth_channels`); convs 1-4 are
followed by LeakyReLU(0.2); conv 5 returns to `num_features` channels, is scaled by 0.2 and added to the
block input (residual scaling, section 3.1).

Real-ESRGAN (Wang et al. 2021, https://arxiv.org/abs/2107.10833) x2 / x1 models use the same network
behind a pixel-unshuffle of the input by 2 / 4 (conv_first sees 4x / 16x the image channels), so the
net scale is 2**stages / unshuffle.

Layouts: BasicSR names directly, and the "old" ESRGAN `model.N` layout through
`models.convert.esrgan.old_to_basicsr`. `detect_upscaler(shapes)` is pure; anything else raises
`UnknownModelError` listing what was found.
"""
from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from models.convert.esrgan import old_to_basicsr
from models.errors import KeyMismatchError, UnknownModelError, UnsupportedModelError, summarise_keys

LEAKY_SLOPE = 0.2        # LeakyReLU slope, ESRGAN section 4.1 / BasicSR
RESIDUAL_SCALE = 0.2     # beta, residual scaling of each dense block and RRDB (ESRGAN section 3.1)


@dataclass(frozen=True)
class RRDBNetConfig:
    layout: str                 # "esrgan_old" | "basicsr" (the file's key layout)
    in_channels: int = 3
    out_channels: int = 3
    num_features: int = 64      # nf
    num_blocks: int = 23        # number of RRDBs in the trunk
    growth_channels: int = 32   # gc, channels each dense-block conv adds
    upsample_stages: int = 2    # nearest x2 + conv stages
    unshuffle: int = 1          # pixel-unshuffle factor of the input (Real-ESRGAN x2: 2, x1: 4)

    @property
    def scale(self) -> int:
        return 2 ** self.upsample_stages // self.unshuffle

    @property
    def input_multiple(self) -> int:
        return self.unshuffle


_BODY = re.compile(r"^body\.(\d+)\.")
_UP = re.compile(r"^conv_up(\d+)\.weight$")


def detect_upscaler(shapes: Mapping[str, tuple[int, ...]]) -> RRDBNetConfig:
    """The RRDBNet config a state dict's keys and shapes describe, or UnknownModelError."""
    if "model.0.weight" in shapes and any(k.startswith("model.1.sub.") for k in shapes):
        layout = "esrgan_old"
        try:
            shapes = old_to_basicsr(shapes)
        except KeyMismatchError as exc:
            raise UnknownModelError("upscale model in the old ESRGAN layout with unexpected keys",
                                    exc.message + "\n" + exc.details) from exc
    elif "conv_first.weight" in shapes and "body.0.rdb1.conv1.weight" in shapes:
        layout = "basicsr"
    else:
        top = sorted({k.split(".")[0] for k in shapes})
        if any("RRDB_trunk" in k for k in shapes):
            raise UnsupportedModelError("ESRGAN file in the 2019 'RRDB_trunk' layout is not supported yet",
                                        "convert it to the BasicSR layout (conv_first, body.N.rdb1...) or use "
                                        "an old-layout (model.0 ...) release")
        raise UnknownModelError(
            "not an upscale model Plexus knows (ESRGAN / Real-ESRGAN RRDBNet)",
            "expected `model.0.weight` + `model.1.sub.N.RDB1...` (old ESRGAN) or `conv_first.weight` + "
            f"`body.N.rdb1...` (BasicSR / Real-ESRGAN); found top-level names: {summarise_keys(top)}; "
            f"keys: {summarise_keys(list(shapes))}")
    first, last = shapes["conv_first.weight"], shapes["conv_last.weight"]   # [nf, in*u*u, 3, 3], [out, nf, 3, 3]
    out_channels, num_features = last[0], first[0]
    ratio = first[1] // out_channels
    unshuffle = {1: 1, 4: 2, 16: 4}.get(ratio) if first[1] % out_channels == 0 else None
    if unshuffle is None:
        raise UnsupportedModelError(f"upscale model with {first[1]} input channels for {out_channels} output "
                                    "channels: not a plain or pixel-unshuffle RRDBNet")
    stages = sorted(int(m.group(1)) for k in shapes if (m := _UP.match(k)))
    if stages != list(range(1, len(stages) + 1)):
        raise UnknownModelError("upscale model with gaps between its upsampling convs", f"found conv_up{stages}")
    num_blocks = len({int(m.group(1)) for k in shapes if (m := _BODY.match(k))})
    growth = shapes["body.0.rdb1.conv1.weight"][0]                          # [gc, nf, 3, 3]
    return RRDBNetConfig(layout=layout, in_channels=first[1] // (unshuffle * unshuffle),
                         out_channels=out_channels, num_features=num_features, num_blocks=num_blocks,
                         growth_channels=growth, upsample_stages=len(stages), unshuffle=unshuffle)


def _conv(cin: int, cout: int) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 3, 1, 1)


class ResidualDenseBlock(nn.Module):
    """5 densely connected 3x3 convs; output scaled by 0.2 and added to the input (ESRGAN fig. 4)."""

    def __init__(self, nf: int, gc: int):
        super().__init__()
        self.conv1 = _conv(nf, gc)
        self.conv2 = _conv(nf + gc, gc)
        self.conv3 = _conv(nf + 2 * gc, gc)
        self.conv4 = _conv(nf + 3 * gc, gc)
        self.conv5 = _conv(nf + 4 * gc, nf)

    def forward(self, x: Tensor) -> Tensor:                              # [B, nf, H, W]
        feats = [x]
        for conv in (self.conv1, self.conv2, self.conv3, self.conv4):
            feats.append(F.leaky_relu(conv(torch.cat(feats, 1)), LEAKY_SLOPE))  # [B, nf + k*gc, H, W] in
        return self.conv5(torch.cat(feats, 1)) * RESIDUAL_SCALE + x


class RRDB(nn.Module):
    """Residual-in-residual dense block: 3 dense blocks, scaled by 0.2, plus the input (ESRGAN fig. 4)."""

    def __init__(self, nf: int, gc: int):
        super().__init__()
        self.rdb1 = ResidualDenseBlock(nf, gc)
        self.rdb2 = ResidualDenseBlock(nf, gc)
        self.rdb3 = ResidualDenseBlock(nf, gc)

    def forward(self, x: Tensor) -> Tensor:
        return self.rdb3(self.rdb2(self.rdb1(x))) * RESIDUAL_SCALE + x


class RRDBNet(nn.Module):
    """Images [B, in, H, W] in [0, 1] -> [B, out, H*scale, W*scale] (not clamped)."""

    OFFLOAD_BLOCKS = ("body",)

    def __init__(self, config: RRDBNetConfig):
        super().__init__()
        c = config
        self.config = config
        self.conv_first = _conv(c.in_channels * c.unshuffle ** 2, c.num_features)
        self.body = nn.Sequential(*(RRDB(c.num_features, c.growth_channels) for _ in range(c.num_blocks)))
        self.conv_body = _conv(c.num_features, c.num_features)
        for i in range(c.upsample_stages):
            self.add_module(f"conv_up{i + 1}", _conv(c.num_features, c.num_features))
        self.conv_hr = _conv(c.num_features, c.num_features)
        self.conv_last = _conv(c.num_features, c.out_channels)

    def forward(self, x: Tensor) -> Tensor:
        c = self.config
        h, w = x.shape[-2:]
        if c.unshuffle > 1:
            # pad to a multiple of the unshuffle factor (reflect, as Real-ESRGAN's inference does), then
            # [B, C, H, W] -> [B, C*u*u, H/u, W/u]
            pad_h, pad_w = (-h) % c.unshuffle, (-w) % c.unshuffle
            if pad_h or pad_w:
                x = F.pad(x, (0, pad_w, 0, pad_h), mode="reflect" if min(h, w) > 1 else "replicate")
            x = F.pixel_unshuffle(x, c.unshuffle)
        feat = self.conv_first(x)
        feat = feat + self.conv_body(self.body(feat))                    # trunk with a long skip
        for i in range(c.upsample_stages):
            up = getattr(self, f"conv_up{i + 1}")
            feat = F.leaky_relu(up(F.interpolate(feat, scale_factor=2, mode="nearest")), LEAKY_SLOPE)
        out = self.conv_last(F.leaky_relu(self.conv_hr(feat), LEAKY_SLOPE))  # [B, out, H', W']
        return out[..., : h * c.scale, : w * c.scale]


def rrdbnet_from_state_dict(state: Mapping[str, Tensor]) -> RRDBNet:
    """Detect, build and load (every key and shape checked) an RRDBNet from a state dict in either layout."""
    shapes = {k: tuple(v.shape) for k, v in state.items()} if not hasattr(state, "shapes") else state.shapes()
    config = detect_upscaler(shapes)
    weights = old_to_basicsr(state) if config.layout == "esrgan_old" else dict(state.items())
    model = RRDBNet(config)
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    missing = sorted(set(expected) - set(weights))
    unexpected = sorted(set(weights) - set(expected))
    misshapen = sorted(k for k in set(expected) & set(weights) if tuple(weights[k].shape) != expected[k])
    if missing or unexpected or misshapen:
        raise KeyMismatchError(f"upscale model does not fit the detected RRDBNet ({config})",
                               f"missing: {summarise_keys(missing)}; unexpected: {summarise_keys(unexpected)}; "
                               f"misshapen: {summarise_keys(misshapen)}")
    model.load_state_dict({k: weights[k].float() for k in expected})
    return model.eval().requires_grad_(False)


def receptive_radius_px(config: RRDBNetConfig) -> int:
    """How far (input pixels) one output pixel sees: a tile margin at least this wide makes tiling exact."""
    convs_low_res = 1 + 15 * config.num_blocks + 1                       # conv_first, 5 per RDB, conv_body
    convs_high_res = sum(0.5 ** (i + 1) for i in range(config.upsample_stages)) + 2 * 0.5 ** config.upsample_stages
    return math.ceil((convs_low_res + convs_high_res) * config.unshuffle)
