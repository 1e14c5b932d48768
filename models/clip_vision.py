"""CLIP vision towers: the image encoders of CLIPVisionLoader / CLIPVisionEncode (IPAdapter, unCLIP, style
models, Revision, Redux).

Architecture: the ViT of Radford et al. 2021 ("Learning Transferable Visual Models From Natural Language
Supervision", sec. 2.4; Dosovitskiy et al. 2020 for the ViT itself): 14x14 (or 16x16) patches through a
strided conv, a learned class token, learned position embeddings, pre-LayerNorm, pre-norm transformer
layers (non-causal attention), then a LayerNorm on the class token and a linear projection to the joint
embedding. SigLIP (Zhai et al. 2023, "Sigmoid Loss for Language Image Pre-Training") has no class token
and no pre-LayerNorm, a bias on the patch conv, and normalises every output token.

Parameter names are the Hugging Face `CLIPVisionModelWithProjection` / `SiglipVisionModel` names
(`vision_model.encoder.layers.N.self_attn.q_proj.weight`, `visual_projection.weight`), the layout the
standalone clip_vision files ComfyUI users have store (OpenCLIP's `visual.*` layout is converted in
models/convert/clip_vision.py). The sizes come from the file (models.detection.detect_clip_vision).

Outputs (what ComfyUI's CLIP_VISION_OUTPUT carries, comfy/clip_vision.py, and what plugins read):
  last_hidden_state          [B, N, C]  the last layer's output (CLIP: before post_layernorm; SigLIP: after)
  penultimate_hidden_states  [B, N, C]  the output of the layer before the last
  image_embeds               CLIP: [B, P] projected class token; SigLIP: [B, N, C] (= last_hidden_state)
  all_hidden_states          SigLIP only: [B, layers, N, C]
  mm_projected               None (LLaVA projectors are not loaded)

Shapes: B batch, N tokens (patches, + 1 class token for CLIP), C width, P projection width.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

# OpenAI CLIP's image normalisation (openai/CLIP clip.py `_transform`); SigLIP uses 0.5 / 0.5.
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
SIGLIP_MEAN = SIGLIP_STD = (0.5, 0.5, 0.5)

# GELU variants: quick_gelu x * sigmoid(1.702 x) (OpenAI CLIP; Hendrycks & Gimpel 2016, sec. 2), the exact
# erf GELU (OpenCLIP ViT-H / bigG) and its tanh approximation (SigLIP).
ACTIVATIONS = {
    "quick_gelu": lambda x: x * torch.sigmoid(1.702 * x),
    "gelu": F.gelu,
    "gelu_pytorch_tanh": lambda x: F.gelu(x, approximate="tanh"),
}


@dataclass(frozen=True)
class ClipVisionConfig:
    hidden_size: int = 1024
    num_layers: int = 24
    num_heads: int = 16
    intermediate_size: int = 4096
    activation: str = "quick_gelu"
    image_size: int = 224
    patch_size: int = 14
    projection_dim: int | None = 768        # None: no visual_projection (SigLIP)
    is_siglip: bool = False
    layer_norm_eps: float = 1e-5
    image_mean: tuple[float, float, float] = CLIP_MEAN
    image_std: tuple[float, float, float] = CLIP_STD

    @property
    def num_patches(self) -> int:
        return (self.image_size // self.patch_size) ** 2

    @property
    def num_positions(self) -> int:
        return self.num_patches + (0 if self.is_siglip else 1)

    @property
    def name(self) -> str:
        """A readable name of the tower ("ViT-L/14", "ViT-H/14", "ViT-bigG/14", "SigLIP so400m/14 @384")."""
        if self.is_siglip:
            return f"SigLIP {self.hidden_size}w/{self.patch_size} @{self.image_size}"
        known = {1024: "ViT-L", 1280: "ViT-H", 1664: "ViT-bigG"}
        return f"{known.get(self.hidden_size, f'ViT-{self.hidden_size}w')}/{self.patch_size} @{self.image_size}"


class VisionAttention(nn.Module):
    def __init__(self, config: ClipVisionConfig):
        super().__init__()
        c = config.hidden_size
        self.num_heads = config.num_heads
        self.q_proj, self.k_proj, self.v_proj = nn.Linear(c, c), nn.Linear(c, c), nn.Linear(c, c)
        self.out_proj = nn.Linear(c, c)

    def forward(self, x: Tensor) -> Tensor:
        b, n, c = x.shape
        # [B, N, C] -> [B, heads, N, C/heads]
        q, k, v = (p(x).view(b, n, self.num_heads, c // self.num_heads).transpose(1, 2)
                   for p in (self.q_proj, self.k_proj, self.v_proj))
        out = F.scaled_dot_product_attention(q, k, v)                    # softmax(q k^T / sqrt(d)) v
        return self.out_proj(out.transpose(1, 2).reshape(b, n, c))


class VisionMLP(nn.Module):
    def __init__(self, config: ClipVisionConfig):
        super().__init__()
        self.fc1 = nn.Linear(config.hidden_size, config.intermediate_size)
        self.fc2 = nn.Linear(config.intermediate_size, config.hidden_size)
        self.activation = ACTIVATIONS[config.activation]

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(self.activation(self.fc1(x)))


class VisionLayer(nn.Module):
    def __init__(self, config: ClipVisionConfig):
        super().__init__()
        self.layer_norm1 = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.self_attn = VisionAttention(config)
        self.layer_norm2 = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.mlp = VisionMLP(config)

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.self_attn(self.layer_norm1(x))
        return x + self.mlp(self.layer_norm2(x))


class VisionEmbeddings(nn.Module):
    def __init__(self, config: ClipVisionConfig):
        super().__init__()
        c = config.hidden_size
        if not config.is_siglip:
            self.class_embedding = nn.Parameter(torch.empty(c))
        self.patch_embedding = nn.Conv2d(3, c, config.patch_size, stride=config.patch_size,
                                         bias=config.is_siglip)
        self.position_embedding = nn.Embedding(config.num_positions, c)

    def forward(self, pixels: Tensor) -> Tensor:
        x = self.patch_embedding(pixels).flatten(2).transpose(1, 2)        # [B, C, g, g] -> [B, g*g, C]
        if hasattr(self, "class_embedding"):
            cls = self.class_embedding.to(x.dtype).expand(x.shape[0], 1, -1)   # [B, 1, C]
            x = torch.cat([cls, x], dim=1)                                   # [B, 1 + g*g, C]
        positions = torch.arange(x.shape[1], device=x.device)
        return x + self.position_embedding(positions).to(x.dtype)


class VisionEncoder(nn.Module):
    def __init__(self, config: ClipVisionConfig):
        super().__init__()
        self.layers = nn.ModuleList(VisionLayer(config) for _ in range(config.num_layers))


class VisionTransformer(nn.Module):
    def __init__(self, config: ClipVisionConfig):
        super().__init__()
        self.embeddings = VisionEmbeddings(config)
        if not config.is_siglip:
            # the Hugging Face spelling ("layrnorm") is the file's key
            self.pre_layrnorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.encoder = VisionEncoder(config)
        self.post_layernorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)


class ClipVisionModel(nn.Module):
    """pixel values [B, 3, S, S] (normalised, see `preprocess`) -> dict of the outputs in the module notes."""

    OFFLOAD_BLOCKS = ("vision_model.encoder.layers",)
    OFFLOAD_LAYERS = True

    def __init__(self, config: ClipVisionConfig):
        super().__init__()
        self.config = config
        self.vision_model = VisionTransformer(config)
        if config.projection_dim:
            self.visual_projection = nn.Linear(config.hidden_size, config.projection_dim, bias=False)

    def forward(self, pixels: Tensor) -> dict[str, Tensor | None]:
        vm = self.vision_model
        dtype = vm.post_layernorm.weight.dtype
        x = vm.embeddings(pixels.to(dtype))                                  # [B, N, C]
        if hasattr(vm, "pre_layrnorm"):
            x = vm.pre_layrnorm(x)
        layers = vm.encoder.layers
        hidden: list[Tensor] = []
        for layer in layers:
            x = layer(x)
            hidden.append(x)
        penultimate = hidden[-2] if len(hidden) > 1 else x
        out: dict[str, Any] = {"penultimate_hidden_states": penultimate, "mm_projected": None}
        if self.config.is_siglip:
            x = vm.post_layernorm(x)                                         # every token
            out.update(last_hidden_state=x, image_embeds=x,
                       all_hidden_states=torch.stack(hidden, dim=1))         # [B, layers, N, C]
            return out
        pooled = vm.post_layernorm(x[:, 0])                                  # class token [B, C]
        embeds = self.visual_projection(pooled) if self.config.projection_dim else pooled
        out.update(last_hidden_state=x, image_embeds=embeds)
        return out


def preprocess(images: Tensor, size: int, mean=CLIP_MEAN, std=CLIP_STD, *, is_center_crop: bool = True) -> Tensor:
    """IMAGE [B, H, W, C] in 0..1 -> pixel values [B, 3, size, size], as ComfyUI's clip_preprocess does:
    extra channels dropped; unless already size x size, resized bicubic with antialiasing (centre crop:
    the short side to `size`, then the middle cut; no crop: stretched to size x size); quantised to
    1/255 steps; normalised with the tower's mean and std."""
    x = images[..., :3].movedim(-1, 1).float()                              # [B, 3, H, W]
    h, w = x.shape[-2:]
    if (h, w) != (size, size):
        if is_center_crop:
            scale = size / min(h, w)
            target = (round(scale * h), round(scale * w))
        else:
            target = (size, size)
        x = F.interpolate(x, size=target, mode="bicubic", antialias=True)
        top, left = (x.shape[-2] - size) // 2, (x.shape[-1] - size) // 2
        x = x[:, :, top:top + size, left:left + size]
    x = torch.clip(255.0 * x, 0, 255).round() / 255.0
    mean_t = torch.tensor(mean, dtype=x.dtype, device=x.device).view(3, 1, 1)
    std_t = torch.tensor(std, dtype=x.dtype, device=x.device).view(3, 1, 1)
    return (x - mean_t) / std_t


def heads_for(hidden_size: int) -> int:
    """Heads of a tower of this width: 16 for every released CLIP / SigLIP tower ComfyUI loads (L 1024,
    H 1280, bigG 1664, so400m 1152); 64-wide heads for other (test) widths."""
    if hidden_size in (1024, 1280, 1664, 1152):
        return 16
    return max(1, hidden_size // 64)



def vision_state_dict(source: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """The vision tower's tensors of a file (or checkpoint) in models/clip_vision names: OpenCLIP layouts
    (`visual.*`, `embedder.model.visual.*`) converted, Hugging Face ones filtered."""
    from models.convert.clip_vision import hf_vision_keys, open_clip_prefix, open_clip_to_hf
    prefix = open_clip_prefix(source.keys())
    if prefix is not None:
        return open_clip_to_hf(source, prefix)
    return {k: source[k] for k in hf_vision_keys(source.keys())}


def build_clip_vision(state: Mapping[str, Tensor], dtype: torch.dtype | None = None) -> ClipVisionModel:
    """A ClipVisionModel from `vision_state_dict` output: config detected from the shapes, every key and
    shape checked (models.checkpoint.build_module); dtype None keeps the stored float dtype."""
    from models.checkpoint import build_module
    from models.detection import detect_clip_vision
    config = detect_clip_vision({k: tuple(v.shape) for k, v in state.items()})
    if dtype is None:
        stored = state["vision_model.embeddings.patch_embedding.weight"].dtype
        dtype = stored if stored in (torch.float32, torch.float16, torch.bfloat16) else torch.float32
    return build_module(lambda: ClipVisionModel(config), {k: k for k in state}, state, dtype, "CLIP vision")
