"""The latent-diffusion UNet in the LDM single-file layout (SD1.x, SD2.x, SDXL, their inpainting variants).

SDXL (Podell et al. 2023, arXiv:2307.01952, sec. 2.1-2.2) is this UNet with other sizes (no attention at
level 0, transformer depths 2/10, linear proj, 2048-wide context) plus `label_emb`: an MLP on the "ADM"
vector (pooled text embedding and the size/crop/aesthetic embeddings, built in models/sdxl.py) added to
the time embedding. `adm_in_channels` > 0 turns it on.

Architecture: Rombach et al. 2022, "High-Resolution Image Synthesis with Latent Diffusion Models"
(arXiv:2112.10752), appendix; the module names follow CompVis/stable-diffusion
`ldm/modules/diffusionmodules/openaimodel.py` so that a checkpoint's `model.diffusion_model.*` keys load
without renaming. Parameter names here are therefore the file's names: `input_blocks.1.0.in_layers.2.weight`.

Shapes: B batch, C channels, H/W latent height/width, N = H*W tokens, T context tokens.
"""
from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from models import unet_patches
from models.attention import DEFAULT_ATTENTION, AttentionFn, attention_backend


@dataclass(frozen=True)
class UNetConfig:
    in_channels: int = 4                          # 9 for inpainting (latent + mask + masked latent)
    out_channels: int = 4
    model_channels: int = 320
    channel_mult: tuple[int, ...] = (1, 2, 4, 4)
    num_res_blocks: tuple[int, ...] = (2, 2, 2, 2)                     # per level
    transformer_depth: tuple[int, ...] = (1, 1, 1, 1, 1, 1, 0, 0)      # per input res block
    transformer_depth_middle: int = 1                 # 0: no transformer; -1: one res block only (SSD-1B, Vega)
    transformer_depth_output: tuple[int, ...] = (0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 1)  # per output block
    context_dim: int = 768
    num_heads: int = 8                            # SD1: fixed head count; -1 when head_dim is fixed instead
    head_dim: int = -1                            # SD2: fixed head width 64
    use_linear_in_transformer: bool = False       # SD2: proj_in/proj_out are Linear, SD1: 1x1 Conv
    upcast_attention: bool = False                # fp32 attention scores (SD2.x in fp16)
    norm_groups: int = 32
    adm_in_channels: int = 0                      # SDXL: width of the label_emb input (2816 base, 2560 refiner)

    @property
    def time_embed_dim(self) -> int:
        return self.model_channels * 4

    def heads_for(self, channels: int) -> tuple[int, int]:
        """(heads, head width) of a transformer with `channels` channels."""
        if self.num_heads > 0:
            return self.num_heads, channels // self.num_heads
        heads = max(1, channels // self.head_dim)
        return heads, channels // heads


def timestep_embedding(timesteps: Tensor, dim: int, max_period: float = 10000.0) -> Tensor:
    """Sinusoidal embedding [B] -> [B, dim], cos first (LDM openaimodel `timestep_embedding`;
    Vaswani et al. 2017, sec. 3.5)."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32,
                                                           device=timesteps.device) / half)
    args = timesteps[:, None].float() * freqs[None]                    # [B, half]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)        # [B, 2*half]
    if dim % 2:
        emb = F.pad(emb, (0, 1))
    return emb


class ResBlock(nn.Module):
    """GroupNorm-SiLU-Conv, add the time embedding, GroupNorm-SiLU-(Dropout)-Conv, plus a skip
    (Ho et al. 2020, appendix B; LDM `ResBlock`)."""

    def __init__(self, channels: int, emb_dim: int, out_channels: int, groups: int):
        super().__init__()
        self.in_layers = nn.Sequential(nn.GroupNorm(groups, channels), nn.SiLU(),
                                       nn.Conv2d(channels, out_channels, 3, padding=1))
        self.emb_layers = nn.Sequential(nn.SiLU(), nn.Linear(emb_dim, out_channels))
        self.out_layers = nn.Sequential(nn.GroupNorm(groups, out_channels), nn.SiLU(), nn.Dropout(0.0),
                                        nn.Conv2d(out_channels, out_channels, 3, padding=1))
        self.skip_connection = (nn.Identity() if out_channels == channels
                                else nn.Conv2d(channels, out_channels, 1))

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:
        h = self.in_layers(x)                                            # [B, Cout, H, W]
        h = h + self.emb_layers(emb)[:, :, None, None].to(h.dtype)       # [B, Cout, 1, 1] broadcast
        return self.out_layers(h).add_(self.skip_connection(x))          # in place: the conv output is fresh


class CrossAttention(nn.Module):
    """Multi-head attention; self-attention when context is None (LDM `CrossAttention`).

    `kv_patch` is a hook (None by default) that rewrites the tensors keys and values are computed from,
    `(k_in, v_in) -> (k_in, v_in)`: models/hypernetwork.py installs it around a model call.
    """

    kv_patch: Callable[[Tensor, Tensor], tuple[Tensor, Tensor]] | None = None

    def __init__(self, dim: int, context_dim: int, heads: int, head_dim: int, upcast: bool,
                 attention_fn: AttentionFn):
        super().__init__()
        inner = heads * head_dim
        self.heads = heads
        self.upcast = upcast
        self.attention_fn = attention_fn
        self.to_q = nn.Linear(dim, inner, bias=False)
        self.to_k = nn.Linear(context_dim, inner, bias=False)
        self.to_v = nn.Linear(context_dim, inner, bias=False)
        self.to_out = nn.Sequential(nn.Linear(inner, dim), nn.Dropout(0.0))

    def forward(self, x: Tensor, context: Tensor | None = None) -> Tensor:
        context = x if context is None else context
        k_in = v_in = context
        if self.kv_patch is not None:
            k_in, v_in = self.kv_patch(k_in, v_in)
        b, n, _ = x.shape
        q, k, v = self.to_q(x), self.to_k(k_in), self.to_v(v_in)         # [B, N|T, h*d]
        q, k, v = (t.view(b, -1, self.heads, t.shape[-1] // self.heads).transpose(1, 2)
                   for t in (q, k, v))                                   # [B, h, N|T, d]
        out = self.attention_fn(q, k, v, self.upcast)                    # [B, h, N, d]
        return self.to_out(out.transpose(1, 2).reshape(b, n, -1))        # [B, N, dim]


class GEGLU(nn.Module):
    """Gated GELU feed-forward input (Shazeer 2020, "GLU Variants Improve Transformer", eq. 6)."""

    def __init__(self, dim: int, inner: int):
        super().__init__()
        self.proj = nn.Linear(dim, inner * 2)

    def forward(self, x: Tensor) -> Tensor:
        x, gate = self.proj(x).chunk(2, dim=-1)                          # 2 x [B, N, inner]
        return x * F.gelu(gate)


class FeedForward(nn.Module):
    def __init__(self, dim: int, mult: int = 4):
        super().__init__()
        self.net = nn.Sequential(GEGLU(dim, dim * mult), nn.Dropout(0.0), nn.Linear(dim * mult, dim))

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


class BasicTransformerBlock(nn.Module):
    """Pre-norm self-attention, cross-attention, GEGLU feed-forward, each residual (LDM attention.py)."""

    def __init__(self, dim: int, context_dim: int, heads: int, head_dim: int, upcast: bool,
                 attention_fn: AttentionFn):
        super().__init__()
        self.attn1 = CrossAttention(dim, dim, heads, head_dim, upcast, attention_fn)
        self.ff = FeedForward(dim)
        self.attn2 = CrossAttention(dim, context_dim, heads, head_dim, upcast, attention_fn)
        self.norm1, self.norm2, self.norm3 = nn.LayerNorm(dim), nn.LayerNorm(dim), nn.LayerNorm(dim)

    def forward(self, x: Tensor, context: Tensor) -> Tensor:
        if (patch_options := unet_patches.active()) is not None:     # a patched call (models/unet_patches)
            return unet_patches.transformer_block(self, x, context, patch_options)
        x = x + self.attn1(self.norm1(x))
        x = x + self.attn2(self.norm2(x), context)
        return x + self.ff(self.norm3(x))


class SpatialTransformer(nn.Module):
    """Image features as a token sequence through transformer blocks, then back (LDM `SpatialTransformer`)."""

    def __init__(self, channels: int, depth: int, config: UNetConfig, attention_fn: AttentionFn):
        super().__init__()
        heads, head_dim = config.heads_for(channels)
        self.use_linear = config.use_linear_in_transformer
        self.norm = nn.GroupNorm(config.norm_groups, channels, eps=1e-6)
        make_proj = (lambda: nn.Linear(channels, channels)) if self.use_linear \
            else (lambda: TokenConv1x1(channels, channels, 1))
        self.proj_in = make_proj()
        self.transformer_blocks = nn.ModuleList(
            BasicTransformerBlock(channels, config.context_dim, heads, head_dim, config.upcast_attention,
                                  attention_fn) for _ in range(depth))
        self.proj_out = make_proj()

    def forward(self, x: Tensor, context: Tensor) -> Tensor:
        b, c, h, w = x.shape
        residual = x
        x = self.norm(x).permute(0, 2, 3, 1).reshape(b, h * w, c)        # [B, N, C] (a view if channels-last)
        x = self._project(self.proj_in, x)
        for block in self.transformer_blocks:
            x = block(x, context)
        x = self._project(self.proj_out, x)
        x = x.reshape(b, h, w, c).permute(0, 3, 1, 2)                    # [B, C, H, W], channels-last strides
        if not residual.is_contiguous(memory_format=torch.channels_last):
            x = x.contiguous()                   # keep a contiguous model contiguous (mixed layouts are slow)
        return x + residual

    def _project(self, proj: nn.Module, x: Tensor) -> Tensor:
        """proj_in/proj_out on tokens [B, N, C] (a Linear, or SD1's 1x1 conv applied as one)."""
        return proj(x)


class TokenConv1x1(nn.Conv2d):
    """SD1's 1x1-conv proj_in / proj_out (the file's [C, C, 1, 1] weight), applied to tokens [B, N, C] as the
    Linear it is. Through its own forward, so the module's hooks (layer streaming) see every use of
    its weight; not the plain Conv2d that weight prepacking would take over."""

    def forward(self, x: Tensor) -> Tensor:
        if x.ndim == 3:
            return F.linear(x, self.weight[:, :, 0, 0], self.bias)
        return super().forward(x)


class Downsample(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.op = nn.Conv2d(channels, channels, 3, stride=2, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        return self.op(x)                                                # [B, C, H/2, W/2]


class Upsample(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: Tensor, size: tuple[int, int] | None = None) -> Tensor:
        # nearest x2, or to the matching skip's size when the latent side was odd
        x = F.interpolate(x, size=size, mode="nearest") if size else F.interpolate(x, scale_factor=2.0)
        return self.conv(x)


class TimestepEmbedSequential(nn.Sequential):
    """A block whose layers each take what they need: time embedding, context or output size."""

    def forward(self, x: Tensor, emb: Tensor, context: Tensor, size: tuple[int, int] | None = None) -> Tensor:
        for layer in self:
            if isinstance(layer, ResBlock):
                x = layer(x, emb)
            elif isinstance(layer, SpatialTransformer):
                x = layer(x, context)
            elif isinstance(layer, Upsample):
                x = layer(x, size)
            else:
                x = layer(x)
        return x


class UNetModel(nn.Module):
    """eps/v prediction network: (x [B, Cin, H, W], timesteps [B], context [B, T, ctx]) -> [B, Cout, H, W]."""

    OFFLOAD_BLOCKS = ("input_blocks", "middle_block", "output_blocks")
    compute_dtype: torch.dtype | None = None   # None: its weights' dtype; set for fp8 weights (models/fp8_weights.py)
    # their layers' weights are read only inside the layers' own forward: streamable layer by layer
    OFFLOAD_LAYERS = True
    EXTRA_INPUTS = {"y": "y"}        # forward keyword <- conditioning input (SDXL's ADM vector, when present)

    def __init__(self, config: UNetConfig, attention: str = DEFAULT_ATTENTION):
        super().__init__()
        self.config = config
        fn = attention_backend(attention)
        self.attention_backend_name = attention
        mc, ted, groups = config.model_channels, config.time_embed_dim, config.norm_groups
        self.time_embed = nn.Sequential(nn.Linear(mc, ted), nn.SiLU(), nn.Linear(ted, ted))
        if config.adm_in_channels:          # SDXL: `label_emb.0.0` / `label_emb.0.2` (LDM's "sequential" ADM)
            self.label_emb = nn.Sequential(nn.Sequential(nn.Linear(config.adm_in_channels, ted), nn.SiLU(),
                                                         nn.Linear(ted, ted)))

        self.input_blocks = nn.ModuleList([TimestepEmbedSequential(nn.Conv2d(config.in_channels, mc, 3,
                                                                             padding=1))])
        skip_channels = [mc]
        ch = mc
        depths = iter(config.transformer_depth)
        for level, mult in enumerate(config.channel_mult):
            for _ in range(config.num_res_blocks[level]):
                layers: list[nn.Module] = [ResBlock(ch, ted, mult * mc, groups)]
                ch = mult * mc
                depth = next(depths)
                if depth:
                    layers.append(SpatialTransformer(ch, depth, config, fn))
                self.input_blocks.append(TimestepEmbedSequential(*layers))
                skip_channels.append(ch)
            if level != len(config.channel_mult) - 1:
                self.input_blocks.append(TimestepEmbedSequential(Downsample(ch)))
                skip_channels.append(ch)

        middle: list[nn.Module] = [ResBlock(ch, ted, ch, groups)]
        if config.transformer_depth_middle > 0:
            middle.append(SpatialTransformer(ch, config.transformer_depth_middle, config, fn))
        if config.transformer_depth_middle >= 0:          # -1: a single res block (SSD-1B, Segmind Vega)
            middle.append(ResBlock(ch, ted, ch, groups))
        self.middle_block = TimestepEmbedSequential(*middle)

        self.output_blocks = nn.ModuleList()
        depths = iter(config.transformer_depth_output)
        for level, mult in reversed(list(enumerate(config.channel_mult))):
            for i in range(config.num_res_blocks[level] + 1):
                layers = [ResBlock(ch + skip_channels.pop(), ted, mc * mult, groups)]
                ch = mc * mult
                depth = next(depths)
                if depth:
                    layers.append(SpatialTransformer(ch, depth, config, fn))
                if level and i == config.num_res_blocks[level]:
                    layers.append(Upsample(ch))
                self.output_blocks.append(TimestepEmbedSequential(*layers))

        self.out = nn.Sequential(nn.GroupNorm(groups, ch), nn.SiLU(),
                                 nn.Conv2d(mc, config.out_channels, 3, padding=1))

    def forward(self, x: Tensor, timesteps: Tensor, context: Tensor, y: Tensor | None = None,
                control=None) -> Tensor:
        """y [B, adm_in_channels]: the ADM vector, required when the config has `adm_in_channels` (SDXL).
        control: models.controlnet.ControlResiduals (ControlNet / T2I-Adapter), added after input blocks,
        to the skips and after the middle block, before any block patch sees them (ComfyUI's order)."""
        dtype = self.compute_dtype or self.out[2].weight.dtype
        emb = self.time_embed(timestep_embedding(timesteps, self.config.model_channels).to(dtype))  # [B, ted]
        if self.config.adm_in_channels:
            emb = emb + self._label_embedding(y, len(x), dtype)
        h = x.to(dtype)
        context = context.to(dtype)
        skips: list[Tensor] = []
        patch = unet_patches.active()                                    # None outside a patched call
        if patch is not None:
            unet_patches.begin(self, patch, x)
        for i, block in enumerate(self.input_blocks):
            if patch is not None:
                unet_patches.enter(patch, "input", i)
            h = block(h, emb, context)
            if control is not None:
                h = control.add_after_input(i, h)
            if patch is not None:
                h = unet_patches.after_input_block(patch, h)
            skips.append(h)
            if patch is not None:
                h = unet_patches.after_skip(patch, h)
        if patch is not None:
            unet_patches.enter(patch, "middle", 0)
        h = self.middle_block(h, emb, context)
        if control is not None:
            h = control.add_to_middle(h)
        for i, block in enumerate(self.output_blocks):
            skip = skips.pop()
            if control is not None:
                skip = control.add_to_skip(len(skips), skip)
            if patch is not None:
                unet_patches.enter(patch, "output", i)
                h, skip = unet_patches.before_output_block(patch, h, skip)
            h = torch.cat([h, skip], dim=1)                              # [B, C + Cskip, H, W]
            h = block(h, emb, context, size=tuple(skips[-1].shape[-2:]) if skips else None)
        return self.out(h)

    def _label_embedding(self, y: Tensor | None, batch: int, dtype: torch.dtype) -> Tensor:
        """label_emb(y) [B, ted]; y [B, adm_in_channels] (SDXL's pooled text + size embeddings)."""
        if y is None or y.shape != (batch, self.config.adm_in_channels):
            got = None if y is None else tuple(y.shape)
            raise ValueError(f"this UNet needs an ADM vector y of shape ({batch}, {self.config.adm_in_channels}) "
                             f"(SDXL size conditioning), got {got}")
        return self.label_emb(y.to(dtype))
