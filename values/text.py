"""String, regular-expression and JSON helpers behind the utils/string nodes.

Regex functions take ComfyUI's three flag switches; a pattern that does not compile makes the
matching functions answer "no match" (False / ""), as the nodes do, while `regex_replace` raises
`re.error` so the bad pattern is reported.
"""
from __future__ import annotations

import json
import re
from typing import Any

CASE_MODES = ("UPPERCASE", "lowercase", "Capitalize", "Title Case")
TRIM_MODES = ("Both", "Left", "Right")
COMPARE_MODES = ("Starts With", "Ends With", "Equal")
EXTRACT_MODES = ("First Match", "All Matches", "First Group", "All Groups")


def convert_case(text: str, mode: str) -> str:
    return {"UPPERCASE": str.upper, "lowercase": str.lower, "Capitalize": str.capitalize,
            "Title Case": str.title}.get(mode, lambda s: s)(text)


def trim(text: str, mode: str) -> str:
    return {"Both": str.strip, "Left": str.lstrip, "Right": str.rstrip}.get(mode, lambda s: s)(text)


def substring(text: str, start: int, end: int) -> str:
    return text[start:end]


def contains(text: str, part: str, case_sensitive: bool) -> bool:
    return part in text if case_sensitive else part.lower() in text.lower()


def compare(a: str, b: str, mode: str, case_sensitive: bool) -> bool:
    if not case_sensitive:
        a, b = a.lower(), b.lower()
    if mode == "Starts With":
        return a.startswith(b)
    if mode == "Ends With":
        return a.endswith(b)
    if mode == "Equal":
        return a == b
    raise ValueError(f"mode must be one of {COMPARE_MODES}, not {mode!r}")


def regex_flags(case_insensitive: bool, multiline: bool, dotall: bool) -> int:
    return ((re.IGNORECASE if case_insensitive else 0) | (re.MULTILINE if multiline else 0)
            | (re.DOTALL if dotall else 0))


def regex_match(text: str, pattern: str, flags: int) -> bool:
    try:
        return re.search(pattern, text, flags) is not None
    except re.error:
        return False


def regex_extract(text: str, pattern: str, mode: str, flags: int, group_index: int) -> str:
    """The first match, all matches, group `group_index` of the first match, or that group of every
    match; several results are joined with newlines. No match (or a bad pattern) gives ""."""
    try:
        if mode == "First Match":
            found = re.search(pattern, text, flags)
            return found.group(0) if found else ""
        if mode == "All Matches":
            return "\n".join((m.group(1) or "") if m.groups() else m.group(0)
                             for m in re.finditer(pattern, text, flags))
        if mode == "First Group":
            found = re.search(pattern, text, flags)
            if found and len(found.groups()) >= group_index:
                return found.group(group_index) or ""
            return ""
        if mode == "All Groups":
            return "\n".join(m.group(group_index) or "" for m in re.finditer(pattern, text, flags)
                             if m.groups() and len(m.groups()) >= group_index)
    except re.error:
        return ""
    return ""


def regex_replace(text: str, pattern: str, replacement: str, flags: int, count: int) -> str:
    return re.sub(pattern, replacement, text, count=count, flags=flags)


def json_extract_string(text: str, key: str) -> str:
    """The value at `key` of a JSON object, as a string ("" if absent or not an object); strings as
    they are, other values as JSON."""
    try:
        data: Any = json.loads(text)
    except ValueError:
        return ""
    if not isinstance(data, dict) or key not in data or data[key] is None:
        return ""
    value = data[key]
    return value if isinstance(value, str) else json.dumps(value)
