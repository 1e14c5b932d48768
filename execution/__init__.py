"""Plexus's engine: graphs, validation, caching, the executor, events and the prompt store.

Importing ``execution`` is cheap and torch-free; the public names load on first use.
"""
from __future__ import annotations

from typing import Any

_EXPORTS = {
    "PlexusError": "execution.errors", "Interrupted": "execution.errors",
    "ValidationIssue": "execution.errors", "PromptValidationError": "execution.errors",
    "ExecutionBlocker": "execution.protocol", "GraphBuilder": "execution.protocol",
    "NodeContext": "execution.protocol", "current_context": "execution.protocol",
    "Preview": "execution.protocol", "ANY": "execution.protocol", "types_compatible": "execution.protocol",
    "NodeRegistry": "execution.registry",
    "EventBus": "execution.events", "Event": "execution.events",
    "PromptRecord": "execution.executor", "Engine": "execution.executor",
    "ValidationResult": "execution.executor", "RunResult": "execution.executor",
    "CachePolicy": "execution.caching",
    "PromptStore": "execution.store", "Worker": "execution.worker",
    "workflow_to_prompt": "execution.workflow",
    "PromptExecutor": "execution.prompt_executor",
}

__all__ = list(_EXPORTS)


def __getattr__(name: str) -> Any:
    module_name = _EXPORTS.get(name)
    if module_name is None:
        raise AttributeError(f"module 'execution' has no attribute {name!r}")
    import importlib
    value = getattr(importlib.import_module(module_name), name)
    globals()[name] = value
    return value
