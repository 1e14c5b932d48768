"""Style models: CLIP vision features -> extra cross-attention tokens appended to the text conditioning.

Two file layouts (what ComfyUI's StyleModelLoader reads, comfy/sd.py load_style_model):

- T2I-Adapter style (Mou et al. 2023, "T2I-Adapter", sec. 3.3 "style adapter"; TencentARC
  t2iadapter_style_sd14v1): learned query tokens (`style_embedding` [1, T, W]) appended to CLIP ViT-L's
  last hidden state [B, 257, W], LayerNorm, `transformer_layes.N` OpenCLIP-style residual attention blocks
  (fused `attn.in_proj_*`, quick_gelu MLP `mlp.c_fc` / `mlp.c_proj`), LayerNorm of the last T tokens,
  then `proj` [W, context]: [B, T, context] tokens (8 of 768 for SD1.x).
- FLUX.1 Redux (black-forest-labs FLUX.1-Redux-dev, `redux_up` / `redux_down`): an MLP on each SigLIP
  token, down(silu(up(x))): [B, 729, 1152] -> [B, 729, 4096] (the T5 context width).

Widths, token count and depth come from the shapes; the style adapter's head count is not stored: 8
(the published file and ComfyUI's fixed `num_head=8`).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn


STYLE_ADAPTER_HEADS = 8


@dataclass(frozen=True)
class StyleModelConfig:
    kind: str                       # "t2i_style" | "redux"
    in_width: int                   # CLIP vision hidden width (1024 ViT-L) / SigLIP width (1152)
    out_width: int                  # context width of the tokens (768 SD1.x / 4096 FLUX)
    num_layers: int = 0             # style adapter: residual attention blocks
    num_tokens: int = 0             # style adapter: learned query tokens
    num_heads: int = STYLE_ADAPTER_HEADS


class _FP32LayerNorm(nn.LayerNorm):
    """LayerNorm computed in float32 whatever the weights' dtype (the adapter's own LayerNorm)."""

    def forward(self, x: Tensor) -> Tensor:
        return F.layer_norm(x.float(), self.normalized_shape, self.weight.float(), self.bias.float(),
                            self.eps).to(x.dtype)


class _ResidualAttentionBlock(nn.Module):
    """x + attn(ln_1(x)); x + mlp(ln_2(x)), quick_gelu MLP 4x wide (OpenAI CLIP's block)."""

    def __init__(self, width: int, heads: int):
        super().__init__()
        self.attn = nn.MultiheadAttention(width, heads, batch_first=True)   # in_proj_weight/bias, out_proj
        self.ln_1 = _FP32LayerNorm(width)
        self.mlp = nn.Sequential()
        self.mlp.add_module("c_fc", nn.Linear(width, width * 4))
        self.mlp.add_module("c_proj", nn.Linear(width * 4, width))
        self.ln_2 = _FP32LayerNorm(width)

    def forward(self, x: Tensor) -> Tensor:
        h = self.ln_1(x)
        x = x + self.attn(h, h, h, need_weights=False)[0]
        h = self.mlp.c_fc(self.ln_2(x))
        return x + self.mlp.c_proj(h * torch.sigmoid(1.702 * h))             # quick_gelu


class StyleAdapter(nn.Module):
    """CLIP vision last hidden state [B, N, W] -> style tokens [B, T, context]."""

    def __init__(self, config: StyleModelConfig):
        super().__init__()
        self.config = config
        w = config.in_width
        self.style_embedding = nn.Parameter(torch.empty(1, config.num_tokens, w))
        self.ln_pre = _FP32LayerNorm(w)
        self.transformer_layes = nn.Sequential(*[_ResidualAttentionBlock(w, config.num_heads)
                                                 for _ in range(config.num_layers)])   # the file's spelling
        self.ln_post = _FP32LayerNorm(w)
        self.proj = nn.Parameter(torch.empty(w, config.out_width))

    def forward(self, features: Tensor) -> Tensor:
        dtype = self.proj.dtype
        queries = self.style_embedding.to(dtype).expand(features.shape[0], -1, -1)    # [B, T, W]
        x = torch.cat([features.to(dtype), queries], dim=1)                          # [B, N + T, W]
        x = self.transformer_layes(self.ln_pre(x))
        x = self.ln_post(x[:, -self.config.num_tokens:])                             # [B, T, W]
        return x @ self.proj                                                         # [B, T, context]


class ReduxEncoder(nn.Module):
    """SigLIP tokens [B, N, 1152] -> [B, N, 4096]."""

    def __init__(self, config: StyleModelConfig):
        super().__init__()
        self.config = config
        self.redux_up = nn.Linear(config.in_width, config.out_width * 3)
        self.redux_down = nn.Linear(config.out_width * 3, config.out_width)

    def forward(self, features: Tensor) -> Tensor:
        return self.redux_down(F.silu(self.redux_up(features.to(self.redux_up.weight.dtype))))


def style_model_for(config: StyleModelConfig) -> nn.Module:
    return StyleAdapter(config) if config.kind == "t2i_style" else ReduxEncoder(config)
