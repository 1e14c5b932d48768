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
is converted by models/convert/controlnet_mmdit.py.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import torch
from torch import Tensor, nn

from models.attention import DEFAULT_ATTENTION, attention_backend
from models.controlnet import ControlResiduals
from models.mmdit import EmbedderMlp, JointBlock, MMDiTConfig, PatchEmbed
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
