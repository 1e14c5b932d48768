"""values.text: each helper against Python's own string and re behaviour, ComfyUI's modes."""
from __future__ import annotations

import re

import pytest

from values import text


def test_case_trim_substring_contains_compare() -> None:
    assert [text.convert_case("hello wORLD", m) for m in text.CASE_MODES] == \
        ["HELLO WORLD", "hello world", "Hello world", "Hello World"]
    assert [text.trim("  a b \n", m) for m in text.TRIM_MODES] == ["a b", "a b \n", "  a b"]
    assert text.substring("abcdef", 1, -1) == "bcde"
    assert text.contains("Hello", "ELL", False) and not text.contains("Hello", "ELL", True)
    assert text.compare("Plexus", "plex", "Starts With", False)
    assert not text.compare("Plexus", "plex", "Starts With", True)
    assert text.compare("a.png", "PNG", "Ends With", False) and text.compare("x", "x", "Equal", True)


def test_regex_helpers() -> None:
    flags = text.regex_flags(True, False, False)
    assert flags == re.IGNORECASE
    assert text.regex_match("Seed 42", r"seed \d+", flags) and not text.regex_match("x", "(", flags)
    sample = "w=512 h=768 w=64"
    assert text.regex_extract(sample, r"w=(\d+)", "First Match", 0, 1) == "w=512"
    assert text.regex_extract(sample, r"w=(\d+)", "All Matches", 0, 1) == "512\n64"
    assert text.regex_extract(sample, r"\w=\d+", "All Matches", 0, 1) == "w=512\nh=768\nw=64"
    assert text.regex_extract(sample, r"(\w)=(\d+)", "First Group", 0, 2) == "512"
    assert text.regex_extract(sample, r"(\w)=(\d+)", "All Groups", 0, 1) == "w\nh\nw"
    assert text.regex_extract(sample, r"(\w)=(\d+)", "First Group", 0, 3) == ""
    assert text.regex_extract(sample, "(", "First Match", 0, 1) == ""
    assert text.regex_replace("a1b22", r"\d+", "#", 0, 1) == "a#b22"
    with pytest.raises(re.error):
        text.regex_replace("a", "(", "", 0, 0)


def test_json_extract_string() -> None:
    assert text.json_extract_string('{"a": "x", "b": [1, 2], "c": null}', "a") == "x"
    assert text.json_extract_string('{"a": "x", "b": [1, 2]}', "b") == "[1, 2]"
    assert text.json_extract_string('{"c": null}', "c") == "" and text.json_extract_string("nope", "a") == ""


def test_resolution_keeps_the_ratio_and_the_pixel_budget() -> None:
    from values.sizes import ASPECT_RATIOS, resolution

    assert resolution("1:1 (Square)", 1.0, 8) == (1024, 1024)
    assert resolution("16:9 (Widescreen)", 1.0, 8) == (1368, 768)   # sqrt(2^20 / 144) = 85.33 per unit
    for name, (w, h) in ASPECT_RATIOS.items():
        width, height = resolution(name, 0.5, 32)
        assert width % 32 == 0 and height % 32 == 0
        assert abs(width / height - w / h) < 0.1 and abs(width * height / 2 ** 19 - 1) < 0.1
