"""The errors storage raises for a user's mistake (a missing model, an unsafe name, a broken yaml).

They are ``PlexusError``s, so the server, the runner and the executor report them in ComfyUI's
``{"type", "message", "details", "extra_info"}`` shape like any other error.
"""
from __future__ import annotations

from execution.errors import PlexusError


class StorageError(PlexusError):
    """A storage problem meant for a user: a machine-readable ``type`` plus a message with the fix."""


class UnsafePathError(StorageError):
    """A user-supplied name that would leave its folder (traversal, absolute path, symlink out...)."""

    def __init__(self, name: str, reason: str):
        super().__init__("unsafe_path", f"Refused path {name!r}: {reason}",
                         "use a plain relative name inside the folder: no '..', no backslash, no leading '/'",
                         {"name": name, "reason": reason})
