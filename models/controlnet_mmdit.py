"""SD3 ControlNet: MM-DiT joint blocks on a copy of the image + text streams (diffusers' SD3ControlNetModel,
the layout of InstantX's SD3 ControlNets and alimama-creative's SD3 inpainting ControlNet).

Architecture (Zhang et al. 2023 "ControlNet", applied to the MM-DiT of Esser et al. 2024, arXiv:2403.03206;
diffusers `SD3ControlNetModel` read for the facts): the patch embedding of the noisy latent plus its
position embedding, plus a second patch embedding (`pos_embed_input`) of the VAE-encoded hint image (16
latent channels; 17 for the inpainting net, whose extra channel is the keep-mask); the timestep embedding
plus the embedding of the pooled text vector (zeros: SD3 ControlNets are applied with a zero pooled
vector, as diffusers' pipeline and ComfyUI do); the text context through `context_embedder`; n joint
blocks (none pre-only) and after each one a Linear "zero" projection (`controlnet_blocks.i`) of the image
tokens. The base model has `depth` = hidden / 64 blocks; control output i is added to the image tokens
after each of base blocks [i * k, (i + 1) * k), k = depth // n, except the base's last (pre-only) block
(diffusers' SD3Transformer2DModel adds it where `context_pre_only` is False; ComfyUI's cldm/mmdit gives
the last control output k - 1 blocks).

Module names are the single-file MM-DiT's (models/mmdit.py) so its blocks are reused; the diffusers file
is converted by models/convert/controlnet_mmdit.py. `SD35ControlNet` (below) is Stability AI's own SD3.5
large ControlNet layout (blur / canny / depth): single-stream blocks on the image tokens only.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from models.attention import DEFAULT_ATTENTION, attention_backend
from models.controlnet import ControlResiduals
from models.mmdit import DismantledBlock, EmbedderMlp, JointBlock, MMDiTConfig, PatchEmbed, _merge_heads
from models.unet import timestep_embedding

HEAD_WIDTH = 64                          # released MM-DiTs: hidden = 64 x depth


@dataclass(frozen=True)
class MMDiTControlNetConfig:
    mmdit: MMDiTConfig                   # widths of the base model; `depth` here = the control blocks
    base_depth: int                      # blocks of the base MM-DiT (hidden / 64)
    hint_channels: int = 16              # latent channels of the hint (17: inpainting, + the keep-mask)

    @property
    def is_inpaint(self) -> bool:
        return self.hint_channels == self.mmdit.in_channels + 1

    @property
    def blocks_per_output(self) -> int:
        return max(1, self.base_depth // self.mmdit.depth)


class MMDiTControlNet(nn.Module):
    """(x [B, 16, H, W], hint [B|1, Ch, H, W] latent, timesteps [B] (sigma * 1000), context [B, T, ctx])
    -> ControlResiduals with `after_block[i]` [B, N, D] for the base's joint blocks."""

    OFFLOAD_BLOCKS = ("joint_blocks",)

    def __init__(self, config: MMDiTControlNetConfig, attention: str = DEFAULT_ATTENTION):
        super().__init__()
        self.config = config
        c = config.mmdit
        d = c.hidden_size
        self.attention_fn = attention_backend(attention)
        self.x_embedder = PatchEmbed(c)
        self.register_buffer("pos_embed", torch.zeros(1, c.pos_embed_max_size ** 2, d))
        self.pos_embed_input = PatchEmbed(replace(c, in_channels=config.hint_channels))
        self.t_embedder = EmbedderMlp(c.frequency_embedding_size, d)
        self.y_embedder = EmbedderMlp(c.adm_in_dim, d)
        self.context_embedder = nn.Linear(c.context_in_dim, d)
        self.joint_blocks = nn.ModuleList(
            JointBlock(c, is_last=False, dual_attention=i in c.dual_attention_blocks) for i in range(c.depth))
        self.controlnet_blocks = nn.ModuleList(nn.Linear(d, d) for _ in range(c.depth))

    @property
    def dtype(self) -> torch.dtype:
        return self.x_embedder.proj.weight.dtype

    def cropped_pos_embed(self, h: int, w: int) -> Tensor:
        """The centre h x w window of the stored grid -> [1, h*w, D] (as the base MM-DiT's)."""
        m = self.config.mmdit.pos_embed_max_size
        if h > m or w > m:
            raise ValueError(f"latent of {h}x{w} patches exceeds the ControlNet's {m}x{m} position grid")
        top, left = (m - h) // 2, (m - w) // 2
        return self.pos_embed.view(1, m, m, -1)[:, top:top + h, left:left + w, :].reshape(1, h * w, -1)

    def forward(self, x: Tensor, hint: Tensor, timesteps: Tensor, context: Tensor) -> ControlResiduals:
        c = self.config.mmdit
        p = c.patch_size
        if x.shape[-2] % p or x.shape[-1] % p:
            raise ValueError(f"an SD3 ControlNet needs latent sides divisible by {p}, got {tuple(x.shape[-2:])}")
        dtype = self.dtype
        h, w = x.shape[-2] // p, x.shape[-1] // p
        tokens = self.x_embedder(x.to(dtype)) + self.cropped_pos_embed(h, w).to(dtype)   # [B, N, D]
        tokens = tokens + self.pos_embed_input(hint.to(dtype))                           # [B|1, N, D] hint
        emb = self.t_embedder(timestep_embedding(timesteps, c.frequency_embedding_size).to(dtype))
        zeros = torch.zeros(x.shape[0], c.adm_in_dim, device=x.device, dtype=dtype)     # zero pooled vector
        emb = emb + self.y_embedder(zeros)                                               # [B, D]
        ctx = self.context_embedder(context.to(dtype))                                   # [B, T, D]
        after_block: dict[int, Tensor] = {}
        k = self.config.blocks_per_output
        for i, (block, out_proj) in enumerate(zip(self.joint_blocks, self.controlnet_blocks)):
            ctx, tokens = block(ctx, tokens, emb, self.attention_fn)
            out = out_proj(tokens)
            last = i == len(self.joint_blocks) - 1               # its k - 1 blocks (ComfyUI cldm/mmdit)
            for j in range(i * k, (i + 1) * k - (1 if last else 0)):
                after_block[j] = out
        return ControlResiduals(after_block=after_block)


# --- SD3.5 large ControlNets in Stability AI's own layout (blur / canny / depth) ------------------------------
#
# Facts from ComfyUI's loader (comfy/controlnet.py load_controlnet_sd35, comfy/cldm/dit_embedder.py) and
# diffusers' scripts/convert_sd3_controlnet_to_diffusers.py, read for facts: `transformer_blocks.i` are
# single-stream DiT blocks (the x half of a joint block: adaLN-modulated self-attention over the image tokens
# with a qkv bias and no QK norm, then the MLP); there is no text context. The image tokens are the base
# model's own patch embedding of the noisy latent (the file holds no x_embedder: ComfyUI copies the base's in
# at pre_run), plus a fresh 2-D sin-cos position embedding of the token grid, plus the patch embedding of
# the VAE-latent hint (`pos_embed_input`); the conditioning vector is the timestep embedding plus the
# embedding of the pooled text vector (the real one, not zeros). Block i's output, through
# `controlnet_blocks.i`, is added after ceil(base_depth / n) consecutive base blocks (all 38 of SD3.5 large
# for its 19 blocks). The file's `control_type` scalar says how the hint is prepared (0 blur, 1 canny,
# 2 depth; see diffusion/controlnet.py).

CONTROL_TYPES = {0: "blur", 1: "canny", 2: "depth"}


@dataclass(frozen=True)
class SD35ControlNetConfig:
    mmdit: MMDiTConfig                   # width, heads, patch; `depth` = the control blocks, in_channels = hint
    base_depth: int                      # blocks of the base MM-DiT (hidden / 64, as ComfyUI assumes)
    control_type: int = -1               # the file's `control_type` (-1: none stored), set when loading

    @property
    def hint_channels(self) -> int:
        return self.mmdit.in_channels

    @property
    def blocks_per_output(self) -> int:
        return math.ceil(self.base_depth / self.mmdit.depth)

    @property
    def control_kind(self) -> str:
        return CONTROL_TYPES.get(self.control_type, "none")


def sincos_grid_embedding(dim: int, h: int, w: int, *, center: float = 7.5, magnitude: float = 7.5) -> Tensor:
    """[h*w, dim] fixed 2-D sin-cos position embedding of an h x w token grid (Vaswani et al. 2017 sinusoids
    per axis, as in MAE, He et al. 2022), the grid spanning center -/+ magnitude along its shorter side and
    proportionally more along the longer one (Stability's SD3.5 ControlNet embedder, as ComfyUI's
    get_2d_sincos_pos_embed_torch). The first dim/2 channels embed the column position, the rest the row."""
    short = min(h, w)
    rows = torch.linspace(center - magnitude * h / short, center + magnitude * h / short, h)
    cols = torch.linspace(center - magnitude * w / short, center + magnitude * w / short, w)
    grid_rows, grid_cols = torch.meshgrid(rows, cols, indexing="ij")                # [h, w] each

    def axis(positions: Tensor, d: int) -> Tensor:
        freqs = 1.0 / 10000 ** (torch.arange(d // 2, dtype=torch.float32) / (d / 2))  # [d/2]
        angles = positions.reshape(-1, 1) * freqs                                      # [h*w, d/2]
        return torch.cat([angles.sin(), angles.cos()], dim=1)                          # [h*w, d]
    return torch.cat([axis(grid_cols, dim // 2), axis(grid_rows, dim // 2)], dim=1)


class SD35ControlNet(nn.Module):
    """(x [B, 16, H, W], hint [B|1, 16, H, W] latent, timesteps [B] (sigma * 1000), y [B, adm] pooled text,
    x_embedder: the base MM-DiT's patch embedding) -> ControlResiduals with `after_block[i]` [B, N, D]."""

    OFFLOAD_BLOCKS = ("transformer_blocks",)

    def __init__(self, config: SD35ControlNetConfig, attention: str = DEFAULT_ATTENTION):
        super().__init__()
        self.config = config
        c = config.mmdit
        d = c.hidden_size
        self.attention_fn = attention_backend(attention)
        self.pos_embed_input = PatchEmbed(c)
        self.t_embedder = EmbedderMlp(c.frequency_embedding_size, d)
        self.y_embedder = EmbedderMlp(c.adm_in_dim, d)
        self.transformer_blocks = nn.ModuleList(DismantledBlock(replace(c, qk_norm=False)) for _ in range(c.depth))
        self.controlnet_blocks = nn.ModuleList(nn.Linear(d, d) for _ in range(c.depth))

    @property
    def dtype(self) -> torch.dtype:
        return self.pos_embed_input.proj.weight.dtype

    def forward(self, x: Tensor, hint: Tensor, timesteps: Tensor, y: Tensor | None, x_embedder) -> ControlResiduals:
        c = self.config.mmdit
        p = c.patch_size
        pad_h, pad_w = -x.shape[-2] % p, -x.shape[-1] % p          # circular padding, as the base model's
        if pad_h or pad_w:
            x = F.pad(x, (0, pad_w, 0, pad_h), mode="circular")
            hint = F.pad(hint, (0, pad_w, 0, pad_h), mode="circular")
        dtype = self.dtype
        h, w = x.shape[-2] // p, x.shape[-1] // p
        tokens = x_embedder(x).to(dtype)                                               # [B, N, D] base's
        tokens = tokens + sincos_grid_embedding(c.hidden_size, h, w).to(tokens.device, dtype)
        emb = self.t_embedder(timestep_embedding(timesteps, c.frequency_embedding_size).to(dtype))   # [B, D]
        if y is not None:
            emb = emb + self.y_embedder(y.to(dtype))
        tokens = tokens + self.pos_embed_input(hint.to(dtype))                         # [B|1, N, D] hint
        after_block: dict[int, Tensor] = {}
        k = self.config.blocks_per_output
        for i, (block, out_proj) in enumerate(zip(self.transformer_blocks, self.controlnet_blocks)):
            (q, kk, v), state = block.pre_attention(tokens, emb)
            attn = _merge_heads(self.attention_fn(q, kk, v, False))                    # [B, N, D]
            tokens = block.post_attention(attn, state, self.attention_fn)
            out = out_proj(tokens)
            for j in range(i * k, min((i + 1) * k, self.config.base_depth)):
                after_block[j] = out
        return ControlResiduals(after_block=after_block)
