"""Worker: runs queued prompts in order, survives engine exceptions, emits status, stops cleanly."""
from __future__ import annotations

import threading

import pytest

from execution.store import PromptStore
from execution.worker import Worker
from tests.execution.store_helpers import FakeEngine, FakeResult, PromptRecord, RecordingEvents, make_record


@pytest.fixture
def store():
    with PromptStore(None, record_type=PromptRecord) as s:
        yield s


def test_worker_runs_prompts_in_queue_order_and_records_history(store):
    engine, events = FakeEngine(), RecordingEvents()
    for name in "abc":
        store.put(make_record(name))
    store.put(make_record("front"), front=True)
    worker = Worker(store, engine, events).start()
    try:
        assert worker.wait_idle(10)
        store.put(make_record("late"))
        assert worker.wait_idle(10)
    finally:
        worker.stop()
    assert engine.ran == ["front", "a", "b", "c", "late"]
    assert list(store.history()) == ["front", "a", "b", "c", "late"]
    assert store.history_item("late")["outputs"] == {"1": {"text": ["late"]}}
    assert not worker.is_alive


def test_status_events_go_to_everyone_and_count_the_queue(store):
    engine, events = FakeEngine(), RecordingEvents()
    engine.gate = threading.Event()
    worker = Worker(store, engine, events).start()
    try:
        store.put(make_record("a"))
        assert engine.started.wait(10)
        store.put(make_record("b"))
        engine.gate.set()
        assert worker.wait_idle(10)
    finally:
        worker.stop()
    statuses = events.of_type("status")
    assert all(client is None for _, _, client in statuses)
    counts = [data["status"]["exec_info"]["queue_remaining"] for _, data, _ in statuses]
    assert counts[0] == 1 and 2 in counts and counts[-1] == 0


def test_worker_survives_an_engine_exception(store):
    def script(record):
        if record.prompt_id == "bad":
            raise ValueError("engine bug")
        return FakeResult()
    engine, events = FakeEngine(script), RecordingEvents()
    store.put(make_record("bad"))
    store.put(make_record("good"))
    worker = Worker(store, engine, events).start()
    try:
        assert worker.wait_idle(10)
    finally:
        worker.stop()
    assert store.status_of("bad") == "error" and store.status_of("good") == "success"
    item = store.history_item("bad")
    assert item["status"]["status_str"] == "error"
    assert item["plexus"]["error"]["exception_type"] == "ValueError"
    errors = events.of_type("execution_error")
    assert len(errors) == 1 and errors[0][2] == "c1" and "engine bug" in errors[0][1]["exception_message"]


def test_heartbeats_while_running(store):
    engine, events = FakeEngine(), RecordingEvents()
    engine.gate = threading.Event()
    beats = threading.Event()
    original = store.heartbeat

    def heartbeat(prompt_id, worker_id=None):
        beats.set()
        return original(prompt_id, worker_id)
    store.heartbeat = heartbeat
    worker = Worker(store, engine, events, heartbeat_interval_s=0.01).start()
    try:
        store.put(make_record("a"))
        assert beats.wait(10)
        assert store.claim_info("a")["worker_id"] == worker.worker_id
        engine.gate.set()
        assert worker.wait_idle(10)
    finally:
        worker.stop()


def test_stop_interrupts_and_requeues_the_running_prompt(store):
    engine, events = FakeEngine(), RecordingEvents()
    engine.gate = threading.Event()
    store.put(make_record("a"))
    store.put(make_record("b"))
    worker = Worker(store, engine, events).start()
    assert engine.started.wait(10)
    worker.stop()
    assert engine.interrupted == ["a"]
    assert not worker.is_alive
    assert [e[1] for e in store.pending()] == ["a", "b"]
    assert store.claim_info("a")["attempts"] == 0


def test_start_recovers_prompts_left_running(store):
    store.put(make_record("a"))
    store.claim("dead-worker")
    engine = FakeEngine()
    worker = Worker(store, engine, RecordingEvents()).start()
    try:
        assert worker.wait_idle(10)
    finally:
        worker.stop()
    assert engine.ran == ["a"] and store.status_of("a") == "success"


class _Echo:
    """An output node: shows its text in the UI."""
    CATEGORY = "test"
    RETURN_TYPES = ()
    OUTPUT_NODE = True
    FUNCTION = "run"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"text": ("STRING", {"default": ""})}}

    def run(self, text):
        return {"ui": {"text": [text]}}


class _Fails(_Echo):
    def run(self, text):
        raise ValueError(f"bad text {text!r}")


def test_worker_with_the_real_engine_fills_history_and_the_default_record_type():
    from execution.events import EventBus
    from execution.executor import Engine
    from execution.executor import PromptRecord as RealRecord
    from execution.registry import NodeRegistry

    registry = NodeRegistry()
    registry.register("Echo", _Echo)
    registry.register("Fails", _Fails)
    bus = EventBus()
    seen = []
    bus.subscribe(seen.append)
    with PromptStore(None) as store:  # default record type: the executor's PromptRecord
        ok = store.put(RealRecord(prompt_id="ok",
                                  prompt={"1": {"class_type": "Echo", "inputs": {"text": "hi"}}},
                                  client_id="c", outputs_to_execute=["1"]))
        assert isinstance(ok, RealRecord)
        store.put(RealRecord(prompt_id="bad", prompt={"1": {"class_type": "Fails", "inputs": {"text": "x"}}},
                             client_id="c", outputs_to_execute=["1"]))
        worker = Worker(store, Engine(registry, bus), bus).start()
        try:
            assert worker.wait_idle(30)
        finally:
            worker.stop()
        item = store.history_item("ok")
        assert item["outputs"] == {"1": {"text": ["hi"]}}
        assert item["status"]["status_str"] == "success" and item["status"]["completed"] is True
        assert [m[0] for m in item["status"]["messages"]][0] == "execution_start"
        assert "1" in item["plexus"]["node_timings_s"]
        bad = store.history_item("bad")
        assert bad["status"]["status_str"] == "error"
        assert "bad text" in bad["plexus"]["error"]["exception_message"]
        assert any(e.type == "status" and e.client_id is None for e in seen)


def test_idle_worker_notices_prompts_added_by_another_process(tmp_path):
    path = tmp_path / "queue.sqlite3"
    with PromptStore(path, record_type=PromptRecord) as mine, \
            PromptStore(path, record_type=PromptRecord) as theirs:
        engine = FakeEngine()
        worker = Worker(mine, engine, RecordingEvents(), idle_recheck_s=0.02).start()
        try:
            theirs.put(make_record("remote"))  # a second connection: no in-process notification
            assert engine.started.wait(10)
            assert worker.wait_idle(10)
        finally:
            worker.stop()
        assert theirs.status_of("remote") == "success"
