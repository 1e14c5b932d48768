"""The newer core logic and primitive nodes the 2026 templates use (not in ComfyUI 0.3.64).

Specs, from the templates of ``comfyui-workflow-templates-json`` 0.1.123 (input and output names and
types, widget values) and ComfyUI's public ``comfy_extras/nodes_logic.py`` / ``nodes_math.py`` /
``nodes_string.py`` as found with the search tool:

- ComfySwitchNode (category "logic", display "Switch", experimental): BOOLEAN ``switch``, lazy
  ``on_false`` / ``on_true`` of one matched type (declared "*" here), output ``output``. Only the
  chosen branch is evaluated; an unconnected branch makes the other one the output.
- ComfyMathExpression ("logic", "Math Expression"): STRING ``expression`` (default "a + b"), autogrow
  inputs ``values.a`` ... ``values.z`` of type "FLOAT,INT,BOOLEAN" (``values.a`` required); outputs
  FLOAT, INT, BOOL. Evaluated by `values.expressions` (no `eval`).
- ComfyNumberConvert ("logic", "Number Convert"): ``value`` "INT,FLOAT,STRING,BOOLEAN"; FLOAT, INT.
- JsonExtractString ("utils/string", "Extract String from JSON"): STRING ``json_string``, ``key``.
- ResolutionSelector ("utils", "Resolution Selector"): ``aspect_ratio`` (ComfyUI's eight ratios),
  ``megapixels`` FLOAT 1.0 [0.1, 16], ``multiple`` INT 8 [8, 128] step 4 (the three widgets the
  templates save); outputs ``width``, ``height``. Newer ComfyUI adds an advanced ``minimum`` input.
- CustomCombo ("utils", "Custom Combo", experimental): a combo whose options the editor holds; outputs
  STRING (the choice) and INDEX (its position, the editor's hidden "index" widget).
"""
from __future__ import annotations

import string as ascii_names
from typing import Any

from execution.errors import PlexusError
from nodes.spec import Combo, Float, Hidden, Input, Int, Output, String, node, optional
from values import expressions, sizes, text

NUMBER_TYPES = "FLOAT,INT,BOOLEAN"
VALUE_NAMES = tuple(f"values.{letter}" for letter in ascii_names.ascii_lowercase)


@node("ComfySwitchNode", category="logic", display_name="Switch", experimental=True, function="execute")
class ComfySwitchNode:
    switch = Input("BOOLEAN", default=False)
    on_false = optional(Input("*", lazy=True))
    on_true = optional(Input("*", lazy=True))
    RETURNS = (Output("*", name="output"),)

    _MISSING = object()

    @classmethod
    def check_lazy_status(cls, switch: bool, on_false: Any = _MISSING, on_true: Any = _MISSING) -> list[str]:
        # An unconnected branch is absent (the default); a connected, not yet evaluated one is None.
        if on_false is cls._MISSING:
            return ["on_true"] if on_true is None else []
        if on_true is cls._MISSING:
            return ["on_false"] if on_false is None else []
        if switch and on_true is None:
            return ["on_true"]
        if not switch and on_false is None:
            return ["on_false"]
        return []

    def run(self, switch: bool, on_false: Any = _MISSING, on_true: Any = _MISSING) -> tuple[Any]:
        if on_false is self._MISSING and on_true is self._MISSING:
            raise PlexusError("missing_input", "Switch has neither 'on_true' nor 'on_false' connected",
                              "connect at least one branch")
        if on_false is self._MISSING:
            return (on_true,)
        if on_true is self._MISSING:
            return (on_false,)
        return (on_true if switch else on_false,)


def _math_expression_class() -> type:
    namespace: dict[str, Any] = {"expression": String("a + b", multiline=True)}
    for index, name in enumerate(VALUE_NAMES):
        socket = Input(NUMBER_TYPES)
        namespace[name] = socket if index == 0 else optional(socket)
    namespace["RETURNS"] = (Output("FLOAT"), Output("INT"), Output("BOOLEAN", name="BOOL"))

    def run(self, expression: str, **values: Any) -> tuple[float, int, bool]:
        names = {key.split(".", 1)[1]: value for key, value in values.items() if key in VALUE_NAMES}
        names["values"] = [values[key] for key in VALUE_NAMES if key in values]
        try:
            result = expressions.evaluate(expression, names)
        except expressions.ExpressionError as exc:
            raise PlexusError("invalid_expression", "Math Expression could not be evaluated", str(exc)) from exc
        if not isinstance(result, (bool, int, float)):
            raise PlexusError("invalid_expression", "Math Expression must give a number",
                              f"{expression!r} gave {type(result).__name__}")
        return (float(result), int(result), bool(result))

    namespace["run"] = run
    namespace["__doc__"] = "Evaluates an arithmetic expression over the inputs a, b, ... (and the list `values`)."
    namespace["__module__"] = __name__
    return node("ComfyMathExpression", category="logic", display_name="Math Expression",
                function="execute", search_aliases=["expression", "formula", "calculate", "math"])(
        type("ComfyMathExpression", (), namespace))


ComfyMathExpression = _math_expression_class()


@node("ComfyNumberConvert", category="logic", display_name="Number Convert", function="execute")
class ComfyNumberConvert:
    value = Input("INT,FLOAT,STRING,BOOLEAN")
    RETURNS = (Output("FLOAT"), Output("INT"))

    def run(self, value: Any) -> tuple[float, int]:
        try:
            number = expressions.to_number(value)
        except expressions.ExpressionError as exc:
            raise PlexusError("invalid_input", "Number Convert input 'value' is not a number", str(exc)) from exc
        return (number, int(number))


@node("JsonExtractString", category="utils/string", display_name="Extract String from JSON", function="execute")
class JsonExtractString:
    json_string = String("", multiline=True)
    key = String("")
    RETURNS = ("STRING",)

    def run(self, json_string: str, key: str) -> tuple[str]:
        return (text.json_extract_string(json_string, key),)


@node("ResolutionSelector", category="utils", display_name="Resolution Selector", function="execute",
      description="Width and height for an aspect ratio and a megapixel target, rounded to a multiple.")
class ResolutionSelector:
    aspect_ratio = Combo(tuple(sizes.ASPECT_RATIOS), default="1:1 (Square)")
    megapixels = Float(1.0, min=0.1, max=16.0, step=0.1)
    multiple = Int(8, min=8, max=128, step=4)
    RETURNS = (Output("INT", name="width"), Output("INT", name="height"))

    def run(self, aspect_ratio: str, megapixels: float, multiple: int = 8) -> tuple[int, int]:
        return sizes.resolution(aspect_ratio, megapixels, multiple)


@node("CustomCombo", category="utils", display_name="Custom Combo", experimental=True, function="execute",
      description="Provides a user-defined dropdown combo box where options are written by the user, "
                  "outputting the selected string and its index.")
class CustomCombo:
    # Newer than ComfyUI 0.3.64 (comfy_extras/nodes_logic.py, found with the search tool): the choices are the
    # editor's own option widgets (customCombo.ts), so the combo is declared empty and VALIDATE_INPUTS takes
    # 'choice' over (any text is accepted, as ComfyUI does). The editor also sends its hidden "index"
    # widget, which ComfyUI's node receives through accept_all_inputs; here it is a hidden input of its own
    # kind, which gets what the prompt gives (execution/compiled.py).
    choice = Combo([])
    index = Hidden("INT")
    RETURNS = (Output("STRING", name="STRING"), Output("INT", name="INDEX"))

    @classmethod
    def VALIDATE_INPUTS(cls, choice: str) -> bool:
        return True

    def run(self, choice: str, index: int | None = 0) -> tuple[str, int]:
        return (choice, int(index or 0))
