"""A real crash: a worker process is SIGKILLed mid-prompt; no accepted prompt is lost.

The child process runs a Worker on a file database with a slow pure-Python node that announces
itself on stdout and then blocks on an event nobody sets. The test reads that line (no sleeps),
kills the child with SIGKILL, reopens the store and checks what ``recover()`` does: the first time
the prompt is re-queued, the second time it is marked failed. Prompts accepted before and during the
run are all still pending.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from execution.store import PromptStore
from tests.execution.store_helpers import PromptRecord, make_record

ROOT = Path(__file__).resolve().parents[2]

CHILD = textwrap.dedent("""
    import sys, threading
    from execution.store import PromptStore
    from execution.worker import Worker
    from tests.execution.store_helpers import PromptRecord, RecordingEvents

    class Slow:
        '''A node that says it started, then waits for a condition that never comes.'''
        CATEGORY = "test"
        RETURN_TYPES = ("STRING",)
        FUNCTION = "run"

        @classmethod
        def INPUT_TYPES(cls):
            return {"required": {"tag": ("STRING", {"default": ""})}}

        def run(self, tag):
            print("STARTED", tag, flush=True)
            threading.Event().wait()

    def make_engine():
        try:
            from execution.executor import Engine
            from execution.registry import NodeRegistry
            from execution.events import EventBus
        except ImportError:
            Engine = None
        if Engine is not None:
            registry = NodeRegistry()
            registry.register("Slow", Slow)
            return Engine(registry, EventBus())

        class PlainEngine:  # until the executor exists: run the node directly
            def execute(self, record):
                node = record.prompt["1"]
                Slow().run(**node["inputs"])
            def interrupt(self, prompt_id=None):
                pass
        return PlainEngine()

    store = PromptStore(sys.argv[1], record_type=PromptRecord)
    worker = Worker(store, make_engine(), RecordingEvents(), heartbeat_interval_s=0.05).start()
    worker._thread.join()
""")


def run_until_started(db_path: Path) -> tuple[subprocess.Popen, str]:
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(db_path)], cwd=ROOT, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    line = child.stdout.readline()
    if not line.startswith("STARTED"):
        child.kill()
        raise AssertionError(f"worker process did not start a prompt: {line!r} {child.stderr.read()}")
    return child, line.split()[1]


def kill(child: subprocess.Popen) -> None:
    os.kill(child.pid, signal.SIGKILL)
    assert child.wait(30) == -signal.SIGKILL
    child.stdout.close()
    child.stderr.close()


@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs SIGKILL")
def test_sigkill_mid_prompt_requeues_once_then_fails_and_loses_nothing(tmp_path):
    db_path = tmp_path / "user" / "queue.sqlite3"
    with PromptStore(db_path, record_type=PromptRecord) as store:
        for name in ("a", "b", "c"):
            store.put(make_record(name, prompt={"1": {"class_type": "Slow", "inputs": {"tag": name}}}))

    child, started = run_until_started(db_path)
    assert started == "a"
    with PromptStore(db_path, record_type=PromptRecord) as store:  # accepted while the worker runs
        store.put(make_record("d", prompt={"1": {"class_type": "Slow", "inputs": {"tag": "d"}}}))
    kill(child)

    with PromptStore(db_path, record_type=PromptRecord) as store:
        assert store.status_of("a") == "running"
        assert store.recover() == {"a": "requeued"}
        assert [e[1] for e in store.pending()] == ["a", "b", "c", "d"]

    child, started = run_until_started(db_path)
    assert started == "a"
    kill(child)

    with PromptStore(db_path, record_type=PromptRecord) as store:
        assert store.recover() == {"a": "failed"}
        item = store.history_item("a")
        assert item["status"]["status_str"] == "error" and item["status"]["completed"] is False
        assert item["plexus"]["attempts"] == 2
        assert [e[1] for e in store.pending()] == ["b", "c", "d"]
        assert store.running() == []
