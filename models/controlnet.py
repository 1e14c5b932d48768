"""ControlNet for the LDM UNet (SD1.x, SD2.x, SDXL) in the original lllyasviel layout, and the residuals
every control model (ControlNet, T2I-Adapter) hands to a UNet forward.

Architecture: Zhang, Rao & Agrawala 2023, "Adding Conditional Control to Text-to-Image Diffusion Models"
(arXiv:2302.05543), sec. 3.2-3.3 and fig. 3: a trainable copy of the UNet's encoder half (input blocks and
middle block) whose input is the noisy latent plus the encoded hint image (`input_hint_block`, a small
strided conv net from pixels to the latent grid, added after the first conv), and one 1x1 "zero
convolution" per input block (`zero_convs.N.0`) plus one after the middle block (`middle_block_out.0`).
Their outputs are added to the frozen UNet's skip connections (the k-th to the skip kept from input block
k, read by the mirrored output block) and to the middle block's output. Module names follow
lllyasviel/ControlNet `cldm/cldm.py` so `control_model.*` keys load without renaming.

Shapes: B batch, C channels, H/W latent height/width, T context tokens; the hint is [B, Ch, 8H, 8W].
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from models.attention import DEFAULT_ATTENTION, attention_backend
from models.unet import (Downsample, ResBlock, SpatialTransformer, TimestepEmbedSequential, UNetConfig,
                         timestep_embedding)

log = logging.getLogger(__name__)

# input_hint_block widths (cldm.py, fixed for every published SD ControlNet): 3x3 convs with SiLU between,
# stride 2 at the 3rd, 5th and 7th conv (8x down to the latent grid), the last one to model_channels.
HINT_WIDTHS = (16, 16, 32, 32, 96, 96, 256)
HINT_STRIDES = (1, 1, 2, 1, 2, 1, 2, 1)


# union ControlNets (xinsir ControlNet++ / ProMax, SDXL): the hint-fusion transformer's fixed sizes
UNION_WIDTH = 320
UNION_HEADS = 8
UNION_TYPE_EMBED = 256
# SetUnionControlNetType's names -> control type index (xinsir's order; ProMax adds "repaint")
UNION_CONTROL_TYPES = {"openpose": 0, "depth": 1, "hed/pidi/scribble/ted": 2, "canny/lineart/anime_lineart/mlsd": 3,
                       "normal": 4, "segment": 5, "tile": 6, "repaint": 7}


@dataclass(frozen=True)
class ControlNetConfig:
    unet: UNetConfig                 # the encoder half's sizes (output-block fields are unused)
    hint_channels: int = 3           # 3: RGB hint images; other counts for special-purpose nets
    union_control_types: int = 0     # > 0: a union ControlNet with this many control types (task_embedding rows)


@dataclass(frozen=True)
class ControlLoraConfig:
    """A Stability control-LoRA: a ControlNet whose encoder weights are the base UNet's plus low-rank deltas
    (Hu et al. 2021, "LoRA", arXiv:2106.09685, eq. 3 with alpha = rank), built on the UNet it is applied to."""
    hint_channels: int = 3
    rank: int = 0                    # the largest `.down` rank in the file (informative)
    has_adm: bool = False            # has `label_emb`: made for SDXL (takes the ADM vector y)


def control_lora_state(module_shapes: dict[str, tuple[int, ...]], base: dict[str, Tensor],
                       full: dict[str, Tensor], low_rank: dict[str, tuple[Tensor, Tensor]],
                       dtype: torch.dtype) -> dict[str, Tensor]:
    """The state dict of a control-LoRA's ControlNet: each weight from the file when it holds it in full,
    else the base UNet's same-named weight; plus up @ down (flattened to [out, rank] x [rank, in * k * k],
    reshaped to the weight) where the file has low-rank factors (as ComfyUI's ControlLoraOps)."""
    missing = sorted(k for k in module_shapes if k not in full and k not in base)
    if missing:
        raise KeyError(f"control-LoRA: {len(missing)} weights neither in the file nor in the base model "
                       f"(is it for this model's family?): {missing[:8]}")
    unknown = sorted(k for k in (*full, *low_rank) if k not in module_shapes)
    if unknown:
        raise KeyError(f"control-LoRA: {len(unknown)} file weights the ControlNet does not have: {unknown[:8]}")
    state: dict[str, Tensor] = {}
    for name, shape in module_shapes.items():
        weight = (full[name] if name in full else base[name]).to(torch.float32)
        if tuple(weight.shape) != shape:
            raise KeyError(f"control-LoRA: {name} has shape {tuple(weight.shape)}, the ControlNet needs {shape} "
                           "(a control-LoRA for another base model)")
        if name in low_rank:
            up, down = low_rank[name]
            weight = weight + (up.flatten(1).float() @ down.flatten(1).float()).reshape(shape)
        state[name] = weight.to(dtype)
    return state


@dataclass
class ControlResiduals:
    """What control models add inside one UNet forward, keyed by the UNet's input-block index.

    - `after_input[i]`: added to h right after input block i (T2I-Adapter features; the skip kept from
      block i includes it);
    - `skips[i]`: added to the skip kept from input block i when its output block reads it (ControlNet);
    - `middle`: added to the middle block's output;
    - `after_block[i]`: added to the image tokens after transformer block i (MM-DiT ControlNets; FLUX's
      double-stream blocks);
    - `after_single[i]`: added to the image tokens after FLUX single-stream block i (FLUX ControlNets).
    A tensor whose shape does not broadcast to the UNet's is left out with a warning (as ComfyUI does).
    """
    after_input: dict[int, Tensor] = field(default_factory=dict)
    skips: dict[int, Tensor] = field(default_factory=dict)
    middle: Tensor | None = None
    after_block: dict[int, Tensor] = field(default_factory=dict)
    after_single: dict[int, Tensor] = field(default_factory=dict)

    def add_after_block(self, index: int, tokens: Tensor) -> Tensor:
        return _add(tokens, self.after_block.get(index), "transformer", index)

    def add_to_tokens(self, kind: str, index: int, tokens: Tensor, start: int = 0) -> Tensor:
        """tokens [B, L, D] with the `kind` ("block" / "single") residual of block `index` [B, n, D] added to
        tokens [start, start + n) (FLUX: the image tokens, after the text and before any reference tokens)."""
        residual = (self.after_block if kind == "block" else self.after_single).get(index)
        if residual is None:
            return tokens
        end = start + residual.shape[1]
        if end > tokens.shape[1]:
            log.warning("control residual for %s block %d not applied: %d tokens from %d do not fit %s",
                        kind, index, residual.shape[1], start, tuple(tokens.shape))
            return tokens
        part = _add(tokens[:, start:end], residual, kind, index)
        return torch.cat([tokens[:, :start], part, tokens[:, end:]], dim=1)

    def add_after_input(self, index: int, h: Tensor) -> Tensor:
        return _add(h, self.after_input.get(index), "input", index)

    def add_to_skip(self, index: int, skip: Tensor) -> Tensor:
        return _add(skip, self.skips.get(index), "skip", index)

    def add_to_middle(self, h: Tensor) -> Tensor:
        return _add(h, self.middle, "middle", 0)

    def tensors(self) -> list[Tensor]:
        return [*self.after_input.values(), *self.skips.values(), *([self.middle] if self.middle is not None else []),
                *self.after_block.values(), *self.after_single.values()]

    def map(self, fn) -> ControlResiduals:
        """The same residuals with `fn` applied to each tensor."""
        return ControlResiduals({k: fn(v) for k, v in self.after_input.items()},
                                {k: fn(v) for k, v in self.skips.items()},
                                None if self.middle is None else fn(self.middle),
                                {k: fn(v) for k, v in self.after_block.items()},
                                {k: fn(v) for k, v in self.after_single.items()})

    def plus(self, other: ControlResiduals | None) -> ControlResiduals:
        """Residuals of two stacked control models (summed where both give one), as ComfyUI's control_merge."""
        if other is None:
            return self

        def merged(a: dict, b: dict) -> dict:
            out = dict(b)
            for k, v in a.items():
                out[k] = v if k not in out else out[k] + v
            return out
        middle = self.middle if other.middle is None else (
            other.middle if self.middle is None else other.middle + self.middle)
        return ControlResiduals(merged(self.after_input, other.after_input), merged(self.skips, other.skips), middle,
                                merged(self.after_block, other.after_block), merged(self.after_single, other.after_single))


def _add(h: Tensor, residual: Tensor | None, where: str, index: int) -> Tensor:
    if residual is None:
        return h
    try:
        return h + residual.to(h.dtype)
    except RuntimeError:
        log.warning("control residual for %s block %d not applied: shape %s does not fit %s",
                    where, index, tuple(residual.shape), tuple(h.shape))
        return h


class UnionFusionBlock(nn.Module):
    """Pre-norm self-attention + QuickGELU MLP over the control-type tokens (CLIP's residual attention block,
    Radford et al. 2021; as xinsir's ControlNet++ `transformer_layes`)."""

    def __init__(self, width: int = UNION_WIDTH, heads: int = UNION_HEADS):
        super().__init__()
        self.heads = heads
        self.attn = nn.Module()
        self.attn.in_proj = nn.Linear(width, 3 * width)
        self.attn.out_proj = nn.Linear(width, width)
        self.ln_1 = nn.LayerNorm(width)
        self.mlp = nn.Sequential()
        self.mlp.add_module("c_fc", nn.Linear(width, 4 * width))
        self.mlp.add_module("c_proj", nn.Linear(4 * width, width))
        self.ln_2 = nn.LayerNorm(width)

    def forward(self, x: Tensor) -> Tensor:                             # x [B, N, width]
        b, n, c = x.shape
        q, k, v = self.attn.in_proj(self.ln_1(x)).chunk(3, dim=-1)
        q, k, v = (t.view(b, n, self.heads, c // self.heads).transpose(1, 2) for t in (q, k, v))
        out = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, n, c)
        x = x + self.attn.out_proj(out)
        h = self.mlp.c_fc(self.ln_2(x))
        return x + self.mlp.c_proj(h * torch.sigmoid(1.702 * h))        # QuickGELU (CLIP)


class UnionTypeEmbedding(nn.Module):
    """The chosen control types as a one-hot vector, each entry's 256-wide sinusoidal embedding
    concatenated, through Linear-SiLU-Linear to the time embedding's width (added to it)."""

    def __init__(self, types: int, out_dim: int):
        super().__init__()
        self.types = types
        self.linear_1 = nn.Linear(UNION_TYPE_EMBED * types, out_dim)
        self.linear_2 = nn.Linear(out_dim, out_dim)

    def forward(self, control_types: tuple[int, ...], dtype: torch.dtype) -> Tensor:
        one_hot = torch.zeros(self.types, device=self.linear_1.weight.device)
        one_hot[list(control_types)] = 1.0
        e = timestep_embedding(one_hot, UNION_TYPE_EMBED).to(dtype).reshape(1, -1)   # [1, types * 256]
        return self.linear_2(F.silu(self.linear_1(e)))                 # [1, ted]


def _zero_conv(channels: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(channels, channels, 1))                  # `zero_convs.N.0`


class ControlNet(nn.Module):
    """(x [B, 4, H, W], hint [B|1, Ch, 8H, 8W], timesteps [B], context [B, T, ctx]) -> ControlResiduals."""

    OFFLOAD_BLOCKS = ("input_blocks", "middle_block")

    def __init__(self, config: ControlNetConfig, attention: str = DEFAULT_ATTENTION):
        super().__init__()
        self.config = config
        u = config.unet
        fn = attention_backend(attention)
        mc, ted, groups = u.model_channels, u.time_embed_dim, u.norm_groups
        self.time_embed = nn.Sequential(nn.Linear(mc, ted), nn.SiLU(), nn.Linear(ted, ted))
        if u.adm_in_channels:                       # SDXL: `label_emb.0.0` / `label_emb.0.2`, as in the UNet
            self.label_emb = nn.Sequential(nn.Sequential(nn.Linear(u.adm_in_channels, ted), nn.SiLU(),
                                                         nn.Linear(ted, ted)))
        widths = (config.hint_channels, *HINT_WIDTHS, mc)
        hint_layers: list[nn.Module] = []
        for i, stride in enumerate(HINT_STRIDES):   # conv, SiLU, conv, ... conv: `input_hint_block.{0,2,..,14}`
            if i:
                hint_layers.append(nn.SiLU())
            hint_layers.append(nn.Conv2d(widths[i], widths[i + 1], 3, stride=stride, padding=1))
        self.input_hint_block = nn.Sequential(*hint_layers)

        self.input_blocks = nn.ModuleList([TimestepEmbedSequential(nn.Conv2d(u.in_channels, mc, 3, padding=1))])
        self.zero_convs = nn.ModuleList([_zero_conv(mc)])
        ch = mc
        depths = iter(u.transformer_depth)
        for level, mult in enumerate(u.channel_mult):           # the UNet's encoder half, block for block
            for _ in range(u.num_res_blocks[level]):
                layers: list[nn.Module] = [ResBlock(ch, ted, mult * mc, groups)]
                ch = mult * mc
                depth = next(depths)
                if depth:
                    layers.append(SpatialTransformer(ch, depth, u, fn))
                self.input_blocks.append(TimestepEmbedSequential(*layers))
                self.zero_convs.append(_zero_conv(ch))
            if level != len(u.channel_mult) - 1:
                self.input_blocks.append(TimestepEmbedSequential(Downsample(ch)))
                self.zero_convs.append(_zero_conv(ch))
        middle: list[nn.Module] = [ResBlock(ch, ted, ch, groups)]
        if u.transformer_depth_middle > 0:
            middle.append(SpatialTransformer(ch, u.transformer_depth_middle, u, fn))
        if u.transformer_depth_middle >= 0:
            middle.append(ResBlock(ch, ted, ch, groups))
        self.middle_block = TimestepEmbedSequential(*middle)
        self.middle_block_out = _zero_conv(ch)
        if config.union_control_types:
            if mc != UNION_WIDTH:
                raise ValueError(f"a union ControlNet needs model_channels {UNION_WIDTH}, got {mc}")
            self.task_embedding = nn.Parameter(torch.empty(config.union_control_types, UNION_WIDTH))
            self.transformer_layes = nn.Sequential(UnionFusionBlock())    # (sic: the files' spelling)
            self.spatial_ch_projs = nn.Linear(UNION_WIDTH, UNION_WIDTH)
            self.control_add_embedding = UnionTypeEmbedding(config.union_control_types, ted)

    @property
    def dtype(self) -> torch.dtype:
        return self.time_embed[0].weight.dtype

    def encode_hint(self, hint: Tensor) -> Tensor:
        """hint [B, Ch, 8H, 8W] in [0, 1] -> [B, model_channels, H, W] (cldm.py `input_hint_block`)."""
        return self.input_hint_block(hint.to(self.dtype))

    def _union_fused_hint(self, guided_hint: Tensor, control_types: tuple[int, ...]) -> Tensor:
        """A union net's hint features plus a per-channel shift computed from their mean and the first
        chosen type's task embedding (as ComfyUI's cldm.ControlNet.union_controlnet_merge with one hint)."""
        feat = guided_hint.mean(dim=(2, 3)) + self.task_embedding[control_types[0]].to(guided_hint.dtype)
        tokens = self.transformer_layes(feat[:, None])                     # [B, 1, 320]
        return guided_hint + self.spatial_ch_projs(tokens[:, 0])[:, :, None, None]

    def forward(self, x: Tensor, hint: Tensor, timesteps: Tensor, context: Tensor,
                y: Tensor | None = None, control_types: tuple[int, ...] = ()) -> ControlResiduals:
        """control_types: a union net's chosen types (SetUnionControlNetType; () = "auto"); others ignore it."""
        dtype = self.dtype
        emb = self.time_embed(timestep_embedding(timesteps, self.config.unet.model_channels).to(dtype))
        guided_hint = self.encode_hint(hint)                               # [B|1, mc, H, W]
        if self.config.union_control_types:
            if any(t >= self.config.union_control_types for t in control_types):
                raise ValueError(f"control type {max(control_types)} is out of range: this union ControlNet has "
                                 f"{self.config.union_control_types} types (the ProMax file has 8)")
            emb = emb + self.control_add_embedding(control_types, dtype)
            if control_types:
                guided_hint = self._union_fused_hint(guided_hint, control_types)
        if self.config.unet.adm_in_channels:
            if y is None:
                raise ValueError("this ControlNet needs the SDXL ADM vector y")
            emb = emb + self.label_emb(y.to(dtype))
        h = x.to(dtype)
        context = context.to(dtype)
        skips: dict[int, Tensor] = {}
        for i, (block, zero_conv) in enumerate(zip(self.input_blocks, self.zero_convs)):
            h = block(h, emb, context)
            if i == 0:
                h = h + guided_hint                          # the encoded hint joins after the stem conv
            skips[i] = zero_conv(h)
        h = self.middle_block(h, emb, context)
        return ControlResiduals(skips=skips, middle=self.middle_block_out(h))
