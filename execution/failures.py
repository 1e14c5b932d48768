"""What a failed node reports: the failure itself and short summaries of the values it was given."""
from __future__ import annotations

import time
from typing import Any


def now_ms() -> int:
    return int(time.time() * 1000)


class NodeFailure(Exception):
    """A node could not run; carries the ``execution_error`` details."""

    def __init__(self, node_id: str, exception: BaseException, message: str | None = None,
                 traceback_lines: list[str] | None = None, inputs: dict[str, Any] | None = None):
        super().__init__(message or str(exception))
        self.node_id = node_id
        self.exception = exception
        self.message = message or str(exception)
        self.traceback_lines = traceback_lines or []
        self.inputs = inputs or {}


def summarize(value: Any, limit: int = 200) -> Any:
    """A short, JSON-safe stand-in for an input value in an error report."""
    if value is None or isinstance(value, (bool, int, float)):
        return value
    if isinstance(value, str):
        return value if len(value) <= limit else value[:limit] + "..."
    try:
        shape = getattr(value, "shape", None)
        if shape is not None:  # tensors and arrays: their shape says more than their numbers
            return f"{type(value).__name__}(shape={tuple(shape)}, dtype={getattr(value, 'dtype', '?')})"
        text = repr(value)
    except Exception:  # noqa: BLE001 - a value whose repr fails must not hide the node's own error
        return f"<{type(value).__name__}>"
    return text if len(text) <= limit else text[:limit] + "..."
