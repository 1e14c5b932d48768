"""The CLIP text transformer (Radford et al. 2021, "Learning Transferable Visual Models From Natural
Language Supervision"; architecture of GPT-2, Radford et al. 2019: pre-LayerNorm blocks, causal mask).

One module for every CLIP text tower Stable Diffusion uses: OpenAI CLIP ViT-L/14 (SD1.x, SDXL's first
tower), OpenCLIP ViT-H/14 (SD2.x) and OpenCLIP ViT-bigG/14 (SDXL's second tower, SD3's clip_g). Parameter names follow the Hugging Face
`CLIPTextModel` layout (`text_model.embeddings...`, `encoder.layers.N.self_attn.q_proj` ...), the
layout SD1 checkpoints store; OpenCLIP checkpoints are converted to it in `convert.py`.

Why not transformers' own CLIPTextModel: its parameter layout moved between the 4.x and 5.x releases
this project allows (5.x dropped the `text_model.` level), its public forward takes no input
embeddings (needed for textual inversion) and returns no normalised intermediate layer (needed for
clip skip). transformers' model stays the reference the tests compare against.

Forward, per ComfyUI `comfy/clip_model.py` and `sd1_clip.py` (behaviour, not code):
  x = token embeddings (+ inserted textual-inversion vectors) + position embeddings    [B, T, C]
  every layer: x = x + attn(ln1(x), causal); x = x + mlp(ln2(x))
  hidden = final_layer_norm(output of layer `clip_skip`)      (norm optional: SDXL's bigG skips it)
  pooled = final_layer_norm(output of the last layer) at the first end token, then text_projection
The pooled output always comes from the last layer, whatever the clip skip.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

# quick_gelu: x * sigmoid(1.702 x), the GELU approximation OpenAI CLIP was trained with (Hendrycks &
# Gimpel 2016, section 2); OpenCLIP ViT-H uses the exact erf GELU.
ACTIVATIONS = {
    "quick_gelu": lambda x: x * torch.sigmoid(1.702 * x),
    "gelu": F.gelu,
}


# What a kind implies beyond its sizes.
KIND_DEFAULTS: dict[str, dict] = {
    # SD1: OpenAI CLIP, quick_gelu, last layer, padded with the end token (ComfyUI sd1_clip.py)
    "clip_l": {"activation": "quick_gelu", "default_clip_skip": -1, "pad_token": 49407},
    # SD2: OpenCLIP ViT-H, exact gelu, penultimate layer, padded with 0 (ComfyUI sd2_clip.py)
    "open_clip_h": {"activation": "gelu", "default_clip_skip": -2, "pad_token": 0},
    # "clip_h": the same tower in the Hugging Face layout (what ComfyUI's CLIPSave writes for SD2, and
    # stabilityai's diffusers text_encoder files)
    "clip_h": {"activation": "gelu", "default_clip_skip": -2, "pad_token": 0},
    # SDXL / SD3: OpenCLIP ViT-bigG, exact gelu, penultimate layer *without* final_layer_norm, padded with 0;
    # pooled = text_projection(final_layer_norm(last layer) at the end token) (ComfyUI sdxl_clip.py
    # SDXLClipG: layer="penultimate", layer_norm_hidden_state=False; tokenizer pad_with_end=False).
    # "open_clip_g": OpenCLIP layout, as SDXL checkpoints store it (`conditioner.embedders.1.model.`);
    # "clip_g": Hugging Face CLIPTextModelWithProjection layout, as standalone clip_g files store it.
    "open_clip_g": {"activation": "gelu", "default_clip_skip": -2, "norm_hidden_state": False, "pad_token": 0},
    "clip_g": {"activation": "gelu", "default_clip_skip": -2, "norm_hidden_state": False, "pad_token": 0},
}

# Behaviour a model family sets on a tower beyond its kind's defaults (`load_text_encoder(..., **behaviour)`).
BEHAVIOUR_FIELDS = ("default_clip_skip", "norm_hidden_state", "pad_token")
# SDXL and SD3 run CLIP-L at the penultimate layer without final_layer_norm (ComfyUI sdxl_clip.py /
# sd3_clip.py: SDClipModel(layer="hidden", layer_idx=-2, layer_norm_hidden_state=False)); padding stays
# the end token.
CLIP_L_PENULTIMATE = {"default_clip_skip": -2, "norm_hidden_state": False}


@dataclass(frozen=True)
class ClipTextConfig:
    """Sizes and behaviour of one text tower. `text_encoder_config_from_shapes` derives it from a file;
    `ClipTextConfig.of_kind("open_clip_h", hidden_size=...)` builds one by hand with the kind's defaults."""

    kind: str = "clip_l"                # "clip_l", "clip_g" (HF layout); "open_clip_h", "open_clip_g" (OpenCLIP)
    vocab_size: int = 49408
    max_positions: int = 77
    hidden_size: int = 768
    num_layers: int = 12
    num_heads: int = 12
    intermediate_size: int = 3072
    activation: str = "quick_gelu"
    projection_dim: int | None = None   # None: no text_projection, pooled output is unprojected
    layer_norm_eps: float = 1e-5
    default_clip_skip: int = -1         # -1 last layer, -2 penultimate (SD2)
    norm_hidden_state: bool = True      # final_layer_norm on the clip-skip layer's output
    pad_token: int = 49407              # SD1 pads with the end token, OpenCLIP with 0

    @classmethod
    def of_kind(cls, kind: str, **sizes) -> ClipTextConfig:
        if kind not in KIND_DEFAULTS:
            raise ValueError(f"unknown text encoder kind {kind!r}; choose one of {list(KIND_DEFAULTS)}")
        return cls(kind=kind, **(KIND_DEFAULTS[kind] | sizes))

    @property
    def pooled_dim(self) -> int:
        return self.projection_dim or self.hidden_size


class CastLinear(nn.Linear):
    """nn.Linear whose weights are cast to the input's dtype for this call: a tower kept in its stored fp16 /
    bf16 computes in fp32 with exactly the values of a tower cast to fp32 when loaded (widening is lossless)."""

    def forward(self, x: Tensor) -> Tensor:
        return F.linear(x, _as(self.weight, x), None if self.bias is None else _as(self.bias, x))


class CastLayerNorm(nn.LayerNorm):
    """nn.LayerNorm with its affine parameters cast to the input's dtype (see CastLinear)."""

    def forward(self, x: Tensor) -> Tensor:
        return F.layer_norm(x, self.normalized_shape, _as(self.weight, x), _as(self.bias, x), self.eps)


def _as(w: Tensor, x: Tensor) -> Tensor:
    return w if w.dtype == x.dtype else w.to(x.dtype)


class ClipAttention(nn.Module):
    def __init__(self, config: ClipTextConfig):
        super().__init__()
        c = config.hidden_size
        self.num_heads = config.num_heads
        self.q_proj, self.k_proj, self.v_proj = CastLinear(c, c), CastLinear(c, c), CastLinear(c, c)
        self.out_proj = CastLinear(c, c)

    def forward(self, x: Tensor) -> Tensor:
        b, t, c = x.shape
        # [B, T, C] -> [B, heads, T, C/heads]
        q, k, v = (p(x).view(b, t, self.num_heads, c // self.num_heads).transpose(1, 2)
                   for p in (self.q_proj, self.k_proj, self.v_proj))
        out = F.scaled_dot_product_attention(q, k, v, is_causal=True)   # softmax(q k^T / sqrt(d) + causal) v
        return self.out_proj(out.transpose(1, 2).reshape(b, t, c))       # [B, heads, T, d] -> [B, T, C]


class ClipMLP(nn.Module):
    def __init__(self, config: ClipTextConfig):
        super().__init__()
        self.fc1 = CastLinear(config.hidden_size, config.intermediate_size)
        self.fc2 = CastLinear(config.intermediate_size, config.hidden_size)
        self.activation = ACTIVATIONS[config.activation]

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(self.activation(self.fc1(x)))


class ClipLayer(nn.Module):
    def __init__(self, config: ClipTextConfig):
        super().__init__()
        self.layer_norm1 = CastLayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.self_attn = ClipAttention(config)
        self.layer_norm2 = CastLayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.mlp = ClipMLP(config)

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.self_attn(self.layer_norm1(x))
        return x + self.mlp(self.layer_norm2(x))


class ClipEmbeddings(nn.Module):
    def __init__(self, config: ClipTextConfig):
        super().__init__()
        self.token_embedding = nn.Embedding(config.vocab_size, config.hidden_size)
        self.position_embedding = nn.Embedding(config.max_positions, config.hidden_size)


class ClipEncoder(nn.Module):
    def __init__(self, config: ClipTextConfig):
        super().__init__()
        self.layers = nn.ModuleList(ClipLayer(config) for _ in range(config.num_layers))


class ClipTextTransformer(nn.Module):
    def __init__(self, config: ClipTextConfig):
        super().__init__()
        self.embeddings = ClipEmbeddings(config)
        self.encoder = ClipEncoder(config)
        self.final_layer_norm = CastLayerNorm(config.hidden_size, eps=config.layer_norm_eps)


class ClipTextModel(nn.Module):
    """Parameters: `text_model.*` (HF names) and, if the tower has one, `text_projection.weight` [P, C]."""

    OFFLOAD_BLOCKS = ("text_model.encoder.layers",)
    # their layers' weights are read only inside the layers' own forward: streamable layer by layer
    OFFLOAD_LAYERS = True
    # every matrix and norm casts its weights to the activations' dtype (CastLinear, CastLayerNorm), so a tower
    # kept in its stored fp16 computes in fp32 without an fp32 copy (encoder.load_text_encoder)

    def __init__(self, config: ClipTextConfig):
        super().__init__()
        self.config = config
        # True when the weights are kept narrower than the compute dtype (load_text_encoder): model management
        # then leaves them as stored (views of the mapped file) and every layer casts them when it runs
        self.CASTS_WEIGHTS_PER_USE = False
        self.text_model = ClipTextTransformer(config)
        self.text_projection = (CastLinear(config.hidden_size, config.projection_dim, bias=False)
                                if config.projection_dim else None)

    @property
    def token_embedding(self) -> nn.Embedding:
        return self.text_model.embeddings.token_embedding

    def forward(self, token_embeds: Tensor, end_index: Tensor, *, clip_skip: int) -> tuple[Tensor, Tensor]:
        """token_embeds [B, T, C] (token vectors before positions), end_index [B] (where pooling reads)
        -> (hidden [B, T, C] from layer `clip_skip` (-1 last, -2 penultimate ...), pooled [B, P])."""
        tm = self.text_model
        positions = torch.arange(token_embeds.shape[1], device=token_embeds.device)
        # called as modules (not `.weight` reads) so model management's per-module hooks see every use
        x = token_embeds + tm.embeddings.position_embedding(positions).to(token_embeds.dtype)   # [B, T, C]
        layers = tm.encoder.layers
        # ComfyUI: a clip skip beyond the depth means "last layer"
        keep = len(layers) + clip_skip if -len(layers) <= clip_skip <= -1 else len(layers) - 1
        hidden = x
        for i, layer in enumerate(layers):
            x = layer(x)
            if i == keep:
                hidden = x
        last = tm.final_layer_norm(x)
        if keep == len(layers) - 1:
            hidden = last if self.config.norm_hidden_state else x
        elif self.config.norm_hidden_state:
            hidden = tm.final_layer_norm(hidden)
        pooled = last[torch.arange(last.shape[0], device=last.device), end_index]      # [B, C]
        if self.text_projection is not None:
            pooled = self.text_projection(pooled)                                      # [B, P]
        return hidden, pooled
