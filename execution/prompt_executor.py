"""``execution.PromptExecutor`` under ComfyUI's name, for plugins that read or wrap it (Impact Pack keeps
``PromptExecutor.handle_execution_error`` to call it from its own handler).

Plexus's runs are made by ``execution.executor.Engine``; this class is the part of ComfyUI's executor
surface that plugins touch: ``handle_execution_error`` turns a failed node into ComfyUI's
``execution_error`` (or ``execution_interrupted``) message and hands it to ``add_message``, which sends it
through the server object given (anything with ComfyUI's ``send_sync(event, data, sid)``). Stdlib only.
"""
from __future__ import annotations

from typing import Any


class PromptExecutor:
    def __init__(self, server: Any = None, cache_type: Any = None, cache_args: Any = None) -> None:
        self.server = server
        self.cache_type = cache_type
        self.cache_args = cache_args
        self.status_messages: list[tuple[str, dict]] = []
        self.success = True

    def add_message(self, event: str, data: dict, broadcast: bool) -> None:
        self.status_messages.append((event, data))
        if self.server is not None and (broadcast or getattr(self.server, "client_id", None) is not None):
            self.server.send_sync(event, data, None if broadcast else getattr(self.server, "client_id", None))

    def handle_execution_error(self, prompt_id: str, prompt: dict, current_outputs: Any, executed: Any,
                               error: dict, ex: BaseException) -> None:
        from execution.errors import Interrupted

        node_id = error["node_id"]
        message = {"prompt_id": prompt_id, "node_id": node_id, "node_type": prompt[node_id]["class_type"],
                   "executed": list(executed)}
        if isinstance(ex, Interrupted) or type(ex).__name__ == "InterruptProcessingException":
            self.add_message("execution_interrupted", message, broadcast=True)
            return
        message.update({key: error.get(key) for key in ("exception_message", "exception_type", "traceback",
                                                       "current_inputs")})
        message["current_outputs"] = list(current_outputs)
        self.add_message("execution_error", message, broadcast=False)
