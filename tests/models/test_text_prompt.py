"""ComfyUI prompt syntax: weights, escapes, embeddings, 77-token chunks and padding."""
from __future__ import annotations

import logging

import pytest
import torch

from models.text.bpe import END_TOKEN, START_TOKEN, BPETokenizer
from models.text.prompt import parse_weights, tokenize_prompt

SD1_PAD, SD2_PAD = END_TOKEN, 0


@pytest.fixture(scope="module")
def bpe() -> BPETokenizer:
    return BPETokenizer.default()


@pytest.mark.parametrize("text, expected", [
    ("a cat", [("a cat", 1.0)]),
    ("a (cat:1.5) on a mat", [("a ", 1.0), ("cat", 1.5), (" on a mat", 1.0)]),
    ("(cat)", [("cat", 1.1)]),
    ("((cat))", [("cat", 1.1 * 1.1)]),
    ("((cat:0.5))", [("cat", 0.5)]),                                   # an explicit weight replaces
    ("(a (b:0.5) c:1.2)", [("a ", 1.2), ("b", 0.5), (" c", 1.2)]),
    ("(x (y) z:2)", [("x ", 2.0), ("y", 2.0 * 1.1), (" z", 2.0)]),       # (y) multiplies the outer 2
    ("(cat:big)", [("cat:big", 1.1)]),                                 # not a number: plain brackets
    (r"a \(cat\) (dog:1.3)", [("a (cat) ", 1.0), ("dog", 1.3)]),
    (r"(smile \(happy\):1.2)", [("smile (happy)", 1.2)]),
    ("a (b", [("a ", 1.0), ("(b", 1.0)]),                              # unbalanced: kept as text
    ("", []),
])
def test_parse_weights(text: str, expected: list[tuple[str, float]]) -> None:
    got = parse_weights(text)
    assert [s for s, _ in got] == [s for s, _ in expected]
    assert [w for _, w in got] == pytest.approx([w for _, w in expected])


def ids(chunk) -> list[int]:
    return [t for t, _ in chunk]


def test_short_prompt_is_one_padded_chunk(bpe: BPETokenizer) -> None:
    for pad in (SD1_PAD, SD2_PAD):
        (chunk,) = tokenize_prompt("a photo of a cat", bpe, pad_token=pad)
        assert ids(chunk) == [START_TOKEN, 320, 1125, 539, 320, 2368, END_TOKEN] + [pad] * 70
        assert all(w == 1.0 for _, w in chunk)


def test_empty_prompt(bpe: BPETokenizer) -> None:
    (chunk,) = tokenize_prompt("", bpe, pad_token=SD2_PAD)
    assert ids(chunk) == [START_TOKEN, END_TOKEN] + [0] * 75


def test_weights_follow_their_tokens(bpe: BPETokenizer) -> None:
    (chunk,) = tokenize_prompt("a (photo:1.3) of ((a cat))", bpe, pad_token=SD1_PAD)
    assert chunk[:7] == [(START_TOKEN, 1.0), (320, 1.0), (1125, 1.3), (539, 1.0),
                         (320, pytest.approx(1.21)), (2368, pytest.approx(1.21)), (END_TOKEN, 1.0)]


def test_long_prompt_is_split_in_chunks_of_75(bpe: BPETokenizer) -> None:
    chunks = tokenize_prompt("cat " * 100, bpe, pad_token=SD1_PAD)       # one 100-token group: split
    assert len(chunks) == 2 and all(len(c) == 77 for c in chunks)
    assert ids(chunks[0]) == [START_TOKEN] + [2368] * 75 + [END_TOKEN]
    assert ids(chunks[1]) == [START_TOKEN] + [2368] * 25 + [END_TOKEN] + [SD1_PAD] * 50


def test_a_short_group_that_does_not_fit_moves_to_the_next_chunk(bpe: BPETokenizer) -> None:
    chunks = tokenize_prompt("cat " * 73 + "(a photo of:1.2)", bpe, pad_token=SD2_PAD)
    assert ids(chunks[0]) == [START_TOKEN] + [2368] * 73 + [END_TOKEN, 0, 0]
    assert chunks[1][:5] == [(START_TOKEN, 1.0), (320, 1.2), (1125, 1.2), (539, 1.2), (END_TOKEN, 1.0)]


def test_a_long_weighted_group_is_split_at_the_boundary(bpe: BPETokenizer) -> None:
    chunks = tokenize_prompt("cat " * 73 + "(dog dog dog dog dog dog dog dog:0.8)", bpe, pad_token=SD1_PAD)
    assert ids(chunks[0])[74:] == [1929, 1929, END_TOKEN] and chunks[0][75][1] == 0.8
    assert ids(chunks[1])[:8] == [START_TOKEN] + [1929] * 6 + [END_TOKEN]


def test_embedding_vectors_take_one_slot_each(bpe: BPETokenizer) -> None:
    vectors = torch.randn(3, 16)
    looked_up: list[str] = []

    def lookup(name: str):
        looked_up.append(name)
        return vectors if name == "style" else None

    (chunk,) = tokenize_prompt("a embedding:style cat, (embedding:style:1.2)", bpe, pad_token=SD1_PAD,
                               lookup=lookup, embedding_width=16)
    tokens = ids(chunk)
    assert tokens[:2] == [START_TOKEN, 320] and tokens[5:7] == [2368, 267]
    assert all(torch.equal(tokens[2 + i], vectors[i]) for i in range(3))
    assert all(torch.equal(tokens[7 + i], vectors[i]) and chunk[7 + i][1] == 1.2 for i in range(3))
    assert tokens[10] == END_TOKEN and looked_up == ["style", "style"]


def test_a_trailing_comma_is_not_part_of_the_name(bpe: BPETokenizer) -> None:
    vectors = torch.randn(2, 16)
    (chunk,) = tokenize_prompt("embedding:style, cat", bpe, pad_token=SD1_PAD,
                               lookup=lambda n: vectors if n == "style" else None)
    tokens = ids(chunk)
    assert torch.equal(tokens[1], vectors[0]) and torch.equal(tokens[2], vectors[1])
    assert tokens[3:6] == [267, 2368, END_TOKEN]


def test_a_missing_embedding_warns_by_name_and_is_dropped(bpe: BPETokenizer, caplog) -> None:
    with caplog.at_level(logging.WARNING):
        (chunk,) = tokenize_prompt("a embedding:nowhere cat", bpe, pad_token=SD1_PAD, lookup=lambda n: None)
    assert "nowhere" in caplog.text
    assert ids(chunk)[:4] == [START_TOKEN, 320, 2368, END_TOKEN]


def test_an_embedding_of_the_wrong_width_warns_and_is_dropped(bpe: BPETokenizer, caplog) -> None:
    with caplog.at_level(logging.WARNING):
        (chunk,) = tokenize_prompt("embedding:sd2only cat", bpe, pad_token=SD1_PAD,
                                   lookup=lambda n: torch.zeros(2, 1024), embedding_width=768)
    assert "sd2only" in caplog.text and "768" in caplog.text
    assert ids(chunk)[:3] == [START_TOKEN, 2368, END_TOKEN]


def test_without_a_lookup_embedding_names_are_plain_text(bpe: BPETokenizer) -> None:
    (chunk,) = tokenize_prompt("embedding:cat", bpe, pad_token=SD1_PAD)
    assert ids(chunk)[1:-1][:4] == bpe.encode("embedding:cat")[:4]
