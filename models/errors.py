"""Errors raised by model loading and detection: PlexusErrors, so the server and the runner show them
in ComfyUI's error shape. They also subclass ValueError because every one of them is about a bad input
file, never a bug.
"""
from __future__ import annotations

from typing import Any

from execution.errors import PlexusError


class ModelError(PlexusError, ValueError):
    """A model file that cannot be used, with a message that says what was found and how to fix it."""

    type = "model_error"

    def __init__(self, message: str, details: str = "", extra_info: dict[str, Any] | None = None):
        super().__init__(type(self).type, message, details, extra_info)
        self.args = (message if not details else f"{message}\n{details}",)


class ModelFileError(ModelError):
    """The file itself is unreadable: truncated, corrupt, wrong format, or an unsafe pickle."""

    type = "model_file_error"


class UnsafePickleError(ModelFileError):
    """A .ckpt/.pt pickle that needs more than tensors and plain containers; it was never executed."""

    type = "model_unsafe_pickle"


class UnknownModelError(ModelError):
    """The keys and shapes match no layout Plexus knows."""

    type = "model_unknown_layout"


class UnsupportedModelError(ModelError):
    """A layout Plexus recognises but cannot run yet (SDXL, SD3)."""

    type = "model_unsupported"


class KeyMismatchError(ModelError):
    """A state dict that does not fit the architecture: lists the missing, unexpected and misshapen keys."""

    type = "model_key_mismatch"


def summarise_keys(keys: list[str], limit: int = 20) -> str:
    """`a, b, c, ... (+N more)` for an error message."""
    keys = sorted(keys)
    shown = ", ".join(keys[:limit])
    return shown + (f", ... (+{len(keys) - limit} more)" if len(keys) > limit else "")
