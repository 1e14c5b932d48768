"""The error storage raises for a user's mistake (a missing model, an unsafe name, a broken yaml).

``storage/`` may import only the stdlib and ``yaml`` (docs/architecture.md), so it cannot subclass
``execution.errors.PlexusError``. :class:`StorageError` has the same fields and the same
``to_json()`` shape (ComfyUI's ``{"type", "message", "details", "extra_info"}``), so the server, the
runner and the executor can report it exactly like a ``PlexusError``.
"""
from __future__ import annotations

from typing import Any


class StorageError(Exception):
    """A storage problem meant for a user: a machine-readable ``type`` plus a message with the fix."""

    def __init__(self, type: str, message: str, details: str = "", extra_info: dict[str, Any] | None = None):
        super().__init__(message if not details else f"{message}: {details}")
        self.type = type
        self.message = message
        self.details = details
        self.extra_info = dict(extra_info or {})

    def to_json(self) -> dict[str, Any]:
        return {"type": self.type, "message": self.message, "details": self.details,
                "extra_info": self.extra_info}


class UnsafePathError(StorageError):
    """A user-supplied name that would leave its folder (traversal, absolute path, symlink out...)."""

    def __init__(self, name: str, reason: str):
        super().__init__("unsafe_path", f"Refused path {name!r}: {reason}",
                         "use a plain relative name inside the folder: no '..', no backslash, no leading '/'",
                         {"name": name, "reason": reason})
