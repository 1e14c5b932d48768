"""`TextEncoder`: prompt text -> (cond [1, 77k, C], pooled [1, P]) for one CLIP text tower.

Weighting follows ComfyUI `ClipTokenWeightEncoder.encode_token_weights` (sd1_clip.py): if any token
of the prompt has a weight other than 1.0, an empty prompt (start, end, padding) of the same length is
encoded too, and every token j with weight w != 1 becomes

    z[j] = (z[j] - z_empty[j]) * w + z_empty[j]

(tokens with weight exactly 1.0 are left as encoded). Chunks are encoded as a batch and concatenated
along the token axis; the pooled output is the first chunk's. Outputs are float32 whatever the weights'
dtype, as in ComfyUI.

Textual inversion: `tokenize(..., embeddings=lookup)` puts the looked-up vectors into the token list;
`encode` uses them in place of token-embedding rows at exactly those positions.
"""
from __future__ import annotations

import dataclasses
import numbers
from collections.abc import Mapping

import torch
from torch import Tensor, nn

from ..errors import ModelError
from ..files import cast
from .bpe import END_TOKEN, START_TOKEN, BPETokenizer
from .clip import BEHAVIOUR_FIELDS, ClipTextConfig, ClipTextModel
from .convert import convert_state_dict, text_encoder_config_from_shapes
from .prompt import CHUNK_LENGTH, EmbeddingLookup, TokenChunk, tokenize_prompt


class TextEncoder(nn.Module):
    """One text tower plus its tokenizer settings. An nn.Module, so model management can move it."""

    OFFLOAD_BLOCKS = ("model.text_model.encoder.layers",)
    # their layers' weights are read only inside the layers' own forward: streamable layer by layer
    OFFLOAD_LAYERS = True

    def __init__(self, config: ClipTextConfig, model: ClipTextModel | None = None,
                 compute_dtype: torch.dtype | None = None):
        super().__init__()
        self.config = config
        self.model = model if model is not None else ClipTextModel(config)
        self.compute_dtype = compute_dtype          # None: the weights' dtype

    @property
    def kind(self) -> str:
        return self.config.kind

    @property
    def default_clip_skip(self) -> int:
        return self.config.default_clip_skip

    @property
    def dtype(self) -> torch.dtype:
        """What the tower computes in: `compute_dtype` when set (weights kept narrower, cast per use)."""
        return self.compute_dtype or self.model.token_embedding.weight.dtype

    @property
    def device(self) -> torch.device:
        return self.model.token_embedding.weight.device

    def tokenize(self, text: str, embeddings: EmbeddingLookup | None = None) -> list[TokenChunk]:
        """Prompt -> chunks of 77 (token, weight) pairs; see `prompt.tokenize_prompt` for the syntax."""
        return tokenize_prompt(text, BPETokenizer.default(), pad_token=self.config.pad_token, lookup=embeddings,
                               embedding_width=self.config.hidden_size)

    def empty_chunk(self) -> list[int]:
        """The empty prompt ComfyUI weights against: start, end, then padding."""
        return [START_TOKEN, END_TOKEN] + [self.config.pad_token] * (CHUNK_LENGTH - 2)

    @torch.no_grad()
    def encode(self, text_or_tokens: str | list[TokenChunk], *, clip_skip: int | None = None,
               embeddings: EmbeddingLookup | None = None) -> tuple[Tensor, Tensor]:
        """-> (cond [1, 77 * chunks, C] float32, pooled [1, P] float32).

        clip_skip: CLIPSetLastLayer's `stop_at_clip_layer` (-1 last layer, -2 penultimate, ...); None uses
        the model default (SD1 -1, SD2 -2). Values beyond the depth mean the last layer, as in ComfyUI.
        """
        chunks = self.tokenize(text_or_tokens, embeddings) if isinstance(text_or_tokens, str) else text_or_tokens
        if not chunks:
            chunks = [[(t, 1.0) for t in self.empty_chunk()]]
        skip = self.default_clip_skip if clip_skip is None else clip_skip
        if skip >= 0:
            raise ModelError(f"clip skip must be negative (-1 last layer, -2 penultimate ...), got {skip}")
        is_weighted = any(w != 1.0 for chunk in chunks for _, w in chunk)
        rows = [[t for t, _ in chunk] for chunk in chunks]
        if is_weighted:
            rows.append(self.empty_chunk()[:max(len(r) for r in rows)])
        z, pooled = self._forward(rows, skip)                       # [n, 77, C], [n, P]
        if is_weighted:
            z_empty = z[-1]                                         # [77, C]
            weights = torch.tensor([[w for _, w in chunk] for chunk in chunks], dtype=z.dtype,
                                   device=z.device).unsqueeze(-1)  # [chunks, 77, 1]
            # ComfyUI: tokens of weight exactly 1.0 keep their own encoding
            is_one = torch.tensor([[w == 1.0 for _, w in chunk] for chunk in chunks], device=z.device)
            z = z[:-1]
            z = torch.where(is_one.unsqueeze(-1), z, (z - z_empty) * weights + z_empty)
        return z.reshape(1, -1, z.shape[-1]), pooled[:1]            # [chunks, 77, C] -> [1, 77*chunks, C]

    def _forward(self, rows: list[list[int | Tensor]], clip_skip: int) -> tuple[Tensor, Tensor]:
        embedding = self.model.token_embedding
        width = self.config.hidden_size
        ids = torch.tensor([[int(t) if _is_id(t) else 0 for t in row] for row in rows], device=self.device)
        embeds = embedding(ids).to(self.dtype)                      # [n, T, C]
        end_index = torch.zeros(len(rows), dtype=torch.long)
        for r, row in enumerate(rows):
            ends = [j for j, t in enumerate(row) if _is_id(t) and int(t) == END_TOKEN]
            end_index[r] = ends[0] if ends else int(ids[r].argmax())
            for j, t in enumerate(row):
                if not _is_id(t):
                    if t.shape != (width,):
                        raise ModelError(f"an embedding vector of shape {tuple(t.shape)} was given to a "
                                         f"{self.kind} text encoder, which needs vectors of width {width}")
                    embeds[r, j] = t.to(embeds)
        hidden, pooled = self.model(embeds, end_index.to(self.device), clip_skip=clip_skip)
        return hidden.float(), pooled.float()


def _is_id(token: object) -> bool:
    return isinstance(token, numbers.Integral) or (isinstance(token, Tensor) and token.ndim == 0)


def load_text_encoder(kind: str, state_dict: Mapping[str, Tensor], *, dtype: torch.dtype | None = None,
                      **behaviour) -> TextEncoder:
    """Build a text encoder from checkpoint tensors (prefix already stripped), converting the layout and
    checking every key. dtype None keeps the checkpoint's floating dtype. Meta tensors give a meta model.
    `behaviour` overrides the kind's defaults for a model family (`BEHAVIOUR_FIELDS`: default_clip_skip,
    norm_hidden_state, pad_token), e.g. `**CLIP_L_PENULTIMATE` for SDXL's CLIP-L.

    A `dtype` wider than the stored one (an fp16 file, fp32 on the CPU) keeps the stored tensors (views of a
    mapped file stay views) and casts them per use: the same values as a cast at load time, since widening is
    exact, for the file's pages instead of twice their size in RAM (SDXL's bigG: 1.3 GiB, not 2.6)."""
    unknown = set(behaviour) - set(BEHAVIOUR_FIELDS)
    if unknown:
        raise ModelError(f"unknown text encoder behaviour {sorted(unknown)}; choose from {list(BEHAVIOUR_FIELDS)}")
    config = text_encoder_config_from_shapes(kind, {k: tuple(v.shape) for k, v in state_dict.items()})
    config = dataclasses.replace(config, **behaviour)
    params = convert_state_dict(kind, state_dict, config)
    with torch.device("meta"):
        model = ClipTextModel(config)                                # no random init: weights come next
    if dtype is None:
        dtype = params["text_model.embeddings.token_embedding.weight"].dtype
    if not dtype.is_floating_point:
        raise ModelError(f"{kind} text encoder: cannot run in {dtype}")
    stored = params["text_model.embeddings.token_embedding.weight"].dtype
    if _is_narrower(stored, dtype) and all(_is_narrower(v.dtype, dtype) or not v.is_floating_point()
                                           for v in params.values()):
        model.load_state_dict(dict(params), strict=True, assign=True)
        model.CASTS_WEIGHTS_PER_USE = True
        return TextEncoder(config, model.eval().requires_grad_(False), compute_dtype=dtype)
    model.load_state_dict({k: cast(v, dtype) for k, v in params.items()}, strict=True, assign=True)
    return TextEncoder(config, model.eval().requires_grad_(False))


def _is_narrower(stored: torch.dtype, dtype: torch.dtype) -> bool:
    """Whether `stored` floats widen to `dtype` without loss (fp16 / bf16 -> fp32)."""
    return stored in (torch.float16, torch.bfloat16) and dtype == torch.float32
