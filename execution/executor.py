"""The engine: validate a prompt, execute a prompt record, keep the output cache between prompts.

``Engine.execute`` is synchronous and runs in the worker thread (the server's, or the headless
runner's); async node functions run on the engine's own event loop. It never raises: whatever goes
wrong ends up in the returned :class:`RunResult`.
"""
from __future__ import annotations

import dataclasses
import logging
import threading
import time
import traceback
from dataclasses import dataclass, field
from typing import Any

from execution.caching import CachePolicy, free_ram_bytes
from execution.compiled import CompileMemo
from execution.events import EventBus
from execution.failures import now_ms
from execution.loop import EngineLoop
from execution.protocol import PREVIEW_METHODS
from execution.registry import NodeRegistry
from execution.run import PromptRun
from execution.validation import full_type_name, validate_prompt

log = logging.getLogger(__name__)


@dataclass
class PromptRecord:
    """A queued prompt, self-contained and JSON-serialisable (any worker can run it)."""

    prompt_id: str
    number: float = 0
    prompt: dict[str, Any] = field(default_factory=dict)
    extra_data: dict[str, Any] = field(default_factory=dict)
    client_id: str | None = None
    outputs_to_execute: list[str] = field(default_factory=list)
    create_time_ms: int = field(default_factory=lambda: int(time.time() * 1000))

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> PromptRecord:
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


@dataclass
class ValidationResult:
    ok: bool
    error: dict[str, Any] | None
    node_errors: dict[str, Any]
    outputs_to_execute: list[str]

    def to_response(self) -> dict[str, Any]:
        """ComfyUI's answer body for a rejected POST /prompt."""
        return {"error": self.error, "node_errors": self.node_errors}


@dataclass
class RunResult:
    status: str                                  # "success" | "error" | "interrupted"
    outputs: dict[str, Any] = field(default_factory=dict)        # node id -> ui dict
    messages: list[list[Any]] = field(default_factory=list)      # [[event type, data], ...]
    node_timings_s: dict[str, float] = field(default_factory=dict)
    error: dict[str, Any] | None = None          # the execution_error data
    meta: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


class Engine:
    """Validates and executes prompts against a :class:`NodeRegistry`, emitting to an :class:`EventBus`."""

    def __init__(self, registry: NodeRegistry, events: EventBus | None = None,
                 cache_policy: CachePolicy | None = None, *, free_bytes: Any = free_ram_bytes,
                 preview_method: str = "none"):
        if preview_method not in PREVIEW_METHODS:
            raise ValueError(f"preview_method {preview_method!r} is not one of {', '.join(PREVIEW_METHODS)}")
        self.registry = registry
        self.preview_method = preview_method   # the server's default; a prompt's extra_data may override it
        self.events = events if events is not None else EventBus()
        self.cache_policy = cache_policy or CachePolicy.keep_last()
        self.cache = self.cache_policy.make(free_bytes)
        self.instances: dict[tuple[str, str], Any] = {}
        self.compile_memo = CompileMemo()
        self.loop = EngineLoop()
        self._lock = threading.Lock()          # one prompt at a time per engine
        self._interrupt = threading.Event()
        self._interrupt_target: str | None = None
        self._running: str | None = None

    def validate(self, prompt: Any, partial_execution_targets: list[str] | None = None) -> ValidationResult:
        """Check a prompt before it is queued; every problem is reported at once, nothing runs."""
        try:
            outcome = validate_prompt(self.registry, prompt, partial_execution_targets)
        except Exception as exc:  # a validator bug must still answer in ComfyUI's shape
            log.exception("validation failed")
            return ValidationResult(False, {"type": "exception_during_validation",
                                            "message": f"Exception when validating the prompt: {exc}",
                                            "details": "".join(traceback.format_exception(exc))[-2000:],
                                            "extra_info": {"exception_type": full_type_name(type(exc))}}, {}, [])
        return ValidationResult(outcome.ok, outcome.error, outcome.node_errors, outcome.outputs)

    def execute(self, record: PromptRecord) -> RunResult:
        """Run a prompt to the end (or to its first error, or an interruption); never raises."""
        with self._lock:
            self._running = getattr(record, "prompt_id", None)
            if self._interrupt_target != self._running:  # a stale stop request is not for this prompt
                self._interrupt.clear()
            run = None
            try:
                run = PromptRun(self, record)
                outcome = run.run()
                result = RunResult(outcome["status"], outcome["outputs"], outcome["messages"],
                                   outcome["node_timings_s"], outcome["error"], outcome["meta"])
            except Exception as exc:  # the record itself was unusable
                log.exception("execute failed")
                error = {"prompt_id": getattr(record, "prompt_id", None), "node_id": None, "node_type": None,
                         "executed": [], "exception_message": f"internal engine error: {exc}",
                         "exception_type": full_type_name(type(exc)), "traceback": traceback.format_tb(exc.__traceback__),
                         "current_inputs": {}, "current_outputs": [], "timestamp": now_ms()}
                result = RunResult("error", messages=[["execution_error", error]], error=error)
            finally:
                self._running = None
                self._interrupt.clear()
                self._interrupt_target = None
            if run is not None:
                self._prune_instances(run.nodes)
            return result

    def _prune_instances(self, nodes: dict[str, Any]) -> None:
        """Keep node instances (plugins store state on self) only for the nodes of the last prompt."""
        stale = [key for key in self.instances
                 if key[0] not in nodes or nodes[key[0]].class_type != key[1]]
        for key in stale:
            del self.instances[key]

    def interrupt(self, prompt_id: str | None = None) -> None:
        """Stop the running prompt (only if it is ``prompt_id``, when given) at the next check."""
        self._interrupt_target = prompt_id
        self._interrupt.set()

    def is_interrupted(self, prompt_id: str | None = None) -> bool:
        if not self._interrupt.is_set():
            return False
        target = self._interrupt_target
        return target is None or target == prompt_id

    def close(self) -> None:
        """Release the engine's event loop (the headless runner calls this before exiting)."""
        with self._lock:
            self.loop.close()

    def clear_cache(self) -> None:
        """Forget every cached output and node instance."""
        with self._lock:
            self.cache.clear()
            self.instances.clear()
            self.compile_memo.clear()
