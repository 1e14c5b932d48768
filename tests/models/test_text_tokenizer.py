"""The CLIP BPE tokenizer: known token ids, the shipped vocabulary, and agreement with transformers."""
from __future__ import annotations

import gzip
import hashlib
import json
from pathlib import Path

import pytest

from models.text.bpe import END_TOKEN, START_TOKEN, VOCAB_PATH, BPETokenizer, bytes_to_unicode, clean_text

# open-clip-torch 3.3.0 `open_clip/bpe_simple_vocab_16e6.txt.gz` (same file as OpenAI CLIP's)
VOCAB_SHA256 = "924691ac288e54409236115652ad4aa250f48203de50a9e4722a6ecd48d6804a"


@pytest.fixture(scope="module")
def bpe() -> BPETokenizer:
    return BPETokenizer.default()


def test_the_vocabulary_file_is_shipped_unchanged() -> None:
    assert hashlib.sha256(VOCAB_PATH.read_bytes()).hexdigest() == VOCAB_SHA256


def test_vocabulary_size_and_special_tokens(bpe: BPETokenizer) -> None:
    assert bpe.vocab_size == 49408
    assert bpe.encoder["<|startoftext|>"] == START_TOKEN == 49406
    assert bpe.encoder["<|endoftext|>"] == END_TOKEN == 49407
    assert bpe.encoder["!"] == 0 and bpe.encoder["a</w>"] == 320     # printable bytes first, then </w> copies


@pytest.mark.parametrize("text, ids", [
    # ids as published for OpenAI CLIP (e.g. the transformers CLIPTokenizer docs and model cards)
    ("a photo of a cat", [320, 1125, 539, 320, 2368]),
    ("a photo of a dog", [320, 1125, 539, 320, 1929]),
    ("hello world", [3306, 1002]),
    ("A  Photo\nOF a CAT", [320, 1125, 539, 320, 2368]),               # lower case, whitespace collapsed
    ("masterpiece, best quality", [12066, 267, 949, 3027]),
    ("<|endoftext|>", [49407]),
])
def test_known_token_ids(bpe: BPETokenizer, text: str, ids: list[int]) -> None:
    assert bpe.encode(text) == ids


def test_digits_are_single_tokens_and_decode_round_trips(bpe: BPETokenizer) -> None:
    ids = bpe.encode("1234 café, naïve 日本 😀")
    assert bpe.encode("1234") == [bpe.encoder[c + "</w>"] for c in "1234"]      # \p{N} matches one digit
    assert bpe.decode(ids).replace(" ", "") == "1234café,naïve日本😀"


def test_byte_table_is_a_bijection() -> None:
    table = bytes_to_unicode()
    assert sorted(table) == list(range(256)) and len(set(table.values())) == 256


def test_clean_text() -> None:
    assert clean_text("  Two\t\nLINES  ") == "two lines"


PROMPTS = [
    "a photo of a cat", "masterpiece, best quality, 1girl, (red hair), looking at viewer!!",
    "Ünïcödé café résumé naïve", "don't stop believin' it's 4:30pm", "emoji 😀🎉 and symbols @#$%^&*",
    "CamelCase snake_case kebab-case 3.14159 1e-5", "日本語のテキスト 中文 한국어", "tabs\tand\nnewlines   here",
]


def test_agrees_with_transformers_clip_tokenizer(bpe: BPETokenizer, tmp_path: Path) -> None:
    """transformers' CLIPTokenizer over vocab/merges files written from the same shipped vocabulary."""
    import transformers as transformers
    lines = gzip.decompress(VOCAB_PATH.read_bytes()).decode("utf-8").split("\n")
    (tmp_path / "merges.txt").write_text("#version: 0.2\n" + "\n".join(lines[1:49152 - 256 - 2 + 1]) + "\n",
                                         encoding="utf-8")
    (tmp_path / "vocab.json").write_text(json.dumps(bpe.encoder), encoding="utf-8")
    reference = transformers.CLIPTokenizer(str(tmp_path / "vocab.json"), str(tmp_path / "merges.txt"))
    for text in PROMPTS:
        expected = reference(text)["input_ids"]
        assert expected[0] == START_TOKEN and expected[-1] == END_TOKEN
        assert bpe.encode(text) == expected[1:-1], text


def test_importing_reads_nothing() -> None:
    """No work at import time: the vocabulary and the regex are built on first use."""
    import subprocess
    import sys
    code = ("import models.text, models.text.bpe as b; "
            "print(b._default_tokenizer.cache_info().currsize, b.word_pattern.cache_info().currsize)")
    out = subprocess.run([sys.executable, "-c", code], cwd=Path(__file__).resolve().parents[2],
                         capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["0", "0"]


def test_shipped_word_classes_equal_a_fresh_unicode_scan(tmp_path: Path) -> None:
    """models/data/clip_word_classes.json is what `build_word_classes` computes; `word_classes` scans
    instead when the file's Unicode version is not this Python's (or the file is missing)."""
    from models.text.bpe import WORD_CLASSES_PATH, build_word_classes, word_classes
    fresh = build_word_classes()
    expected = (fresh["letters"], fresh["numbers"])
    stored = json.loads(WORD_CLASSES_PATH.read_text(encoding="utf-8"))
    if stored["unidata_version"] == fresh["unidata_version"]:   # else word_classes() scans (refresh the file
        assert (stored["letters"], stored["numbers"]) == \
            tuple([list(r) for r in ranges] for ranges in expected)  # with models.text.bpe.write_word_classes())
    assert word_classes() == expected
    stale = tmp_path / "stale.json"
    stale.write_text(json.dumps({"unidata_version": "0.0", "letters": [[65, 65]], "numbers": []}), encoding="utf-8")
    assert word_classes(stale) == word_classes(tmp_path / "missing.json") == expected
