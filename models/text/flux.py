"""FLUX.1 text conditioning (ComfyUI comfy/text_encoders/flux.py FluxClipModel; behaviour, not code):
the context is T5-XXL's last hidden state [1, L, 4096] of the prompt padded to at least 256 tokens;
the vector is CLIP-L's pooled output [1, 768] (its hidden states are not used). An absent tower gives
zeros in its place."""
from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor

from .t5 import tokenize_t5

T5_MIN_LENGTH = 256
FLUX_KINDS = ("clip_l", "t5xxl")


def encode(towers: Mapping[str, object], clip_l_text: str, t5_text: str, *, embeddings=None) -> tuple[Tensor, Tensor]:
    """-> (context [1, L, 4096], pooled [1, 768]), float32 on the CPU."""
    if "clip_l" in towers:
        tower = towers["clip_l"]
        _, pooled = tower.encode(tower.tokenize(clip_l_text, embeddings), embeddings=embeddings)
        pooled = pooled.float().cpu()
    else:
        pooled = torch.zeros(1, 768)
    if "t5xxl" in towers:
        context, _ = towers["t5xxl"].encode([tokenize_t5(t5_text, T5_MIN_LENGTH)])
        context = context.float().cpu()
    else:
        context = torch.zeros(1, T5_MIN_LENGTH, 4096)
    return context, pooled
