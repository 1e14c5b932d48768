"""Text nodes of utils/string: replace, substring, trim, compare, contains, case, regex (ComfyUI's
comfy_extras/nodes_string specs; StringConcatenate and StringLength live in `utility`). Each wraps
one function of `values.text`."""
from __future__ import annotations

from nodes.spec import Boolean, Combo, Input, Int, Output, String, node, optional
from values import text


def _text() -> String:
    return String(multiline=True)


@node("StringSubstring", category="utils/string", display_name="Substring", function="execute")
class StringSubstring:
    string = _text()
    start = Input("INT")
    end = Input("INT")
    RETURNS = ("STRING",)

    def run(self, string: str, start: int, end: int) -> tuple[str]:
        return (text.substring(string, start, end),)


@node("CaseConverter", category="utils/string", display_name="Case Converter", function="execute")
class CaseConverter:
    string = _text()
    mode = Combo(text.CASE_MODES)
    RETURNS = ("STRING",)

    def run(self, string: str, mode: str) -> tuple[str]:
        return (text.convert_case(string, mode),)


@node("StringTrim", category="utils/string", display_name="Trim", function="execute")
class StringTrim:
    string = _text()
    mode = Combo(text.TRIM_MODES)
    RETURNS = ("STRING",)

    def run(self, string: str, mode: str) -> tuple[str]:
        return (text.trim(string, mode),)


@node("StringReplace", category="utils/string", display_name="Replace", function="execute")
class StringReplace:
    string = _text()
    find = _text()
    replace = _text()
    RETURNS = ("STRING",)

    def run(self, string: str, find: str, replace: str) -> tuple[str]:
        return (string.replace(find, replace),)


@node("StringContains", category="utils/string", display_name="Contains", function="execute")
class StringContains:
    string = _text()
    substring = _text()
    case_sensitive = Boolean(True)
    RETURNS = (Output("BOOLEAN", name="contains"),)

    def run(self, string: str, substring: str, case_sensitive: bool) -> tuple[bool]:
        return (text.contains(string, substring, case_sensitive),)


@node("StringCompare", category="utils/string", display_name="Compare", function="execute")
class StringCompare:
    string_a = _text()
    string_b = _text()
    mode = Combo(text.COMPARE_MODES)
    case_sensitive = Boolean(True)
    RETURNS = ("BOOLEAN",)

    def run(self, string_a: str, string_b: str, mode: str, case_sensitive: bool) -> tuple[bool]:
        return (text.compare(string_a, string_b, mode, case_sensitive),)


@node("RegexMatch", category="utils/string", display_name="Regex Match", function="execute")
class RegexMatch:
    string = _text()
    regex_pattern = _text()
    case_insensitive = Boolean(True)
    multiline = Boolean(False)
    dotall = Boolean(False)
    RETURNS = (Output("BOOLEAN", name="matches"),)

    def run(self, string: str, regex_pattern: str, case_insensitive: bool, multiline: bool,
            dotall: bool) -> tuple[bool]:
        return (text.regex_match(string, regex_pattern, text.regex_flags(case_insensitive, multiline, dotall)),)


@node("RegexExtract", category="utils/string", display_name="Regex Extract", function="execute")
class RegexExtract:
    string = _text()
    regex_pattern = _text()
    mode = Combo(text.EXTRACT_MODES)
    case_insensitive = Boolean(True)
    multiline = Boolean(False)
    dotall = Boolean(False)
    group_index = Int(1, min=0, max=100)
    RETURNS = ("STRING",)

    def run(self, string: str, regex_pattern: str, mode: str, case_insensitive: bool, multiline: bool,
            dotall: bool, group_index: int) -> tuple[str]:
        flags = text.regex_flags(case_insensitive, multiline, dotall)
        return (text.regex_extract(string, regex_pattern, mode, flags, group_index),)


@node("RegexReplace", category="utils/string", display_name="Regex Replace", function="execute",
      description="Find and replace text using regex patterns.")
class RegexReplace:
    string = _text()
    regex_pattern = _text()
    replace = _text()
    case_insensitive = optional(Boolean(True))
    multiline = optional(Boolean(False))
    dotall = optional(Boolean(False))
    count = optional(Int(0, min=0, max=100))
    RETURNS = ("STRING",)

    def run(self, string: str, regex_pattern: str, replace: str, case_insensitive: bool = True,
            multiline: bool = False, dotall: bool = False, count: int = 0) -> tuple[str]:
        flags = text.regex_flags(case_insensitive, multiline, dotall)
        return (text.regex_replace(string, regex_pattern, replace, flags, count),)
