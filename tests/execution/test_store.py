"""PromptStore: queue order, front, delete, clear, history shape and bound, persistence, recovery."""
from __future__ import annotations

import sqlite3
import threading

import pytest

from execution.errors import PlexusError
from execution.store import MAX_ATTEMPTS, PromptStore
from tests.execution.store_helpers import FakeResult, PromptRecord, make_record


@pytest.fixture
def store():
    with PromptStore(None, record_type=PromptRecord) as s:
        yield s


def ids(entries):
    return [entry[1] for entry in entries]


def test_queue_is_fifo_and_claim_takes_the_lowest_number(store):
    for name in "abc":
        store.put(make_record(name))
    assert ids(store.pending()) == ["a", "b", "c"]
    first = store.claim("w1")
    assert first.prompt_id == "a" and first.number == 0
    assert ids(store.running()) == ["a"] and ids(store.pending()) == ["b", "c"]
    assert store.status_of("a") == "running" and store.status_of("b") == "pending"
    assert store.queue_remaining() == 3


def test_front_goes_before_everything_pending(store):
    store.put(make_record("a"))
    store.put(make_record("b"))
    front = store.put(make_record("f1"), front=True)
    front2 = store.put(make_record("f2"), front=True)
    assert front.number < 0 and front2.number < front.number
    assert ids(store.pending()) == ["f2", "f1", "a", "b"]
    assert store.claim("w").prompt_id == "f2"


def test_explicit_number_is_kept(store):
    store.put(make_record("a"))
    store.put(make_record("b"))
    store.put(make_record("x"), number=0.5)
    assert [(e[0], e[1]) for e in store.pending()] == [(0, "a"), (0.5, "x"), (1, "b")]


def test_queue_entries_have_comfyui_shape(store):
    record = make_record("a", prompt={"1": {"class_type": "K", "inputs": {}}}, extra_data={"e": 1},
                         outputs_to_execute=["1"])
    store.put(record)
    assert store.queue_json() == {"queue_running": [],
                                  "queue_pending": [[0, "a", {"1": {"class_type": "K", "inputs": {}}},
                                                     {"e": 1}, ["1"]]]}


def test_delete_and_clear_touch_only_pending(store):
    for name in "abcd":
        store.put(make_record(name))
    store.claim("w")  # a is running
    assert store.delete_pending(["b", "a", "zz"]) == 1
    assert ids(store.pending()) == ["c", "d"] and ids(store.running()) == ["a"]
    assert store.clear_pending() == 2
    assert store.pending() == [] and ids(store.running()) == ["a"]
    assert store.status_of("b") is None


def test_duplicate_prompt_id_is_refused(store):
    store.put(make_record("a"))
    with pytest.raises(PlexusError, match="already queued"):
        store.put(make_record("a"))


def test_finish_moves_to_history_in_comfyui_shape(store):
    store.put(make_record("a", extra_data={"client_id": "c"}))
    store.claim("w")
    messages = [["execution_start", {"prompt_id": "a", "timestamp": 1}],
                ["execution_success", {"prompt_id": "a", "timestamp": 2}]]
    result = FakeResult(outputs={"9": {"images": [{"filename": "x.png", "subfolder": "", "type": "output"}]}},
                        messages=messages, node_timings_s={"9": 0.25},
                        meta={"9": {"node_id": "9", "display_node": "9", "parent_node": None,
                                    "real_node_id": "9"}})
    item = store.finish("a", result, worker_id="w")
    assert item == store.history_item("a")
    assert item["prompt"] == [0, "a", make_record("a").prompt, {"client_id": "c"}, ["1"]]
    assert item["outputs"] == result.outputs
    assert item["status"] == {"status_str": "success", "completed": True, "messages": messages}
    assert item["meta"] == result.meta
    assert item["plexus"]["node_timings_s"] == {"9": 0.25}
    assert store.status_of("a") == "success" and store.queue_remaining() == 0
    assert list(store.history()) == ["a"]


@pytest.mark.parametrize("status", ["error", "interrupted"])
def test_failed_runs_are_errors_in_comfyui_terms(store, status):
    store.put(make_record("a"))
    store.claim("w")
    item = store.finish("a", {"status": status, "outputs": {}, "messages": [], "error": {"x": 1}})
    assert item["status"]["status_str"] == "error" and item["status"]["completed"] is False
    assert store.status_of("a") == status


def test_finish_by_a_worker_that_lost_the_claim_is_ignored(store):
    store.put(make_record("a"))
    store.claim("w1")
    assert store.finish("a", FakeResult(), worker_id="w2") is None
    assert store.heartbeat("a", "w2") is False and store.heartbeat("a", "w1") is True
    assert store.status_of("a") == "running"


def test_history_is_bounded_oldest_dropped():
    with PromptStore(None, max_history=3, record_type=PromptRecord) as store:
        for i in range(5):
            store.put(make_record(f"p{i}"))
            store.claim("w")
            store.finish(f"p{i}", FakeResult())
        assert list(store.history()) == ["p2", "p3", "p4"]
        assert store.history_item("p0") is None and store.history_count() == 3


def test_history_paging_follows_comfyui(store):
    for i in range(5):
        store.put(make_record(f"p{i}"))
        store.claim("w")
        store.finish(f"p{i}", FakeResult())
    assert list(store.history(max_items=2)) == ["p0", "p1"]
    assert list(store.history(max_items=2, offset=-1)) == ["p3", "p4"]  # ComfyUI's default: newest
    assert list(store.history(max_items=2, offset=2)) == ["p2", "p3"]
    assert store.delete_history(["p1", "nope"]) == 1
    assert list(store.history()) == ["p0", "p2", "p3", "p4"]
    assert store.clear_history() == 4 and store.history() == {}


def test_pending_and_history_survive_reopening(tmp_path):
    path = tmp_path / "user" / "queue.sqlite3"
    with PromptStore(path, record_type=PromptRecord) as store:
        for name in "abc":
            store.put(make_record(name))
        store.put(make_record("f"), front=True)
        store.claim("w")  # f
        store.finish("f", FakeResult(outputs={"1": {"text": ["f"]}}))
    with PromptStore(path, record_type=PromptRecord) as store:
        assert ids(store.pending()) == ["a", "b", "c"]
        assert store.history_item("f")["outputs"] == {"1": {"text": ["f"]}}
        assert store.put(make_record("d")).number == 3  # the number counter survives too
    mode = sqlite3.connect(path).execute("PRAGMA journal_mode").fetchone()[0]
    assert mode == "wal"


def test_recover_requeues_once_then_marks_failed(store):
    store.put(make_record("a"))
    store.put(make_record("b"))
    assert store.claim("w").prompt_id == "a"
    assert store.recover() == {"a": "requeued"}
    assert ids(store.pending()) == ["a", "b"]  # keeps its number: runs next
    assert store.claim("w").prompt_id == "a"
    assert store.claim_info("a")["attempts"] == MAX_ATTEMPTS
    assert store.recover() == {"a": "failed"}
    item = store.history_item("a")
    assert item["status"]["status_str"] == "error"
    assert item["status"]["messages"][0][0] == "execution_error"
    assert "not retried again" in item["plexus"]["error"]["exception_message"]
    assert ids(store.pending()) == ["b"]


def test_recover_with_staleness_leaves_live_claims_alone(store):
    store.put(make_record("a"))
    store.claim("w")
    assert store.recover(stale_after_s=60) == {}
    assert store.recover(stale_after_s=0) == {"a": "requeued"}


def test_release_hands_a_prompt_back_without_counting_the_attempt(store):
    store.put(make_record("a"))
    store.claim("w")
    assert store.release("a", "w")
    assert store.claim_info("a") == {"state": "pending", "worker_id": None, "attempts": 0,
                                     "claimed_at_s": None, "heartbeat_at_s": None}


def test_wait_for_pending_wakes_on_put_without_polling(store):
    woke = []
    waiter = threading.Thread(target=lambda: woke.append(store.wait_for_pending()))
    waiter.start()
    store.put(make_record("a"))
    waiter.join(10)
    assert woke == [True]
    stop = threading.Event()
    store.claim("w")
    waiter = threading.Thread(target=lambda: woke.append(store.wait_for_pending(stop.is_set)))
    waiter.start()
    stop.set()
    store.wake()
    waiter.join(10)
    assert woke == [True, False]


def test_listeners_hear_every_queue_change(store):
    heard = []
    unsubscribe = store.subscribe(lambda: heard.append(store.queue_remaining()))
    store.put(make_record("a"))
    store.put(make_record("b"))
    store.delete_pending(["b"])
    store.claim("w")
    store.finish("a", FakeResult())
    unsubscribe()
    store.put(make_record("c"))
    assert heard == [1, 2, 1, 1, 0]


def test_concurrent_puts_and_claims_lose_nothing(store):
    def producer(k):
        for i in range(25):
            store.put(make_record(f"{k}-{i}"))
    claimed = []

    def consumer():
        while len(claimed) < 100:
            record = store.claim("w")
            if record is not None:
                claimed.append(record.prompt_id)
                store.finish(record.prompt_id, FakeResult())
            else:
                store.wait_for_pending(lambda: len(claimed) >= 100, timeout_s=1)
    threads = [threading.Thread(target=producer, args=(k,)) for k in range(4)]
    threads.append(threading.Thread(target=consumer))
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert sorted(claimed) == sorted(f"{k}-{i}" for k in range(4) for i in range(25))
    assert store.history_count() == 100


def test_store_path_is_in_the_user_directory(tmp_path):
    from execution.store import store_path
    assert store_path(tmp_path / "user") == tmp_path / "user" / "prompt_store.sqlite3"
