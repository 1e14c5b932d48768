"""MM-DiT (SD3) and MM-DiT-X (SD3.5): the multimodal diffusion transformer, in the single-file layout.

Architecture: Esser et al. 2024, "Scaling Rectified Flow Transformers for High-Resolution Image
Synthesis" (arXiv:2403.03206), section 4 and figure 2; QK RMS-normalisation (section 5.3.2) and the
MM-DiT-X dual attention of SD3.5 medium (Stability AI's SD3.5 model card: extra self-attention over the
image tokens in the first 13 blocks). Module names are those of Stability AI's reference code
(`sd3-ref` / `mmdit.py`), which is what `model.diffusion_model.*` keys in a single-file SD3 checkpoint
use, so a file loads without renaming: `joint_blocks.3.x_block.attn.qkv.weight`.

Every size comes from the config, so a 2-block test model takes exactly the path of the 24- or 38-block
released ones. In every released model the width is 64 x depth with 64-wide heads (heads = depth).

Shapes: B batch, C latent channels, H/W latent height/width, p patch, N = (H/p)(W/p) image tokens,
T context tokens, D hidden width, h heads, d = D / h head width.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from models.attention import DEFAULT_ATTENTION, AttentionFn, attention_backend
from models.unet import timestep_embedding

NORM_EPS = 1e-6            # every LayerNorm and RMSNorm of the reference code


@dataclass(frozen=True)
class MMDiTConfig:
    depth: int = 24                      # joint blocks
    hidden_size: int = 1536              # D = 64 * depth in the released models
    num_heads: int = 24
    patch_size: int = 2
    in_channels: int = 16
    out_channels: int = 16
    context_in_dim: int = 4096           # T5-XXL width (CLIP-L + CLIP-G states are zero-padded to it)
    adm_in_dim: int = 2048               # pooled CLIP-L (768) + CLIP-G (1280)
    pos_embed_max_size: int = 192        # the stored grid is max x max positions (384 for SD3.5 medium)
    qk_norm: bool = False                # RMSNorm on q and k per head (SD3.5)
    dual_attention_blocks: tuple[int, ...] = ()   # MM-DiT-X: blocks whose x_block has attn2
    mlp_ratio: float = 4.0
    frequency_embedding_size: int = 256

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_heads


def modulate(x: Tensor, shift: Tensor, scale: Tensor) -> Tensor:
    """adaLN: x * (1 + scale) + shift, per sample (Peebles & Xie 2023, "DiT", section 3.2)."""
    return torch.addcmul(shift.unsqueeze(1), x, 1 + scale.unsqueeze(1))


class RMSNorm(nn.Module):
    """x / rms(x) * weight over the last axis (Zhang & Sennrich 2019), statistics in float32."""

    def __init__(self, dim: int, eps: float = NORM_EPS):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: Tensor) -> Tensor:
        xf = x.float()
        xf = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)
        return xf.to(x.dtype) * self.weight.to(x.dtype)


class Mlp(nn.Module):
    """fc1 -> tanh-approximated GELU -> fc2 (the reference code's `Mlp` with `approximate="tanh"`)."""

    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(F.gelu(self.fc1(x), approximate="tanh"))


class EmbedderMlp(nn.Module):
    """Linear -> SiLU -> Linear; `mlp.0` / `mlp.2` in the file (the timestep and pooled-text embedders)."""

    def __init__(self, in_dim: int, dim: int):
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(in_dim, dim), nn.SiLU(), nn.Linear(dim, dim))

    def forward(self, x: Tensor) -> Tensor:
        return self.mlp(x)


class PatchEmbed(nn.Module):
    """p x p patches -> tokens: a stride-p convolution, then flatten [B, D, H/p, W/p] -> [B, N, D]."""

    def __init__(self, config: MMDiTConfig):
        super().__init__()
        p = config.patch_size
        self.proj = nn.Conv2d(config.in_channels, config.hidden_size, kernel_size=p, stride=p)

    def forward(self, x: Tensor) -> Tensor:
        return self.proj(x).flatten(2).transpose(1, 2)                 # [B, N, D]


class QKVProjection(nn.Module):
    """The `attn` / `attn2` of a block: fused qkv, optional per-head RMSNorm of q and k, output proj
    (absent in the pre-only last context block, whose attention output is never used)."""

    def __init__(self, dim: int, num_heads: int, *, has_proj: bool, qk_norm: bool):
        super().__init__()
        self.num_heads = num_heads
        head_dim = dim // num_heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim) if has_proj else None
        self.ln_q = RMSNorm(head_dim) if qk_norm else None
        self.ln_k = RMSNorm(head_dim) if qk_norm else None

    def qkv_heads(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """[B, L, D] -> q, k, v each [B, h, L, d]."""
        b, n, _ = x.shape
        q, k, v = self.qkv(x).view(b, n, 3, self.num_heads, -1).permute(2, 0, 3, 1, 4)   # 3 x [B, h, L, d]
        if self.ln_q is not None:
            q, k = self.ln_q(q), self.ln_k(k)
        return q, k, v


def _merge_heads(x: Tensor) -> Tensor:
    return x.transpose(1, 2).flatten(2)                                 # [B, h, L, d] -> [B, L, D]


class DismantledBlock(nn.Module):
    """One stream (context or image) of a joint block: adaLN-zero modulated attention inputs, then the
    gated residual attention output and the gated modulated MLP (Esser et al. 2024, figure 2b).

    adaLN_modulation.1 emits 6 D-wide vectors (shift/scale/gate for attention and MLP), 9 with dual
    attention (a second shift/scale/gate for attn2), 2 in the pre-only block (shift/scale only)."""

    def __init__(self, config: MMDiTConfig, *, pre_only: bool = False, dual_attention: bool = False):
        super().__init__()
        d = config.hidden_size
        self.pre_only = pre_only
        self.dual_attention = dual_attention
        self.attn = QKVProjection(d, config.num_heads, has_proj=not pre_only, qk_norm=config.qk_norm)
        self.attn2 = (QKVProjection(d, config.num_heads, has_proj=True, qk_norm=config.qk_norm)
                      if dual_attention else None)
        self.mlp = None if pre_only else Mlp(d, int(d * config.mlp_ratio))
        chunks = 2 if pre_only else (9 if dual_attention else 6)
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(d, chunks * d))

    @staticmethod
    def _norm(x: Tensor) -> Tensor:
        return F.layer_norm(x, x.shape[-1:], eps=NORM_EPS)            # norm1 / norm2: no affine

    def pre_attention(self, x: Tensor, c: Tensor) -> tuple[tuple[Tensor, Tensor, Tensor], tuple[Tensor, ...]]:
        """-> (q, k, v of this stream, what post_attention needs)."""
        mod = self.adaLN_modulation(c).chunk(2 if self.pre_only else (9 if self.dual_attention else 6), dim=1)
        x_norm = self._norm(x)
        qkv = self.attn.qkv_heads(modulate(x_norm, mod[0], mod[1]))
        if self.pre_only:
            return qkv, ()
        extra = ()
        if self.dual_attention:
            extra = (self.attn2.qkv_heads(modulate(x_norm, mod[6], mod[7])), mod[8])
        return qkv, (x, mod[2], mod[3], mod[4], mod[5], *extra)

    def post_attention(self, attn: Tensor, state: tuple, attention_fn: AttentionFn) -> Tensor:
        """attn [B, L, D] (this stream's rows of the joint attention) -> the block's output stream."""
        x, gate_msa, shift_mlp, scale_mlp, gate_mlp = state[:5]
        x = x + gate_msa.unsqueeze(1) * self.attn.proj(attn)
        if self.dual_attention:
            (q2, k2, v2), gate_msa2 = state[5], state[6]
            x = x + gate_msa2.unsqueeze(1) * self.attn2.proj(_merge_heads(attention_fn(q2, k2, v2, False)))
        return x + gate_mlp.unsqueeze(1) * self.mlp(modulate(self._norm(x), shift_mlp, scale_mlp))


class JointBlock(nn.Module):
    """Both streams attend jointly over [context tokens, image tokens] (Esser et al. 2024, eq. 6 and
    figure 2b); each stream keeps its own weights."""

    def __init__(self, config: MMDiTConfig, *, is_last: bool, dual_attention: bool):
        super().__init__()
        self.context_block = DismantledBlock(config, pre_only=is_last)
        self.x_block = DismantledBlock(config, dual_attention=dual_attention)

    def forward(self, context: Tensor, x: Tensor, c: Tensor, attention_fn: AttentionFn) \
            -> tuple[Tensor | None, Tensor]:
        (cq, ck, cv), c_state = self.context_block.pre_attention(context, c)
        (xq, xk, xv), x_state = self.x_block.pre_attention(x, c)
        q, k, v = (torch.cat(pair, dim=2) for pair in ((cq, xq), (ck, xk), (cv, xv)))   # [B, h, T + N, d]
        attn = _merge_heads(attention_fn(q, k, v, False))                              # [B, T + N, D]
        t = context.shape[1]
        context_out = None if self.context_block.pre_only else \
            self.context_block.post_attention(attn[:, :t], c_state, attention_fn)
        return context_out, self.x_block.post_attention(attn[:, t:], x_state, attention_fn)


class FinalLayer(nn.Module):
    """adaLN (shift, scale) on a LayerNorm without affine, then a linear map to p*p*C values per token."""

    def __init__(self, config: MMDiTConfig):
        super().__init__()
        d, p = config.hidden_size, config.patch_size
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(d, 2 * d))
        self.linear = nn.Linear(d, p * p * config.out_channels)

    def forward(self, x: Tensor, c: Tensor) -> Tensor:
        shift, scale = self.adaLN_modulation(c).chunk(2, dim=1)
        return self.linear(modulate(F.layer_norm(x, x.shape[-1:], eps=NORM_EPS), shift, scale))


class MMDiT(nn.Module):
    """forward(x [B, C, H, W], timesteps [B] (sigma * 1000), context [B, T, context_in_dim],
    y [B, adm_in_dim]) -> velocity [B, C, H, W]."""

    OFFLOAD_BLOCKS = ("joint_blocks",)
    compute_dtype: torch.dtype | None = None   # None: its weights' dtype; set for fp8 weights (models/fp8_weights.py)
    # conditioning inputs (sampling.guidance names) the forward takes as keyword arguments
    EXTRA_INPUTS = {"y": "pooled_output"}

    def __init__(self, config: MMDiTConfig, attention: str = DEFAULT_ATTENTION):
        super().__init__()
        self.config = config
        self.attention_fn = attention_backend(attention)
        d = config.hidden_size
        self.x_embedder = PatchEmbed(config)
        self.register_buffer("pos_embed", torch.zeros(1, config.pos_embed_max_size ** 2, d))
        self.t_embedder = EmbedderMlp(config.frequency_embedding_size, d)
        self.y_embedder = EmbedderMlp(config.adm_in_dim, d)
        self.context_embedder = nn.Linear(config.context_in_dim, d)
        self.joint_blocks = nn.ModuleList(
            JointBlock(config, is_last=i == config.depth - 1, dual_attention=i in config.dual_attention_blocks)
            for i in range(config.depth))
        self.final_layer = FinalLayer(config)

    def cropped_pos_embed(self, h: int, w: int) -> Tensor:
        """The centre h x w window of the stored max x max grid -> [1, h*w, D] (reference `cropped_pos_embed`)."""
        m = self.config.pos_embed_max_size
        if h > m or w > m:
            raise ValueError(f"latent of {h}x{w} patches exceeds the model's {m}x{m} position grid")
        top, left = (m - h) // 2, (m - w) // 2
        grid = self.pos_embed.view(1, m, m, -1)[:, top:top + h, left:left + w, :]      # [1, h, w, D]
        return grid.reshape(1, h * w, -1)

    def unpatchify(self, x: Tensor, h: int, w: int) -> Tensor:
        """[B, N, p*p*C] -> [B, C, h*p, w*p]."""
        p, c = self.config.patch_size, self.config.out_channels
        x = x.view(x.shape[0], h, w, p, p, c)                                         # [B, h, w, p, p, C]
        return torch.einsum("nhwpqc->nchpwq", x).reshape(x.shape[0], c, h * p, w * p)

    def forward(self, x: Tensor, timesteps: Tensor, context: Tensor, y: Tensor | None = None, *,
                skip_blocks: frozenset[int] = frozenset(), control=None) -> Tensor:
        """`skip_blocks`: joint blocks to pass through unchanged (Skip Layer Guidance); `control`: a
        models.controlnet.ControlResiduals whose `after_block` tensors join the image tokens (SD3 ControlNets)."""
        p = self.config.patch_size
        height, width = x.shape[-2:]
        # latent sides not divisible by p are padded circularly and cropped again at the end (as ComfyUI)
        pad_h, pad_w = -height % p, -width % p
        if pad_h or pad_w:
            x = F.pad(x, (0, pad_w, 0, pad_h), mode="circular")
        h, w = x.shape[-2] // p, x.shape[-1] // p
        dtype = self.compute_dtype or self.x_embedder.proj.weight.dtype
        x = x.to(dtype)
        tokens = self.x_embedder(x) + self.cropped_pos_embed(h, w).to(dtype)           # [B, N, D]
        c = self.t_embedder(timestep_embedding(timesteps, self.config.frequency_embedding_size).to(dtype))
        if y is None:
            y = torch.zeros(x.shape[0], self.config.adm_in_dim, device=x.device, dtype=dtype)
        c = c + self.y_embedder(y.to(dtype))                                           # [B, D]
        ctx = self.context_embedder(context.to(dtype))                                 # [B, T, D]
        for i, block in enumerate(self.joint_blocks):
            if i in skip_blocks:
                continue
            ctx, tokens = block(ctx, tokens, c, self.attention_fn)
            if control is not None:
                tokens = control.add_after_block(i, tokens)
        out = self.unpatchify(self.final_layer(tokens, c), h, w)                       # [B, C, H', W']
        return out[:, :, :height, :width]
