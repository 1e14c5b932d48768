"""ComfyUI's ``comfy_execution.graph`` names packs import (ExecutionBlocker and the error types)."""
from execution.protocol import ExecutionBlocker


class DependencyCycleError(Exception):
    pass


class NodeInputError(Exception):
    pass


class NodeNotFoundError(Exception):
    pass


__all__ = ["DependencyCycleError", "ExecutionBlocker", "NodeInputError", "NodeNotFoundError"]
