"""SD3 / SD3.5 text conditioning: CLIP-L, CLIP-G and T5-XXL combined as SD3 expects, any of them absent.

What the MM-DiT is trained on (Esser et al. 2024, section 5.1 and figure 2a), as ComfyUI builds it
(comfy/text_encoders/sd3_clip.py `SD3ClipModel.encode_token_weights`; behaviour, not code):

- CLIP-L and CLIP-G give their penultimate hidden states without the final layer norm, [1, 77k, 768]
  and [1, 77k, 1280]; side by side (cut to the shorter) they are 2048 wide, zero-padded to T5's 4096.
  CLIP-G alone is padded with 768 zeros in front; an absent CLIP's pooled output is zeros.
- T5-XXL's last hidden state [1, L, 4096] follows the CLIP tokens on the token axis.
- pooled = [CLIP-L pooled (unprojected, 768), CLIP-G pooled (projected, 1280)] -> y [1, 2048].
- Nothing at all: context zeros [1, 77, 4096], pooled zeros [1, 2048].

An encoder given no tokens (CLIPTextEncodeSD3 with an empty prompt and empty_padding "none") is skipped
the same way: CLIP towers together (both empty: no CLIP part), T5 then encodes its end token alone.
Widths come from the towers present, else SD3's (768, 1280, 4096).
"""
from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import Tensor

from .bpe import END_TOKEN, START_TOKEN
from .t5 import END_TOKEN as T5_END_TOKEN

SD3_KINDS = ("clip_l", "clip_g", "t5xxl")
DEFAULT_WIDTHS = {"clip_l": 768, "clip_g": 1280, "t5xxl": 4096}

Tokens = Mapping[str, list]     # kind -> chunks of (token, weight); [] = nothing to encode for that tower


def widths(towers: Mapping[str, object]) -> dict[str, int]:
    out = dict(DEFAULT_WIDTHS)
    for kind, tower in towers.items():
        if kind in out:
            out[kind] = tower.config.pooled_dim if kind != "t5xxl" else tower.config.d_model
    return out


def tokenize(towers: Mapping[str, object], text: str, embeddings=None) -> dict[str, list]:
    """The prompt for every tower present (a tower that is absent gets [])."""
    return {kind: (towers[kind].tokenize(text, embeddings) if kind in towers else []) for kind in SD3_KINDS}


def _encode(tower, chunks: list, clip_skip: int | None, embeddings) -> tuple[Tensor, Tensor | None]:
    if not chunks:        # ComfyUI encodes an empty token list as the bare special tokens
        chunks = [[(T5_END_TOKEN, 1.0)]] if tower.kind == "t5xxl" else [[(START_TOKEN, 1.0), (END_TOKEN, 1.0)]]
    if tower.kind == "t5xxl":
        return tower.encode(chunks)
    return tower.encode(chunks, clip_skip=clip_skip, embeddings=embeddings)


def encode(towers: Mapping[str, object], tokens: Tokens, *, clip_skip: int | None = None,
           embeddings=None) -> tuple[Tensor, Tensor]:
    """-> (context [1, T, 4096], pooled [1, 2048]), float32."""
    w = widths(towers)
    context_width = w["t5xxl"]
    lg = pooled = out = None
    if tokens.get("clip_l") or tokens.get("clip_g"):
        if "clip_l" in towers:
            lg, l_pooled = _encode(towers["clip_l"], tokens.get("clip_l", []), clip_skip, embeddings)
        else:
            l_pooled = torch.zeros(1, w["clip_l"])
        if "clip_g" in towers:
            g, g_pooled = _encode(towers["clip_g"], tokens.get("clip_g", []), clip_skip, embeddings)
            if lg is not None:
                n = min(lg.shape[1], g.shape[1])
                lg = torch.cat([lg[:, :n], g[:, :n]], dim=-1)
            else:
                lg = F.pad(g, (w["clip_l"], 0))
        else:
            g_pooled = torch.zeros(1, w["clip_g"])
        if lg is not None:
            out = lg = F.pad(lg, (0, context_width - lg.shape[-1]))
        pooled = torch.cat([l_pooled.float().cpu(), g_pooled.float().cpu()], dim=-1)
    if "t5xxl" in towers:
        t5, _ = _encode(towers["t5xxl"], tokens.get("t5xxl", []), None, None)
        out = t5 if lg is None else torch.cat([lg.cpu(), t5.cpu()], dim=-2)
    if out is None:
        out = torch.zeros(1, 77, context_width)
    if pooled is None:
        pooled = torch.zeros(1, w["clip_l"] + w["clip_g"])
    return out.float().cpu(), pooled
