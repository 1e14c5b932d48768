"""Shared bits for the store and worker tests: a record type and a scripted fake engine.

The record and result types follow docs/architecture.md (PromptRecord, RunResult); the tests use
the executor's own types when it provides them and these stand-ins otherwise.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any

try:  # the real types, once execution/executor.py provides them
    from execution.executor import PromptRecord as _RealPromptRecord
except Exception:  # noqa: BLE001 - executor not written yet
    _RealPromptRecord = None


@dataclass
class StandInPromptRecord:
    prompt_id: str
    number: float | None = None
    prompt: dict[str, Any] = field(default_factory=dict)
    extra_data: dict[str, Any] = field(default_factory=dict)
    client_id: str | None = None
    outputs_to_execute: list[str] = field(default_factory=list)
    create_time_ms: int = 0


PromptRecord = _RealPromptRecord or StandInPromptRecord


def make_record(prompt_id: str, **overrides: Any) -> Any:
    fields = {"prompt_id": prompt_id, "number": None,
              "prompt": {"1": {"class_type": "Slow", "inputs": {"tag": prompt_id}}},
              "extra_data": {"client": "test"}, "client_id": "c1", "outputs_to_execute": ["1"],
              "create_time_ms": 1_700_000_000_000}
    fields.update(overrides)
    return PromptRecord(**fields)


@dataclass
class FakeResult:
    status: str = "success"
    outputs: dict[str, Any] = field(default_factory=dict)
    messages: list[list[Any]] = field(default_factory=list)
    node_timings_s: dict[str, float] = field(default_factory=dict)
    error: dict[str, Any] | None = None
    meta: dict[str, Any] = field(default_factory=dict)


class FakeEngine:
    """Runs each record through ``script(record)``; records the order; can block on a gate."""

    def __init__(self, script=None):
        self.script = script or (lambda record: FakeResult(outputs={"1": {"text": [record.prompt_id]}}))
        self.ran: list[str] = []
        self.started = threading.Event()
        self.interrupted: list[str | None] = []
        self.gate: threading.Event | None = None

    def execute(self, record):
        self.ran.append(record.prompt_id)
        self.started.set()
        if self.gate is not None:
            self.gate.wait()
            if record.prompt_id in self.interrupted:
                return FakeResult(status="interrupted")
        return self.script(record)

    def interrupt(self, prompt_id=None):
        self.interrupted.append(prompt_id)
        if self.gate is not None:
            self.gate.set()


class RecordingEvents:
    def __init__(self):
        self.events: list[tuple[str, dict, str | None]] = []
        self.lock = threading.Lock()

    def emit(self, type, data, client_id=None):
        with self.lock:
            self.events.append((type, data, client_id))

    def of_type(self, type):
        with self.lock:
            return [e for e in self.events if e[0] == type]
