"""values.expressions: Python's own arithmetic on the allowed forms, refusal of everything else."""
from __future__ import annotations

import math

import pytest

from values.expressions import ExpressionError, evaluate, to_number


@pytest.mark.parametrize("expression", [
    "a + b", "a - b * 2", "a / b", "a // b", "a % b", "a ** 2", "-a + +b", "~7 & 0xff", "a & ~1",
    "1 << 4 | 3 ^ 1", "a > 2048", "1 < a <= 5", "a == b or not b", "a if a > b else b", "(a + b) * (a - b)",
    "max(a, b, 3) + min(a, b)", "round(b / 3, 2)", "abs(-a) + sqrt(16) + floor(2.7) + ceil(2.1)", "pow(2, 10)",
    "int(b) + float(a)", "sum(values)", "log(e) + cos(pi)",
])
def test_matches_python_on_allowed_forms(expression: str) -> None:
    names = {"a": 5, "b": 3.25, "values": [5, 3.25]}
    reference = eval(expression, {"__builtins__": {}}, {**names, "max": max, "min": min, "round": round,  # noqa: S307
                                                          "abs": abs, "sqrt": math.sqrt, "floor": math.floor,
                                                          "ceil": math.ceil, "pow": pow, "int": int, "float": float,
                                                          "sum": sum, "log": math.log, "cos": math.cos,
                                                          "e": math.e, "pi": math.pi})
    assert evaluate(expression, names) == reference


@pytest.mark.parametrize("expression", [
    "__import__('os')", "a.__class__", "(1).real", "[1, 2][0]", "'text'", "lambda: 1", "open('x')",
    "[x for x in values]", "max(a, key=abs)", "unknown + 1", "a := 3", "9 ** 99999", "1 << 100000", "", "1 +",
])
def test_refuses_everything_else(expression: str) -> None:
    with pytest.raises(ExpressionError):
        evaluate(expression, {"a": 1, "values": [1]})


def test_errors_of_arithmetic_are_expression_errors() -> None:
    with pytest.raises(ExpressionError, match="division"):
        evaluate("a / 0", {"a": 1})


def test_to_number() -> None:
    assert to_number(True) == 1.0 and to_number(" 2.5 ") == 2.5 and to_number(7) == 7.0
    with pytest.raises(ExpressionError):
        to_number("seven")
