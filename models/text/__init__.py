"""Text encoders: CLIP ViT-L/14 (SD1.x, SDXL), OpenCLIP ViT-H/14 (SD2.x) and ViT-bigG/14 (SDXL, SD3),
with ComfyUI's prompt syntax.

The interface the checkpoint loader and the nodes use:

- `text_encoder_config_from_shapes(kind, shapes) -> ClipTextConfig` (pure; kinds "clip_l", "open_clip_h",
  "open_clip_g" (bigG in OpenCLIP layout, SDXL checkpoints), "clip_g" (bigG in HF layout, clip_g files),
  "clip_h" (ViT-H in HF layout: CLIPSave output and diffusers SD2 text encoders))
- `load_text_encoder(kind, state_dict, *, dtype=None, **behaviour) -> TextEncoder` (checkpoint prefix
  already stripped; `behaviour`: per-family overrides, e.g. `**CLIP_L_PENULTIMATE` for SDXL/SD3's CLIP-L)
- `random_text_encoder_state_dict(kind, config, *, seed=0, dtype=torch.float32)` (real layout)
- `TextEncoder.tokenize(text, embeddings=None)`, `.encode(text_or_tokens, *, clip_skip=None,
  embeddings=None) -> (cond [1, 77k, C], pooled [1, P])`, `.default_clip_skip`, `.dtype`

Models with several towers (SDXL: clip_l + bigG, SD3: + T5) hold a list of `TextEncoder`s and
concatenate their `cond` along the channel axis; nothing here assumes there is only one.

Module map: `bpe.py` tokenizer and vocabulary, `prompt.py` weights / embeddings / 77-token chunks,
`clip.py` the transformer, `convert.py` layouts and key conversion, `encoder.py` TextEncoder.
"""
from .bpe import END_TOKEN, START_TOKEN, BPETokenizer
from .clip import BEHAVIOUR_FIELDS, CLIP_L_PENULTIMATE, ClipTextConfig, ClipTextModel
from .convert import (
    KINDS,
    LAYOUTS,
    convert_state_dict,
    random_text_encoder_state_dict,
    text_encoder_config_from_shapes,
)
from .encoder import TextEncoder, load_text_encoder
from .prompt import EmbeddingLookup, TokenChunk, parse_weights, tokenize_prompt

__all__ = [
    "BEHAVIOUR_FIELDS",
    "CLIP_L_PENULTIMATE",
    "END_TOKEN",
    "KINDS",
    "LAYOUTS",
    "START_TOKEN",
    "BPETokenizer",
    "ClipTextConfig",
    "ClipTextModel",
    "EmbeddingLookup",
    "TextEncoder",
    "TokenChunk",
    "convert_state_dict",
    "load_text_encoder",
    "parse_weights",
    "random_text_encoder_state_dict",
    "text_encoder_config_from_shapes",
    "tokenize_prompt",
]
