"""GLIGEN: grounded (box-conditioned) generation by gated self-attention inserted in a frozen SD1.x UNet.

Li et al. 2023, "GLIGEN: Open-Set Grounded Text-to-Image Generation" (arXiv:2301.07093):
- sec. 3.2 / eq. 5: each grounding entity is a token h_e = MLP([text embedding, Fourier(box)]), with
  learned "null" features in place of the padding slots (max 30 entities);
- eq. 8: in every transformer block, between self- and cross-attention,
      v = v + tanh(gamma_attn) * TS(SelfAttn([v, h_e]))       (TS: keep the visual tokens)
      v = v + tanh(gamma_dense) * FF(v)
  with the entity tokens first projected to the visual width (`linear`).

File layout (the released gligen_sd14_textbox files, as ComfyUI's GLIGENLoader reads them, comfy/gligen.py):
`<unet block path>.fuser.{linear, attn.to_q/to_k/to_v/to_out.0, ff.net.0.proj, ff.net.2, norm1, norm2,
alpha_attn, alpha_dense}` for every transformer block (input blocks, middle, output blocks, in the UNet's
order) and `position_net.{linears.0/2/4, null_positive_feature, null_position_feature}`. Heads: 8 when the
entity width is 768 (SD1.x), else 64-wide (ComfyUI's rule). Boxes are (x1, y1, x2, y2) in 0..1 of the latent.

Shapes: B batch, N visual tokens, E = 30 entity slots, D entity width (768), Q visual width.
"""
from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from models.attention import DEFAULT_ATTENTION, attention_backend
from models.unet import CrossAttention, FeedForward

MAX_ENTITIES = 30
FOURIER_FREQUENCIES = 8                 # sin and cos of 8 frequencies of each of the 4 box coordinates: 64
FOURIER_TEMPERATURE = 100.0
FUSER_PATTERN = re.compile(r"(?:.*?\.)?((?:input_blocks\.\d+|middle_block|output_blocks\.\d+)\.\d+"
                           r"\.transformer_blocks\.\d+)\.fuser\.(.+)")
_BLOCK_ORDER = re.compile(r"(input_blocks|middle_block|output_blocks)\.?(\d*)\.(\d+)\.transformer_blocks\.(\d+)")


@dataclass(frozen=True)
class GligenConfig:
    fuser_widths: tuple[int, ...]        # visual width Q of each gated block, in UNet transformer order
    entity_width: int = 768              # D: the position net's output, each fuser's `linear` input
    text_width: int = 768                # the pooled text embedding width the position net takes
    hidden_width: int = 512

    def heads(self, width: int) -> tuple[int, int]:
        if self.entity_width == 768:
            return 8, width // 8
        return width // 64, 64


def fourier_features(boxes: Tensor) -> Tensor:
    """[..., 4] -> [..., 64]: sin / cos of each coordinate at frequencies 100^(k/8), interleaved per frequency
    (sin f0 of the 4 coordinates, cos f0, sin f1, ...; GLIGEN's FourierEmbedder)."""
    freqs = FOURIER_TEMPERATURE ** (torch.arange(FOURIER_FREQUENCIES, dtype=torch.float32) / FOURIER_FREQUENCIES)
    parts = []
    for f in freqs.tolist():
        parts += [torch.sin(f * boxes), torch.cos(f * boxes)]
    return torch.cat(parts, dim=-1)


class PositionNet(nn.Module):
    """(boxes [B, E, 4], masks [B, E], text embeddings [B, E, text]) -> entity tokens [B, E, D] (eq. 5)."""

    def __init__(self, config: GligenConfig):
        super().__init__()
        position_dim = FOURIER_FREQUENCIES * 2 * 4
        self.linears = nn.Sequential(nn.Linear(config.text_width + position_dim, config.hidden_width), nn.SiLU(),
                                     nn.Linear(config.hidden_width, config.hidden_width), nn.SiLU(),
                                     nn.Linear(config.hidden_width, config.entity_width))
        self.null_positive_feature = nn.Parameter(torch.zeros(config.text_width))
        self.null_position_feature = nn.Parameter(torch.zeros(position_dim))

    def forward(self, boxes: Tensor, masks: Tensor, embeddings: Tensor) -> Tensor:
        dtype = self.linears[0].weight.dtype
        masks = masks.unsqueeze(-1).to(dtype)                                  # [B, E, 1]
        xyxy = fourier_features(boxes.float()).to(dtype)                       # [B, E, 64]
        embeddings = embeddings.to(dtype) * masks + (1 - masks) * self.null_positive_feature.view(1, 1, -1)
        xyxy = xyxy * masks + (1 - masks) * self.null_position_feature.view(1, 1, -1)
        return self.linears(torch.cat([embeddings, xyxy], dim=-1))


class GatedSelfAttention(nn.Module):
    """The `fuser` of one transformer block (eq. 8)."""

    def __init__(self, width: int, config: GligenConfig, attention: str = DEFAULT_ATTENTION):
        super().__init__()
        heads, head_dim = config.heads(width)
        self.linear = nn.Linear(config.entity_width, width)
        self.attn = CrossAttention(width, width, heads, head_dim, False, attention_backend(attention))
        self.ff = FeedForward(width)
        self.norm1, self.norm2 = nn.LayerNorm(width), nn.LayerNorm(width)
        self.alpha_attn = nn.Parameter(torch.zeros(()))
        self.alpha_dense = nn.Parameter(torch.zeros(()))

    def forward(self, x: Tensor, entities: Tensor) -> Tensor:
        n = x.shape[1]
        tokens = torch.cat([x, self.linear(entities.to(x.dtype))], dim=1)         # [B, N + E, Q]
        x = x + torch.tanh(self.alpha_attn) * self.attn(self.norm1(tokens))[:, :n]
        return x + torch.tanh(self.alpha_dense) * self.ff(self.norm2(x))


class Gligen(nn.Module):
    """Position net + one gated block per UNet transformer block (`fusers[i]` for transformer_index i)."""

    def __init__(self, config: GligenConfig, attention: str = DEFAULT_ATTENTION):
        super().__init__()
        self.config = config
        self.position_net = PositionNet(config)
        self.fusers = nn.ModuleList(GatedSelfAttention(w, config, attention) for w in config.fuser_widths)

    def entities(self, boxes: Sequence[tuple[float, float, float, float]], embeddings: Sequence[Tensor],
                 batch: int) -> Tensor:
        """Entity tokens [batch, 30, D] for these boxes (x1, y1, x2, y2 in 0..1) and their pooled text
        embeddings ([1, text] each); no boxes: every slot null (ComfyUI's set_empty)."""
        if len(boxes) > MAX_ENTITIES:
            raise ValueError(f"GLIGEN takes at most {MAX_ENTITIES} boxes, got {len(boxes)}")
        device = self.position_net.null_positive_feature.device
        box_t = torch.zeros(MAX_ENTITIES, 4)
        masks = torch.zeros(MAX_ENTITIES)
        text = torch.zeros(MAX_ENTITIES, self.config.text_width)
        for i, (box, embedding) in enumerate(zip(boxes, embeddings)):
            box_t[i] = torch.tensor(box)
            masks[i] = 1.0
            text[i] = embedding.reshape(-1).float()
        repeat = (lambda t: t.unsqueeze(0).expand(batch, *t.shape).to(device))
        return self.position_net(repeat(box_t), repeat(masks), repeat(text))


def fuser_key_map(keys, ordered_blocks: Sequence[str]) -> dict[str, str]:
    """{module key: file key}: `fusers.<i>.<name>` <- `<prefix><block i>.fuser.<name>`, position_net kept."""
    index = {block: i for i, block in enumerate(ordered_blocks)}
    out = {}
    for key in keys:
        if m := FUSER_PATTERN.fullmatch(key):
            out[f"fusers.{index[m.group(1)]}.{m.group(2)}"] = key
        elif ".position_net." in f".{key}":
            out[key[key.index("position_net."):]] = key
    return out


def gligen_blocks(shapes: Mapping[str, tuple[int, ...]]) -> list[str]:
    """The transformer-block paths that have a fuser, in the UNet's order (input, middle, output blocks)."""
    order = {"input_blocks": 0, "middle_block": 1, "output_blocks": 2}
    blocks = {m.group(1) for k in shapes if (m := FUSER_PATTERN.fullmatch(k))}

    def sort_key(block: str):
        kind, number, layer, index = _BLOCK_ORDER.fullmatch(block).groups()
        return order[kind], int(number or 0), int(layer), int(index)
    return sorted(blocks, key=sort_key)
