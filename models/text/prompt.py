"""ComfyUI prompt syntax -> 77-token chunks of (token, weight) pairs.

Follows ComfyUI `comfy/sd1_clip.py` (`parse_parentheses`, `token_weights`, `escape_important`,
`SDTokenizer.tokenize_with_weights`, read for behaviour only):
- `(text)` multiplies the weight by 1.1, nested: `((text))` is 1.21.
- `(text:1.3)` sets the weight to 1.3 (it replaces the outer weight, it does not multiply it); the
  number follows the last `:` inside the brackets. If it is not a number the brackets count as `(text)`.
- `\\(` and `\\)` are literal brackets.
- `embedding:name` (at the start of a segment or after a space/newline) is looked up through the
  `lookup` callable; its vectors take one slot each. A missing one is logged as a warning and dropped;
  with no lookup at all the words stay plain text. A trailing `,` on the name is tried off as well.
- Each weighted segment (and each embedding) is one group. Chunks hold 75 tokens between the start
  and end tokens; a group that does not fit in the current chunk moves whole to the next one unless it
  is 8 tokens or longer, in which case it is split at the boundary. Chunks are padded to 77.
"""
from __future__ import annotations

import logging
import re
from collections.abc import Callable

from torch import Tensor

from .bpe import END_TOKEN, START_TOKEN, BPETokenizer

log = logging.getLogger(__name__)

Token = int | Tensor                 # a vocabulary id, or one embedding vector [C]
TokenChunk = list[tuple[Token, float]]     # exactly 77 (token, weight) pairs
EmbeddingLookup = Callable[[str], Tensor | None]   # name -> [n, C] or [C] vectors, None if unknown

CHUNK_LENGTH = 77
MAX_UNSPLIT_GROUP = 8        # groups this long or longer may be split across chunks
EMBEDDING_PREFIX = "embedding:"
_ESCAPED_CLOSE, _ESCAPED_OPEN = "\0\1", "\0\2"


def split_brackets(text: str) -> list[str]:
    """Top-level pieces: plain runs and whole `( ... )` groups (unbalanced brackets stay as text)."""
    pieces: list[str] = []
    current, depth = "", 0
    for char in text:
        if char == "(":
            if depth == 0 and current:
                pieces.append(current)
                current = ""
            current += char
            depth += 1
        elif char == ")":
            depth -= 1
            if depth == 0:
                pieces.append(current + ")")
                current = ""
            else:
                current += char
        else:
            current += char
    if current:
        pieces.append(current)
    return pieces


def parse_weights(text: str, weight: float = 1.0) -> list[tuple[str, float]]:
    """`"a (b:1.5) ((c))"` -> `[("a ", 1.0), ("b", 1.5), ("c", 1.21)]`. Escaped brackets are literal."""
    escaped = text.replace("\\)", _ESCAPED_CLOSE).replace("\\(", _ESCAPED_OPEN)
    return [(_unescape(piece), w) for piece, w in _parse_escaped(escaped, weight)]


def _parse_escaped(text: str, outer: float) -> list[tuple[str, float]]:
    out: list[tuple[str, float]] = []
    for piece in split_brackets(text):
        if len(piece) >= 2 and piece[0] == "(" and piece[-1] == ")":
            inner, weight = piece[1:-1], outer * 1.1
            colon = inner.rfind(":")
            if colon > 0:
                try:
                    weight = float(inner[colon + 1:])
                    inner = inner[:colon]
                except ValueError:
                    pass
            out += _parse_escaped(inner, weight)
        else:
            out.append((piece, outer))
    return out


def _unescape(text: str) -> str:
    return text.replace(_ESCAPED_CLOSE, ")").replace(_ESCAPED_OPEN, "(")


def tokenize_prompt(text: str, bpe: BPETokenizer, *, pad_token: int, lookup: EmbeddingLookup | None = None,
                    embedding_width: int | None = None) -> list[TokenChunk]:
    """A prompt -> one or more chunks of 77 (token, weight) pairs: start, 75 tokens, end, padding.

    `embedding_width`, when given, drops (with a warning) embeddings whose vectors have another width.
    """
    groups: list[list[tuple[Token, float]]] = []
    for segment, weight in parse_weights(text):
        for piece in _split_embedding_names(segment):
            if piece.startswith(EMBEDDING_PREFIX) and lookup is not None:
                vectors, piece = _resolve_embedding(piece[len(EMBEDDING_PREFIX):].strip("\n"), lookup,
                                                    embedding_width)
                if vectors is not None:
                    groups.append([(v, weight) for v in vectors])
                if not piece:
                    continue
            groups.append([(t, weight) for t in bpe.encode(piece)])
    return _pack_chunks(groups, pad_token)


def _split_embedding_names(segment: str) -> list[str]:
    """`"a embedding:x b"` -> `["a", "embedding:x b"]` (split before ` embedding:` and `\\nembedding:`)."""
    parts = re.split(f" {EMBEDDING_PREFIX}|\n{EMBEDDING_PREFIX}", segment)
    pieces = [parts[0]] + [EMBEDDING_PREFIX + p for p in parts[1:]]
    return [p for p in pieces if p]


def _resolve_embedding(text: str, lookup: EmbeddingLookup,
                       width: int | None) -> tuple[list[Tensor] | None, str]:
    """(vectors or None, text left over after the name)."""
    words = text.split()
    name, leftover = (words[0], " ".join(words[1:])) if words else ("", "")
    vectors = lookup(name) if name else None
    if vectors is None and name.strip(",") != name:
        stripped = name.strip(",")
        vectors = lookup(stripped) if stripped else None
        leftover = f"{name[len(stripped):]} {leftover}"
        name = stripped
    if vectors is None:
        log.warning("embedding:%s does not exist, ignoring it", name)
        return None, leftover
    if vectors.ndim == 1:
        vectors = vectors.unsqueeze(0)                      # [C] -> [1, C]
    if vectors.ndim != 2 or (width is not None and vectors.shape[-1] != width):
        log.warning("embedding:%s has vectors of shape %s but this text encoder needs width %s; ignoring it",
                    name, tuple(vectors.shape), width)
        return None, leftover
    return list(vectors), leftover


def _pack_chunks(groups: list[list[tuple[Token, float]]], pad_token: int) -> list[TokenChunk]:
    body = CHUNK_LENGTH - 2
    chunks: list[TokenChunk] = []
    chunk: TokenChunk = [(START_TOKEN, 1.0)]

    def close(chunk: TokenChunk) -> None:
        chunk.append((END_TOKEN, 1.0))
        chunk.extend([(pad_token, 1.0)] * (CHUNK_LENGTH - len(chunk)))
        chunks.append(chunk)

    for group in groups:
        may_split = len(group) >= MAX_UNSPLIT_GROUP
        while group:
            room = body + 1 - len(chunk)
            if len(group) <= room:
                chunk.extend(group)
                break
            if may_split:
                chunk.extend(group[:room])
                group = group[room:]
            close(chunk)
            chunk = [(START_TOKEN, 1.0)]
    close(chunk)
    return chunks
