"""ComfyUI's ``comfy.ldm.util`` helpers for plugins (``exists``, ``default``)."""
from __future__ import annotations

from typing import Any


def exists(value: Any) -> bool:
    return value is not None


def default(value: Any, fallback: Any) -> Any:
    if value is not None:
        return value
    return fallback() if callable(fallback) else fallback
