"""The CLIP byte-level BPE tokenizer (Radford et al. 2021, "Learning Transferable Visual Models From
Natural Language Supervision", section 2.4: a lower-cased byte pair encoding with a 49,152 vocab).

Facts this follows (checked against OpenAI's `clip/simple_tokenizer.py`, open_clip's `tokenizer.py`
and transformers' CLIPTokenizer):
- The vocabulary is built, not stored: the 256 byte symbols, the same 256 with the end-of-word
  marker `</w>`, one symbol per merge (the first 49152 - 256 - 2 = 48,894 merge lines of
  `bpe_simple_vocab_16e6.txt.gz`, after its header line), then `<|startoftext|>` = 49406 and
  `<|endoftext|>` = 49407; 49,408 ids in all.
- Text is cleaned before splitting: Unicode NFC, runs of whitespace become one space, stripped, lower
  case. ftfy's mojibake repair is optional upstream and left out here.
- Words come from the regex `<|startoftext|>|<|endoftext|>|'s|'t|'re|'ve|'m|'ll|'d|[\\p{L}]+|[\\p{N}]|
  [^\\s\\p{L}\\p{N}]+`. The stdlib `re` has no `\\p{...}`, so the letter and number classes are built
  from `unicodedata` categories (L* and N*), which is exactly what `\\p{L}` and `\\p{N}` mean. Scanning
  all 1.1M code points takes about 0.4 s, so the ranges are shipped precomputed in
  `models/data/clip_word_classes.json` (written by `write_word_classes`, checked by a test) and used
  when its Unicode version is the running Python's; otherwise they are scanned.
- Each word's UTF-8 bytes are mapped to printable symbols (`bytes_to_unicode`), `</w>` is glued to
  the last symbol, and the lowest-ranked adjacent pair is merged until no ranked pair is left.

Nothing is loaded at import time; the vocabulary file is read on first use and cached. The garbage
collector is paused while the tables are built: in a process that has imported torch, its collections
over ~100,000 new tuples cost more than the parsing itself.
"""
from __future__ import annotations

import gc
import gzip
import json
import re
import sys
import unicodedata
from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path

VOCAB_PATH = Path(__file__).resolve().parent.parent / "data" / "bpe_simple_vocab_16e6.txt.gz"
WORD_CLASSES_PATH = VOCAB_PATH.with_name("clip_word_classes.json")
START_TOKEN = 49406           # <|startoftext|>
END_TOKEN = 49407             # <|endoftext|>
VOCAB_SIZE = 49408
_MERGE_COUNT = 49152 - 256 - 2
_CACHE_WORDS = 100_000


@lru_cache(maxsize=1)
def bytes_to_unicode() -> dict[int, str]:
    """Byte value -> a printable symbol: printable Latin-1 bytes map to themselves, the other 68 bytes
    (controls, space, soft hyphen...) to code points from 256 upward, in byte order. The dict order
    (printable bytes first, then the others) is the order of the first 256 vocabulary ids."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    table = {b: chr(b) for b in printable}
    extra = 0
    for b in range(256):
        if b not in table:
            table[b] = chr(256 + extra)
            extra += 1
    return table


Ranges = tuple[tuple[int, int], ...]    # inclusive code point ranges


def _ranges_of_categories(prefix: str) -> Ranges:
    """Every code point whose Unicode category starts with `prefix`, as sorted inclusive ranges."""
    ranges: list[tuple[int, int]] = []
    for cp in range(sys.maxunicode + 1):
        if unicodedata.category(chr(cp)).startswith(prefix):
            if ranges and ranges[-1][1] == cp - 1:
                ranges[-1] = (ranges[-1][0], cp)
            else:
                ranges.append((cp, cp))
    return tuple(ranges)


def build_word_classes() -> dict:
    """The letter (L*) and number (N*) ranges of the running Python's `unicodedata` (about 0.4 s)."""
    return {"unidata_version": unicodedata.unidata_version,
            "letters": _ranges_of_categories("L"), "numbers": _ranges_of_categories("N")}


def write_word_classes(path: str | Path = WORD_CLASSES_PATH) -> None:
    """Regenerate the shipped ranges (after a Python upgrade changes `unicodedata.unidata_version`)."""
    Path(path).write_text(json.dumps(build_word_classes(), separators=(",", ":")) + "\n", encoding="utf-8")


def word_classes(path: str | Path = WORD_CLASSES_PATH) -> tuple[Ranges, Ranges]:
    """(letters, numbers): the shipped ranges when they were made with this Unicode version, else scanned."""
    try:
        stored = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        stored = {}
    if stored.get("unidata_version") != unicodedata.unidata_version:
        stored = build_word_classes()
    return (tuple((a, b) for a, b in stored["letters"]), tuple((a, b) for a, b in stored["numbers"]))


def _class_body(ranges: Ranges) -> str:
    """A regex character class body (without the brackets) matching the code points in `ranges`."""
    return "".join(re.escape(chr(a)) if a == b else f"{re.escape(chr(a))}-{re.escape(chr(b))}" for a, b in ranges)


@lru_cache(maxsize=1)
def word_pattern() -> re.Pattern[str]:
    """CLIP's pre-tokenizer regex with \\p{L} and \\p{N} spelled out for the stdlib `re`."""
    letter_ranges, number_ranges = word_classes()
    letters, numbers = _class_body(letter_ranges), _class_body(number_ranges)
    return re.compile(
        r"<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d"
        rf"|[{letters}]+|[{numbers}]|[^\s{letters}{numbers}]+",
        re.IGNORECASE,
    )


@contextmanager
def _gc_paused() -> Iterator[None]:
    """No garbage collection inside (table building allocates many objects and no cycles)."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def clean_text(text: str) -> str:
    """NFC, whitespace runs -> one space, strip, lower case."""
    return " ".join(unicodedata.normalize("NFC", text).split()).lower()


class BPETokenizer:
    """Text -> CLIP token ids (without the start and end tokens). Build with `BPETokenizer.default()`."""

    def __init__(self, merges: list[tuple[str, str]]):
        symbols = list(bytes_to_unicode().values())
        vocab = symbols + [s + "</w>" for s in symbols] + ["".join(m) for m in merges]
        vocab += ["<|startoftext|>", "<|endoftext|>"]
        self.encoder: dict[str, int] = {s: i for i, s in enumerate(vocab)}
        self.decoder: dict[int, str] = {i: s for s, i in self.encoder.items()}
        self.ranks: dict[tuple[str, str], int] = {m: i for i, m in enumerate(merges)}
        self._byte_symbols = bytes_to_unicode()
        self._cache: dict[str, list[int]] = {"<|startoftext|>": [START_TOKEN], "<|endoftext|>": [END_TOKEN]}

    @classmethod
    def from_file(cls, path: str | Path) -> BPETokenizer:
        # line 0 is a version header; the file holds ~262,000 merges, of which CLIP uses the first 48,894
        lines = gzip.decompress(Path(path).read_bytes()).decode("utf-8").split("\n", _MERGE_COUNT + 1)
        with _gc_paused():
            merges = [line.split() for line in lines[1:_MERGE_COUNT + 1]]
            return cls([(a, b) for a, b in merges])

    @classmethod
    def default(cls) -> BPETokenizer:
        """The shared tokenizer over the vocabulary shipped in models/data (read once, on first use)."""
        return _default_tokenizer()

    @property
    def vocab_size(self) -> int:
        return len(self.encoder)

    def encode(self, text: str) -> list[int]:
        """Token ids of `text`, no start/end tokens: clean, split into words, BPE each word."""
        ids: list[int] = []
        for word in word_pattern().findall(clean_text(text)):
            ids += self._encode_word(word)
        return ids

    def decode(self, ids: list[int]) -> str:
        """Ids -> text, words separated by spaces (special tokens included verbatim)."""
        inverse = {s: b for b, s in self._byte_symbols.items()}
        text = "".join(self.decoder[i] for i in ids).replace("</w>", " ")
        raw = bytearray()
        for c in text:
            raw += bytes([inverse[c]]) if c in inverse else c.encode("utf-8")
        return raw.decode("utf-8", errors="replace").strip()

    def _encode_word(self, word: str) -> list[int]:
        if word in self._cache:
            return self._cache[word]
        symbols = [self._byte_symbols[b] for b in word.encode("utf-8")]
        parts = symbols[:-1] + [symbols[-1] + "</w>"]
        while len(parts) > 1:
            # merge the adjacent pair with the lowest rank (the earliest-learned merge), everywhere it occurs
            pairs = {(parts[i], parts[i + 1]) for i in range(len(parts) - 1)}
            best = min(pairs, key=lambda p: self.ranks.get(p, len(self.ranks)))
            if best not in self.ranks:
                break
            merged: list[str] = []
            i = 0
            while i < len(parts):
                if i < len(parts) - 1 and (parts[i], parts[i + 1]) == best:
                    merged.append(parts[i] + parts[i + 1])
                    i += 2
                else:
                    merged.append(parts[i])
                    i += 1
            parts = merged
        ids = [self.encoder[p] for p in parts]
        if len(self._cache) > _CACHE_WORDS:          # a long-running server sees unbounded prompt text
            self._cache = {w: i for w, i in self._cache.items() if w.startswith("<|")}
        self._cache[word] = ids
        return ids


@lru_cache(maxsize=1)
def _default_tokenizer() -> BPETokenizer:
    return BPETokenizer.from_file(VOCAB_PATH)
