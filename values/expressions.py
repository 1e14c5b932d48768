"""A small, safe arithmetic expression evaluator (no `eval`): the language of ComfyMathExpression.

The expression is parsed with `ast` and walked over a whitelist: numbers and booleans, the names it
is given, + - * / // % ** (exponent capped), unary - + ~ not, comparisons (chained), and/or, the
ternary ``x if c else y``, bitwise & | ^ << >>, and calls of the functions in `FUNCTIONS`. Anything
else (attributes, subscripts, strings, lambdas, comprehensions, keyword arguments) is rejected with
`ExpressionError` before anything is evaluated.
"""
from __future__ import annotations

import ast
import math
import operator
from typing import Any, Callable, Mapping

MAX_EXPONENT = 4096
MAX_SHIFT = 4096
MAX_LENGTH = 2000


class ExpressionError(ValueError):
    """The expression is not valid in this language, or failed to evaluate."""


def _pow(base: Any, exponent: Any) -> Any:
    if abs(exponent) > MAX_EXPONENT:
        raise ExpressionError(f"exponent {exponent} is larger than {MAX_EXPONENT}")
    return operator.pow(base, exponent)


def _shift(op: Callable[[Any, Any], Any]) -> Callable[[Any, Any], Any]:
    def shift(a: Any, b: Any) -> Any:
        if abs(b) > MAX_SHIFT:
            raise ExpressionError(f"shift by {b} is larger than {MAX_SHIFT}")
        return op(a, b)
    return shift


def _sum(*values: Any) -> Any:
    if len(values) == 1 and isinstance(values[0], (list, tuple)):
        values = tuple(values[0])
    return sum(values)


FUNCTIONS: dict[str, Callable[..., Any]] = {
    "sum": _sum, "min": min, "max": max, "abs": abs, "round": round, "pow": _pow, "sqrt": math.sqrt,
    "ceil": math.ceil, "floor": math.floor, "log": math.log, "log2": math.log2, "log10": math.log10,
    "sin": math.sin, "cos": math.cos, "tan": math.tan, "int": int, "float": float, "bool": bool,
}
CONSTANTS: dict[str, Any] = {"pi": math.pi, "e": math.e, "True": True, "False": False}

_BINARY = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv,
           ast.FloorDiv: operator.floordiv, ast.Mod: operator.mod, ast.Pow: _pow, ast.BitAnd: operator.and_,
           ast.BitOr: operator.or_, ast.BitXor: operator.xor, ast.LShift: _shift(operator.lshift),
           ast.RShift: _shift(operator.rshift)}
_UNARY = {ast.USub: operator.neg, ast.UAdd: operator.pos, ast.Invert: operator.invert, ast.Not: operator.not_}
_COMPARE = {ast.Eq: operator.eq, ast.NotEq: operator.ne, ast.Lt: operator.lt, ast.LtE: operator.le,
            ast.Gt: operator.gt, ast.GtE: operator.ge}


def evaluate(expression: str, names: Mapping[str, Any]) -> Any:
    """The value of `expression` with `names` (e.g. {"a": 2, "b": 3.5, "values": [2, 3.5]})."""
    if len(expression) > MAX_LENGTH:
        raise ExpressionError(f"the expression is longer than {MAX_LENGTH} characters")
    text = expression.strip()
    if not text:
        raise ExpressionError("the expression is empty")
    try:
        tree = ast.parse(text, mode="eval")
    except SyntaxError as exc:
        raise ExpressionError(f"cannot parse {expression!r}: {exc.msg}") from exc
    scope = {**CONSTANTS, **names}
    try:
        return _eval(tree.body, scope)
    except ExpressionError:
        raise
    except (ArithmeticError, TypeError, ValueError) as exc:
        raise ExpressionError(f"{expression!r}: {exc}") from exc


def _eval(node: ast.AST, scope: Mapping[str, Any]) -> Any:
    if isinstance(node, ast.Constant):
        if isinstance(node.value, (bool, int, float)):
            return node.value
        raise ExpressionError(f"only numbers are allowed, not {node.value!r}")
    if isinstance(node, ast.Name):
        if node.id in scope:
            return scope[node.id]
        raise ExpressionError(f"unknown name {node.id!r}; known: {', '.join(sorted(scope))}")
    if isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
        return _BINARY[type(node.op)](_eval(node.left, scope), _eval(node.right, scope))
    if isinstance(node, ast.UnaryOp) and type(node.op) in _UNARY:
        return _UNARY[type(node.op)](_eval(node.operand, scope))
    if isinstance(node, ast.BoolOp):
        if isinstance(node.op, ast.And):
            result: Any = True
            for value in node.values:
                result = _eval(value, scope)
                if not result:
                    return result
            return result
        for value in node.values:
            result = _eval(value, scope)
            if result:
                return result
        return result
    if isinstance(node, ast.Compare) and all(type(op) in _COMPARE for op in node.ops):
        left = _eval(node.left, scope)
        for op, right_node in zip(node.ops, node.comparators):
            right = _eval(right_node, scope)
            if not _COMPARE[type(op)](left, right):
                return False
            left = right
        return True
    if isinstance(node, ast.IfExp):
        return _eval(node.body, scope) if _eval(node.test, scope) else _eval(node.orelse, scope)
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and not node.keywords:
        function = FUNCTIONS.get(node.func.id)
        if function is None:
            raise ExpressionError(f"unknown function {node.func.id!r}; known: {', '.join(sorted(FUNCTIONS))}")
        return function(*(_eval(arg, scope) for arg in node.args))
    raise ExpressionError(f"{type(node).__name__} is not allowed in an expression")


def to_number(value: Any) -> float:
    """ComfyNumberConvert's reading of an INT, FLOAT, BOOLEAN or numeric STRING."""
    if isinstance(value, bool):
        return 1.0 if value else 0.0
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value.strip())
        except ValueError:
            raise ExpressionError(f"{value!r} is not a number") from None
    raise ExpressionError(f"cannot convert a {type(value).__name__} to a number")
