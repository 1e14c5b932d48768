"""AutoencoderKL (the SD1.x/SD2.x VAE) in the LDM single-file layout, with tiled encode and decode.

Architecture: Rombach et al. 2022 (arXiv:2112.10752), sec. 3.1 and appendix G; module names follow
CompVis `ldm/modules/diffusionmodules/model.py` (Encoder/Decoder) and `ldm/models/autoencoder.py`
(`quant_conv`/`post_quant_conv`), so `first_stage_model.*` keys load without renaming.

`encode` returns raw latents (the posterior mean) and `decode` takes raw latents: the family's latent scale
factor (0.18215 for SD1/SD2) is applied by the sampler's model wrapper, as ComfyUI does, and comes from
`ModelConfig.latent_scale_factor`, never from this file.

Shapes: images [B, 3, H, W] in [-1, 1]; latents [B, z, H/f, W/f] with f = 2**(len(ch_mult)-1).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from models.attention import DEFAULT_ATTENTION, AttentionFn, attention_backend


@dataclass(frozen=True)
class VAEConfig:
    in_channels: int = 3
    out_channels: int = 3
    ch: int = 128
    ch_mult: tuple[int, ...] = (1, 2, 4, 4)
    num_res_blocks: int = 2
    z_channels: int = 4
    embed_dim: int = 4
    has_quant_conv: bool = True          # SD1/SD2 yes; the SD3 VAE has neither quant conv
    norm_groups: int = 32

    @property
    def downscale_factor(self) -> int:
        return 2 ** (len(self.ch_mult) - 1)


def _norm(channels: int, groups: int) -> nn.GroupNorm:
    return nn.GroupNorm(groups, channels, eps=1e-6)


class ResnetBlock(nn.Module):
    """norm-SiLU-conv twice plus a 1x1 `nin_shortcut` when channels change (LDM model.py `ResnetBlock`)."""

    def __init__(self, in_channels: int, out_channels: int, groups: int):
        super().__init__()
        self.norm1 = _norm(in_channels, groups)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.norm2 = _norm(out_channels, groups)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1)
        self.nin_shortcut = nn.Conv2d(in_channels, out_channels, 1) if in_channels != out_channels else None

    def forward(self, x: Tensor) -> Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(F.silu(self.norm2(h)))
        return (x if self.nin_shortcut is None else self.nin_shortcut(x)) + h


class AttnBlock(nn.Module):
    """Single-head spatial self-attention with 1x1 conv projections (LDM model.py `AttnBlock`)."""

    def __init__(self, channels: int, groups: int, attention_fn: AttentionFn):
        super().__init__()
        self.attention_fn = attention_fn
        self.norm = _norm(channels, groups)
        self.q, self.k, self.v = (nn.Conv2d(channels, channels, 1) for _ in range(3))
        self.proj_out = nn.Conv2d(channels, channels, 1)

    def forward(self, x: Tensor) -> Tensor:
        b, c, h, w = x.shape
        hn = self.norm(x)
        q, k, v = (p(hn).reshape(b, 1, c, h * w).transpose(-1, -2) for p in (self.q, self.k, self.v))  # [B,1,N,C]
        out = self.attention_fn(q, k, v, True)                           # [B, 1, N, C], fp32 scores
        return x + self.proj_out(out.transpose(-1, -2).reshape(b, c, h, w))


class Downsample(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, stride=2)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(F.pad(x, (0, 1, 0, 1)))                         # asymmetric pad, as LDM: [B,C,H/2,W/2]


class Upsample(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class Level(nn.Module):
    """One resolution of the encoder (`down.i`) or decoder (`up.i`): `block.j` and an optional resampler."""

    def __init__(self, blocks: list[nn.Module], resample: nn.Module | None, resample_name: str):
        super().__init__()
        self.block = nn.ModuleList(blocks)
        if resample is not None:
            self.add_module(resample_name, resample)
        self.resample_name = resample_name if resample is not None else None

    def forward(self, x: Tensor) -> Tensor:
        for block in self.block:
            x = block(x)
        return getattr(self, self.resample_name)(x) if self.resample_name else x


class Mid(nn.Module):
    def __init__(self, channels: int, groups: int, attention_fn: AttentionFn):
        super().__init__()
        self.block_1 = ResnetBlock(channels, channels, groups)
        self.attn_1 = AttnBlock(channels, groups, attention_fn)
        self.block_2 = ResnetBlock(channels, channels, groups)

    def forward(self, x: Tensor) -> Tensor:
        return self.block_2(self.attn_1(self.block_1(x)))


class Encoder(nn.Module):
    def __init__(self, c: VAEConfig, attention_fn: AttentionFn):
        super().__init__()
        g = c.norm_groups
        self.conv_in = nn.Conv2d(c.in_channels, c.ch, 3, padding=1)
        chans = [c.ch * m for m in (1, *c.ch_mult)]
        self.down = nn.ModuleList()
        for i in range(len(c.ch_mult)):
            blocks = [ResnetBlock(chans[i] if j == 0 else chans[i + 1], chans[i + 1], g)
                      for j in range(c.num_res_blocks)]
            last = i == len(c.ch_mult) - 1
            self.down.append(Level(blocks, None if last else Downsample(chans[i + 1]), "downsample"))
        self.mid = Mid(chans[-1], g, attention_fn)
        self.norm_out = _norm(chans[-1], g)
        self.conv_out = nn.Conv2d(chans[-1], 2 * c.z_channels, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        h = self.conv_in(x)
        for level in self.down:
            h = level(h)
        h = self.mid(h)
        return self.conv_out(F.silu(self.norm_out(h)))                  # [B, 2z, H/f, W/f]


class Decoder(nn.Module):
    def __init__(self, c: VAEConfig, attention_fn: AttentionFn):
        super().__init__()
        g = c.norm_groups
        chans = [c.ch * m for m in c.ch_mult]
        self.conv_in = nn.Conv2d(c.z_channels, chans[-1], 3, padding=1)
        self.mid = Mid(chans[-1], g, attention_fn)
        levels: list[Level] = []
        block_in = chans[-1]
        for i in reversed(range(len(c.ch_mult))):            # built top-down, stored as up.0 .. up.n-1
            blocks = []
            for _ in range(c.num_res_blocks + 1):
                blocks.append(ResnetBlock(block_in, chans[i], g))
                block_in = chans[i]
            levels.insert(0, Level(blocks, Upsample(block_in) if i != 0 else None, "upsample"))
        self.up = nn.ModuleList(levels)
        self.norm_out = _norm(block_in, g)
        self.conv_out = nn.Conv2d(block_in, c.out_channels, 3, padding=1)

    def forward(self, z: Tensor) -> Tensor:
        h = self.mid(self.conv_in(z))
        for level in reversed(self.up):
            h = level(h)
        return self.conv_out(F.silu(self.norm_out(h)))                  # [B, 3, H, W]


def _is_out_of_memory(exc: BaseException) -> bool:
    if isinstance(exc, torch.OutOfMemoryError):
        return True
    text = str(exc).lower()
    return isinstance(exc, RuntimeError) and ("out of memory" in text or "can't allocate memory" in text)


def _ramp(length: int, overlap: int, at_start: bool, at_end: bool, device) -> Tensor:
    """1-D blend weights: linear ramps over `overlap` at inner tile edges, 1 elsewhere."""
    w = torch.ones(length, device=device)
    if overlap > 0:
        ramp = (torch.arange(overlap, device=device, dtype=torch.float32) + 1) / (overlap + 1)
        if not at_start:
            w[:overlap] = ramp[: min(overlap, length)]
        if not at_end:
            w[-overlap:] = torch.minimum(w[-overlap:], ramp.flip(0))
    return w


def _tile_starts(size: int, tile: int, overlap: int) -> list[int]:
    if size <= tile:
        return [0]
    stride = tile - overlap
    starts = list(range(0, size - tile, stride)) + [size - tile]
    return sorted(set(starts))


def run_tiled(fn, x: Tensor, tile: int, overlap: int, scale: float, out_channels: int) -> Tensor:
    """Apply `fn` (a spatial map with output size = input size * scale) to overlapping tiles of x and blend
    them with linear ramps (the feathered tiling of ComfyUI's `tiled_scale`, our own formulation)."""
    b, _, h, w = x.shape
    out_h, out_w = round(h * scale), round(w * scale)
    out = torch.zeros(b, out_channels, out_h, out_w, device=x.device, dtype=torch.float32)
    weight = torch.zeros(1, 1, out_h, out_w, device=x.device, dtype=torch.float32)
    ys, xs = _tile_starts(h, tile, overlap), _tile_starts(w, tile, overlap)
    for y in ys:
        for x0 in xs:
            piece = fn(x[:, :, y:y + tile, x0:x0 + tile]).float()           # [B, Cout, th*s, tw*s]
            ph, pw = piece.shape[-2:]
            oy, ox, ov = round(y * scale), round(x0 * scale), round(overlap * scale)
            wy = _ramp(ph, ov, y == ys[0], y == ys[-1], x.device)
            wx = _ramp(pw, ov, x0 == xs[0], x0 == xs[-1], x.device)
            mask = (wy[:, None] * wx[None, :])[None, None]                  # [1, 1, th*s, tw*s]
            out[:, :, oy:oy + ph, ox:ox + pw] += piece * mask
            weight[:, :, oy:oy + ph, ox:ox + pw] += mask
    return out / weight


class AutoencoderKL(nn.Module):
    OFFLOAD_BLOCKS = ("encoder", "decoder")
    # their layers' weights are read only inside the layers' own forward: streamable layer by layer
    OFFLOAD_LAYERS = True

    def __init__(self, config: VAEConfig, attention: str = DEFAULT_ATTENTION):
        super().__init__()
        self.config = config
        fn = attention_backend(attention)
        self.attention_backend_name = attention
        self.encoder = Encoder(config, fn)
        self.decoder = Decoder(config, fn)
        if config.has_quant_conv:
            self.quant_conv = nn.Conv2d(2 * config.z_channels, 2 * config.embed_dim, 1)
            self.post_quant_conv = nn.Conv2d(config.embed_dim, config.z_channels, 1)

    @property
    def dtype(self) -> torch.dtype:
        return self.decoder.conv_in.weight.dtype

    def encode_moments(self, images: Tensor) -> Tensor:
        """images [B, 3, H, W] in [-1, 1] -> posterior mean and log-variance, [B, 2*embed, H/f, W/f]."""
        moments = self.encoder(images.to(self.dtype))
        return self.quant_conv(moments) if self.config.has_quant_conv else moments

    def encode(self, images: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """Raw latents: the posterior mean, or a sample from N(mean, exp(logvar)) when given a generator
        (Kingma & Welling 2014, sec. 2.4, reparameterisation)."""
        mean, logvar = self.encode_moments(images).chunk(2, dim=1)
        if generator is None:
            return mean
        std = torch.exp(0.5 * logvar.clamp(-30.0, 20.0))
        noise = torch.randn(mean.shape, generator=generator, device=mean.device, dtype=mean.dtype)
        return mean + std * noise

    def decode(self, latents: Tensor) -> Tensor:
        """Raw latents [B, z, h, w] -> images [B, 3, h*f, w*f], roughly in [-1, 1] (not clamped)."""
        z = latents.to(self.dtype)
        if self.config.has_quant_conv:
            z = self.post_quant_conv(z)
        return self.decoder(z)

    def encode_tiled(self, images: Tensor, tile_px: int = 512, overlap_px: int = 64) -> Tensor:
        f = self.config.downscale_factor
        return run_tiled(self.encode, images, tile_px, overlap_px, 1 / f, self.config.embed_dim)

    def decode_tiled(self, latents: Tensor, tile_latent: int = 64, overlap_latent: int = 16) -> Tensor:
        f = self.config.downscale_factor
        return run_tiled(self.decode, latents, tile_latent, overlap_latent, f, self.config.out_channels)

    def encode_auto(self, images: Tensor, **tiling) -> Tensor:
        """Whole-image encode, falling back to tiles when memory runs out."""
        try:
            return self.encode(images)
        except Exception as exc:
            if not _is_out_of_memory(exc):
                raise
        return self.encode_tiled(images, **tiling)

    def decode_auto(self, latents: Tensor, **tiling) -> Tensor:
        """Whole-latent decode, falling back to tiles when memory runs out."""
        try:
            return self.decode(latents)
        except Exception as exc:
            if not _is_out_of_memory(exc):
                raise
        return self.decode_tiled(latents, **tiling)
