"""Pure-Python utility nodes: ComfyUI's primitives (``utils/primitive``), two string nodes and
"Preview as Text". Names, categories, display names and widget specs are ComfyUI's."""
from __future__ import annotations

import json
import sys
from typing import Any

from nodes.spec import Boolean, Float, Input, Int, Output, String, node

# ComfyUI's primitive number widgets span the whole signed 64-bit range.
INT_LIMIT = sys.maxsize


@node("PrimitiveInt", category="utils/primitive", display_name="Int")
class PrimitiveInt:
    value = Int(min=-INT_LIMIT, max=INT_LIMIT, control_after_generate=True)
    RETURNS = (Output("INT"),)

    def run(self, value: int) -> tuple[int]:
        return (value,)


@node("PrimitiveFloat", category="utils/primitive", display_name="Float")
class PrimitiveFloat:
    value = Float(min=-INT_LIMIT, max=INT_LIMIT, step=0.1)
    RETURNS = (Output("FLOAT"),)

    def run(self, value: float) -> tuple[float]:
        return (value,)


@node("PrimitiveString", category="utils/primitive", display_name="String")
class PrimitiveString:
    value = String(multiline=False)
    RETURNS = (Output("STRING"),)

    def run(self, value: str) -> tuple[str]:
        return (value,)


@node("PrimitiveStringMultiline", category="utils/primitive", display_name="String (Multiline)")
class PrimitiveStringMultiline:
    value = String(multiline=True)
    RETURNS = (Output("STRING"),)

    def run(self, value: str) -> tuple[str]:
        return (value,)


@node("PrimitiveBoolean", category="utils/primitive", display_name="Boolean")
class PrimitiveBoolean:
    value = Boolean()
    RETURNS = (Output("BOOLEAN"),)

    def run(self, value: bool) -> tuple[bool]:
        return (value,)


@node("StringConcatenate", category="utils/string", display_name="Concatenate",
      search_aliases=["text concat", "join text", "concat", "concatenate", "combine text"])
class StringConcatenate:
    string_a = String(multiline=True)
    string_b = String(multiline=True)
    delimiter = String("", multiline=False)
    RETURNS = (Output("STRING"),)

    def run(self, string_a: str, string_b: str, delimiter: str) -> tuple[str]:
        return (delimiter.join((string_a, string_b)),)


@node("StringLength", category="utils/string", display_name="Length",
      search_aliases=["character count", "text size"])
class StringLength:
    string = String(multiline=True)
    RETURNS = (Output("INT", name="length"),)

    def run(self, string: str) -> tuple[int]:
        return (len(string),)


def as_text(value: Any) -> str:
    """How "Preview as Text" shows a value: strings as they are, numbers with str(), the rest as JSON
    when possible."""
    if value is None:
        return "None"
    if isinstance(value, str):
        return value
    if isinstance(value, (bool, int, float)):
        return str(value)
    try:
        return json.dumps(value, indent=4)
    except (TypeError, ValueError):
        return str(value)


@node("PreviewAny", category="utilities", display_name="Preview as Text", output_node=True,
      search_aliases=["show output", "inspect", "debug", "print value", "show text"])
class PreviewAny:
    source = Input("*")
    RETURNS = (Output("STRING"),)

    def run(self, source: Any = None) -> dict[str, Any]:
        text = as_text(source)
        return {"ui": {"text": [text]}, "result": (text,)}
