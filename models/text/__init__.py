"""Text encoders: CLIP ViT-L/14 (SD1.x) and OpenCLIP ViT-H/14 (SD2.x), with ComfyUI's prompt syntax.

The interface the checkpoint loader and the nodes use:

- `text_encoder_config_from_shapes(kind, shapes) -> ClipTextConfig` (pure; kinds "clip_l", "open_clip_h")
- `load_text_encoder(kind, state_dict, *, dtype=None) -> TextEncoder` (checkpoint prefix already stripped)
- `random_text_encoder_state_dict(kind, config, *, seed=0, dtype=torch.float32)` (real layout)
- `TextEncoder.tokenize(text, embeddings=None)`, `.encode(text_or_tokens, *, clip_skip=None,
  embeddings=None) -> (cond [1, 77k, C], pooled [1, P])`, `.default_clip_skip`, `.dtype`

Models with several towers (SDXL: clip_l + bigG, SD3: + T5) hold a list of `TextEncoder`s and
concatenate their `cond` along the channel axis; nothing here assumes there is only one.

Module map: `bpe.py` tokenizer and vocabulary, `prompt.py` weights / embeddings / 77-token chunks,
`clip.py` the transformer, `convert.py` layouts and key conversion, `encoder.py` TextEncoder.
"""
from .bpe import END_TOKEN, START_TOKEN, BPETokenizer
from .clip import ClipTextConfig, ClipTextModel
from .convert import (
    KINDS,
    convert_state_dict,
    random_text_encoder_state_dict,
    text_encoder_config_from_shapes,
)
from .encoder import TextEncoder, load_text_encoder
from .prompt import EmbeddingLookup, TokenChunk, parse_weights, tokenize_prompt

__all__ = [
    "END_TOKEN",
    "KINDS",
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
