"""One error hierarchy for the whole engine, serialisable in ComfyUI's shapes.

ComfyUI reports errors as ``{"type", "message", "details", "extra_info"}`` objects, both for the
top-level ``error`` of a rejected prompt and for each entry of ``node_errors[id]["errors"]``.
Every error Plexus shows a user comes from :class:`PlexusError` so that the server, the headless
runner and the tests see the same structure.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


class PlexusError(Exception):
    """An error meant for a user: a machine-readable ``type`` plus a message that says how to fix it."""

    def __init__(self, type: str, message: str, details: str = "", extra_info: dict[str, Any] | None = None):
        super().__init__(message if not details else f"{message}: {details}")
        self.type = type
        self.message = message
        self.details = details
        self.extra_info = dict(extra_info or {})

    def to_json(self) -> dict[str, Any]:
        return {"type": self.type, "message": self.message, "details": self.details,
                "extra_info": self.extra_info}


class Interrupted(PlexusError):
    """Raised inside a running prompt when the user asked to stop it."""

    def __init__(self, message: str = "Processing interrupted"):
        super().__init__("execution_interrupted", message)


@dataclass(frozen=True)
class ValidationIssue:
    """One problem found while validating a prompt, attached to a node (or to the prompt if node_id is None)."""

    type: str
    message: str
    details: str = ""
    node_id: str | None = None
    input_name: str | None = None
    extra_info: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        extra = dict(self.extra_info)
        if self.input_name is not None:
            extra.setdefault("input_name", self.input_name)
        return {"type": self.type, "message": self.message, "details": self.details, "extra_info": extra}


class PromptValidationError(PlexusError):
    """A prompt that cannot run at all: carries the top-level error and every per-node error."""

    def __init__(self, error: dict[str, Any], node_errors: dict[str, Any]):
        super().__init__(error["type"], error["message"], error.get("details", ""), error.get("extra_info"))
        self.node_errors = node_errors

    def to_response(self) -> dict[str, Any]:
        """The body ComfyUI answers a rejected POST /prompt with."""
        return {"error": self.to_json(), "node_errors": self.node_errors}
