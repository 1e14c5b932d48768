"""The narrow interface between the dispatcher and a pool of workers (Ray actors, or anything else).

A worker runs one prompt at a time and answers with a stream of messages, in order:

- ``("started", worker_id)`` once the worker has begun the prompt;
- ``("event", type, data, client_id)`` — an EventBus event of the run (progress, previews ...);
- ``("file", type, subfolder, filename, bytes)`` — an output file, sent before the event naming it;
- ``("result", run_result_json, resident_json)`` — the RunResult and what the worker now holds.

A worker that dies makes the stream raise :class:`WorkerLost`.
"""
from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Protocol


class WorkerLost(Exception):
    """The worker (its process or its node) died; ``worker_id`` names it."""

    def __init__(self, worker_id: str, reason: str):
        super().__init__(f"worker {worker_id} was lost: {reason}")
        self.worker_id = worker_id
        self.reason = reason


class WorkerPool(Protocol):
    def poll(self) -> tuple[dict[str, dict[str, Any]], list[str]]:
        """``({worker_id: info} of workers that became ready, [ids of workers that went away])``."""

    def run(self, worker_id: str, record: dict[str, Any]) -> Iterator[tuple[Any, ...]]:
        """Submit a prompt record (PromptRecord JSON) and stream its messages (see the module doc)."""

    def interrupt(self, worker_id: str, prompt_id: str | None) -> None:
        """Stop the prompt running on the worker at its next check."""

    def free(self, worker_id: str, *, unload_models: bool, free_memory: bool) -> None:
        """Unload models (and clear caches) on the worker, between its prompts."""

    def stats(self, worker_id: str, timeout_s: float) -> dict[str, Any]:
        """Device, memory and resident models of the worker."""

    def remove(self, worker_id: str) -> None:
        """Stop the worker (after draining)."""

    def shutdown(self) -> None: ...
