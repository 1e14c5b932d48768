"""The durable prompt queue and history, kept in SQLite.

One table holds the queue (pending and running prompts), another the finished prompts (history).
Every state change is one transaction, so a crash at any moment leaves each accepted prompt either
pending, running or in history, never nowhere. The queue has claim / heartbeat semantics so that
many workers (one process each, later on Ray) can share one file:

- ``put`` accepts a prompt (committed before it returns, so an answered POST /prompt is durable);
- ``claim(worker_id)`` moves the pending prompt with the lowest ``number`` to running;
- ``heartbeat`` stamps a running prompt while it runs;
- ``finish`` moves it from the queue to history in one transaction;
- ``recover`` (on start, or for claims whose heartbeat went stale) re-queues a prompt left running by
  a crash once, and marks it failed in history if it had already been retried.

Records are self-contained: the stored row is the PromptRecord's JSON, so any worker can run it.
The shapes returned by :meth:`PromptStore.queue_json`, :meth:`PromptStore.history` and
:meth:`PromptStore.history_item` are ComfyUI's ``GET /queue`` and ``GET /history`` shapes.
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

from execution.errors import PlexusError

log = logging.getLogger(__name__)

DEFAULT_MAX_HISTORY = 10_000
STORE_FILENAME = "prompt_store.sqlite3"
MAX_ATTEMPTS = 2  # the first run plus one retry after a crash
SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS queue (
    prompt_id       TEXT PRIMARY KEY,
    number          NUMERIC NOT NULL,
    seq             INTEGER NOT NULL,
    state           TEXT NOT NULL CHECK (state IN ('pending', 'running')),
    record          TEXT NOT NULL,
    worker_id       TEXT,
    attempts        INTEGER NOT NULL DEFAULT 0,
    claimed_at_s    REAL,
    heartbeat_at_s  REAL
);
CREATE INDEX IF NOT EXISTS queue_order ON queue (state, number, seq);
CREATE TABLE IF NOT EXISTS history (
    seq             INTEGER PRIMARY KEY AUTOINCREMENT,
    prompt_id       TEXT NOT NULL UNIQUE,
    status          TEXT NOT NULL,
    item            TEXT NOT NULL,
    finished_at_s   REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS counters (
    name            TEXT PRIMARY KEY,
    value           INTEGER NOT NULL
);
"""



def store_path(user_dir: str | Path) -> Path:
    """Where the server keeps the store: a file in the user directory (``user/``)."""
    return Path(user_dir) / STORE_FILENAME


def record_to_json(record: Any) -> dict[str, Any]:
    """A PromptRecord (dataclass, object with ``to_json``, or plain mapping) as a JSON-ready dict."""
    if isinstance(record, Mapping):
        return dict(record)
    to_json = getattr(record, "to_json", None)
    if callable(to_json):
        return dict(to_json())
    if dataclasses.is_dataclass(record) and not isinstance(record, type):
        return dataclasses.asdict(record)
    raise TypeError(f"cannot store a prompt record of type {type(record).__name__}")


def _default_record_type() -> Any:
    from execution.executor import PromptRecord  # late: the store must import without the executor
    return PromptRecord


def _field(obj: Any, name: str, default: Any = None) -> Any:
    if isinstance(obj, Mapping):
        return obj.get(name, default)
    return getattr(obj, name, default)


def _now_ms() -> int:
    return int(time.time() * 1000)


class PromptStore:
    """The queue and history of prompts, in SQLite at ``path`` (``None``: in memory).

    Thread-safe: one connection guarded by a lock; the server thread and the worker thread share it.
    ``record_type`` turns stored JSON back into records (default: ``execution.executor.PromptRecord``,
    built with its ``from_json`` when it has one, else with keyword arguments).
    """

    def __init__(self, path: str | Path | None = None, *, max_history: int = DEFAULT_MAX_HISTORY,
                 record_type: Any = None):
        self.path = None if path is None else Path(path)
        self.max_history = max_history
        self._record_type = record_type
        self._lock = threading.RLock()
        self._changed = threading.Condition(self._lock)
        self._listeners: list[Callable[[], None]] = []
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(":memory:" if self.path is None else str(self.path),
                                   check_same_thread=False, isolation_level=None, timeout=30.0)
        self._db.row_factory = sqlite3.Row
        with self._lock:
            if self.path is not None:
                self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.execute("PRAGMA busy_timeout=30000")
            with self._transaction():
                for statement in _SCHEMA.split(";"):
                    if statement.strip():
                        self._db.execute(statement)
                self._db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")

    # -- plumbing ---------------------------------------------------------------------------------

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def __enter__(self) -> PromptStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        """One write transaction (taking SQLite's write lock up front); callers hold ``self._lock``."""
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield self._db
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    def subscribe(self, callback: Callable[[], None]) -> Callable[[], None]:
        """Call ``callback()`` (outside the lock) after every change of the queue; returns unsubscribe."""
        with self._lock:
            self._listeners.append(callback)

        def unsubscribe() -> None:
            with self._lock:
                if callback in self._listeners:
                    self._listeners.remove(callback)
        return unsubscribe

    def _queue_changed(self) -> None:
        """Wake waiters and tell listeners; call after the transaction, without holding the lock."""
        with self._lock:
            self._changed.notify_all()
            listeners = list(self._listeners)
        for callback in listeners:
            try:
                callback()
            except Exception:  # the change is committed; a failing listener must not undo the call
                log.exception("a prompt store listener failed")

    def wake(self) -> None:
        """Wake every thread blocked in :meth:`wait_for_pending` (used to stop workers)."""
        with self._lock:
            self._changed.notify_all()

    def wait_for_pending(self, should_stop: Callable[[], bool] = lambda: False,
                         timeout_s: float | None = None) -> bool:
        """Block until a prompt is pending (True) or ``should_stop()`` / the timeout (False).

        Waits on a condition variable notified by every change in this process; another process
        adding work is seen at the latest after ``timeout_s``.
        """
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        with self._lock:
            while True:
                if should_stop():
                    return False
                if self._count("pending"):
                    return True
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return False
                self._changed.wait(remaining)

    def _make_record(self, data: dict[str, Any]) -> Any:
        record_type = self._record_type or _default_record_type()
        from_json = getattr(record_type, "from_json", None)
        return from_json(data) if callable(from_json) else record_type(**data)

    def _count(self, state: str) -> int:
        return self._db.execute("SELECT COUNT(*) FROM queue WHERE state = ?", (state,)).fetchone()[0]

    def _next_counter(self, name: str) -> int:
        row = self._db.execute("SELECT value FROM counters WHERE name = ?", (name,)).fetchone()
        value = 0 if row is None else row[0]
        self._db.execute("INSERT INTO counters (name, value) VALUES (?, ?) "
                         "ON CONFLICT(name) DO UPDATE SET value = excluded.value", (name, value + 1))
        return value

    # -- the queue --------------------------------------------------------------------------------

    def put(self, record: Any, front: bool = False, number: float | None = None) -> Any:
        """Accept a prompt; durable when this returns. Returns the record with its ``number`` set.

        ``number`` orders the queue (lowest runs first): by default the next number of a counter that
        survives restarts; ``front=True`` picks a number lower than everything queued; an explicit
        ``number`` (ComfyUI's POST /prompt ``number``) is used as given.
        """
        data = record_to_json(record)
        prompt_id = str(data["prompt_id"])
        with self._lock:
            with self._transaction() as db:
                exists = db.execute("SELECT 1 FROM queue WHERE prompt_id = ? UNION ALL "
                                    "SELECT 1 FROM history WHERE prompt_id = ?",
                                    (prompt_id, prompt_id)).fetchone()
                if exists:
                    raise PlexusError("duplicate_prompt_id", f"Prompt id {prompt_id!r} is already queued "
                                      f"or in history", "send a new prompt_id, or none to get one assigned")
                seq = self._next_counter("seq")
                if number is None and front:
                    lowest = db.execute("SELECT MIN(number) FROM queue").fetchone()[0]
                    number = min(lowest or 0, 0) - 1
                elif number is None:
                    number = self._next_counter("number")
                data["number"] = number
                db.execute("INSERT INTO queue (prompt_id, number, seq, state, record) VALUES (?, ?, ?, ?, ?)",
                           (prompt_id, number, seq, "pending", json.dumps(data)))
        self._queue_changed()
        return self._make_record(data)

    def claim(self, worker_id: str, prompt_id: str | None = None) -> Any | None:
        """Take the pending prompt with the lowest number (or ``prompt_id``, when given: the one a
        dispatcher routed to this worker) for ``worker_id``; None when it is not pending."""
        now_s = time.time()
        with self._lock:
            with self._transaction() as db:
                if prompt_id is None:
                    row = db.execute("SELECT prompt_id, record FROM queue WHERE state = 'pending' "
                                     "ORDER BY number, seq LIMIT 1").fetchone()
                else:
                    row = db.execute("SELECT prompt_id, record FROM queue WHERE state = 'pending' "
                                     "AND prompt_id = ?", (prompt_id,)).fetchone()
                if row is None:
                    return None
                db.execute("UPDATE queue SET state = 'running', worker_id = ?, attempts = attempts + 1, "
                           "claimed_at_s = ?, heartbeat_at_s = ? WHERE prompt_id = ?",
                           (worker_id, now_s, now_s, row["prompt_id"]))
        self._queue_changed()
        return self._make_record(json.loads(row["record"]))

    def heartbeat(self, prompt_id: str, worker_id: str | None = None) -> bool:
        """Stamp a running prompt as alive; False if it is no longer running (for this worker)."""
        with self._lock:
            with self._transaction() as db:
                query = "UPDATE queue SET heartbeat_at_s = ? WHERE prompt_id = ? AND state = 'running'"
                args: tuple[Any, ...] = (time.time(), prompt_id)
                if worker_id is not None:
                    query += " AND worker_id = ?"
                    args += (worker_id,)
                return db.execute(query, args).rowcount == 1

    def finish(self, prompt_id: str, result: Any, worker_id: str | None = None) -> dict[str, Any] | None:
        """Move a running prompt to history with its RunResult, in one transaction.

        Returns the history item, or None when the prompt is not running (for ``worker_id``): its claim
        was lost, e.g. re-queued by ``recover`` after the heartbeat went stale.
        """
        end_ms = _now_ms()
        with self._lock:
            with self._transaction() as db:
                query = "SELECT * FROM queue WHERE prompt_id = ? AND state = 'running'"
                args: tuple[Any, ...] = (prompt_id,)
                if worker_id is not None:
                    query += " AND worker_id = ?"
                    args += (worker_id,)
                row = db.execute(query, args).fetchone()
                if row is None:
                    return None
                item = _history_item(json.loads(row["record"]), result, row["attempts"],
                                     start_ms=int((row["claimed_at_s"] or 0) * 1000), end_ms=end_ms,
                                     worker_id=row["worker_id"])
                self._move_to_history(db, prompt_id, item)
        self._queue_changed()
        return item

    def _move_to_history(self, db: sqlite3.Connection, prompt_id: str, item: dict[str, Any]) -> None:
        db.execute("DELETE FROM queue WHERE prompt_id = ?", (prompt_id,))
        db.execute("INSERT OR REPLACE INTO history (prompt_id, status, item, finished_at_s) "
                   "VALUES (?, ?, ?, ?)",
                   (prompt_id, item["plexus"]["status"], json.dumps(item), time.time()))
        db.execute("DELETE FROM history WHERE seq <= (SELECT seq FROM history ORDER BY seq DESC "
                   "LIMIT 1 OFFSET ?)", (self.max_history,))

    def release(self, prompt_id: str, worker_id: str | None = None) -> bool:
        """Hand a running prompt back to the queue unrun (a worker shutting down); the claim is not
        counted as an attempt."""
        with self._lock:
            with self._transaction() as db:
                query = ("UPDATE queue SET state = 'pending', worker_id = NULL, claimed_at_s = NULL, "
                         "heartbeat_at_s = NULL, attempts = MAX(attempts - 1, 0) "
                         "WHERE prompt_id = ? AND state = 'running'")
                args: tuple[Any, ...] = (prompt_id,)
                if worker_id is not None:
                    query += " AND worker_id = ?"
                    args += (worker_id,)
                released = db.execute(query, args).rowcount == 1
        if released:
            self._queue_changed()
        return released

    def requeue_lost(self, prompt_id: str, worker_id: str | None = None, reason: str = "") -> str | None:
        """The worker running ``prompt_id`` died mid-prompt: re-queue it once (``"requeued"``), or, when it
        had already been retried, put it in history as failed with ``reason`` (``"failed"``). None when
        the prompt is not running (for ``worker_id``)."""
        with self._lock:
            with self._transaction() as db:
                query = "SELECT * FROM queue WHERE prompt_id = ? AND state = 'running'"
                args: tuple[Any, ...] = (prompt_id,)
                if worker_id is not None:
                    query += " AND worker_id = ?"
                    args += (worker_id,)
                row = db.execute(query, args).fetchone()
                if row is None:
                    return None
                outcome = self._abandon(db, row, reason)
        self._queue_changed()
        return outcome

    def _abandon(self, db: sqlite3.Connection, row: sqlite3.Row, reason: str = "") -> str:
        prompt_id = row["prompt_id"]
        if row["attempts"] < MAX_ATTEMPTS:
            db.execute("UPDATE queue SET state = 'pending', worker_id = NULL, "
                       "claimed_at_s = NULL, heartbeat_at_s = NULL WHERE prompt_id = ?", (prompt_id,))
            return "requeued"
        record = json.loads(row["record"])
        error = _worker_lost_error(record, row["worker_id"], row["attempts"], reason)
        result = {"status": "error", "outputs": {}, "error": error, "node_timings_s": {},
                  "meta": {}, "messages": [["execution_error", error]]}
        item = _history_item(record, result, row["attempts"], start_ms=int((row["claimed_at_s"] or 0) * 1000),
                             end_ms=_now_ms(), worker_id=row["worker_id"])
        self._move_to_history(db, prompt_id, item)
        return "failed"

    def recover(self, stale_after_s: float | None = None) -> dict[str, str]:
        """Deal with prompts left running by a crashed worker; returns ``{prompt_id: "requeued"|"failed"}``.

        With ``stale_after_s=None`` (start-up of the only worker process) every running prompt is
        treated as abandoned; otherwise only those whose last heartbeat is older than that. A prompt is
        re-queued (keeping its number, so it runs next) if it was claimed fewer than
        ``MAX_ATTEMPTS`` times, else it goes to history as failed with a message saying why.
        """
        outcome: dict[str, str] = {}
        now_s = time.time()
        with self._lock:
            with self._transaction() as db:
                rows = db.execute("SELECT * FROM queue WHERE state = 'running' "
                                  "ORDER BY number, seq").fetchall()
                for row in rows:
                    if stale_after_s is not None and (row["heartbeat_at_s"] or 0) > now_s - stale_after_s:
                        continue
                    outcome[row["prompt_id"]] = self._abandon(db, row)
        if outcome:
            self._queue_changed()
        return outcome

    def delete_pending(self, prompt_ids: Iterable[str]) -> int:
        """Remove pending prompts (running ones are left alone: interrupt them instead)."""
        ids = [str(i) for i in prompt_ids]
        with self._lock:
            with self._transaction() as db:
                deleted = sum(db.execute("DELETE FROM queue WHERE prompt_id = ? AND state = 'pending'",
                                         (i,)).rowcount for i in ids)
        if deleted:
            self._queue_changed()
        return deleted

    def clear_pending(self) -> int:
        with self._lock:
            with self._transaction() as db:
                deleted = db.execute("DELETE FROM queue WHERE state = 'pending'").rowcount
        if deleted:
            self._queue_changed()
        return deleted

    def get(self, prompt_id: str) -> Any | None:
        """The record of a queued (pending or running) prompt."""
        with self._lock:
            row = self._db.execute("SELECT record FROM queue WHERE prompt_id = ?", (prompt_id,)).fetchone()
        return None if row is None else self._make_record(json.loads(row["record"]))

    def _entries(self, state: str) -> list[list[Any]]:
        with self._lock:
            rows = self._db.execute("SELECT record FROM queue WHERE state = ? ORDER BY number, seq",
                                    (state,)).fetchall()
        return [_queue_entry(json.loads(row["record"])) for row in rows]

    def pending(self) -> list[list[Any]]:
        """Pending prompts in run order, each ComfyUI's
        ``[number, prompt_id, prompt, extra_data, outputs_to_execute]``."""
        return self._entries("pending")

    def running(self) -> list[list[Any]]:
        """Running prompts, same entry shape as :meth:`pending`."""
        return self._entries("running")

    def queue_json(self) -> dict[str, list[list[Any]]]:
        """ComfyUI's ``GET /queue`` body."""
        with self._lock:
            return {"queue_running": self.running(), "queue_pending": self.pending()}

    def queue_remaining(self) -> int:
        """Pending plus running, as ComfyUI counts ``exec_info.queue_remaining``."""
        with self._lock:
            return self._db.execute("SELECT COUNT(*) FROM queue").fetchone()[0]

    def claim_info(self, prompt_id: str) -> dict[str, Any] | None:
        """Bookkeeping of a queued prompt: state, worker_id, attempts, claimed_at_s, heartbeat_at_s."""
        with self._lock:
            row = self._db.execute("SELECT state, worker_id, attempts, claimed_at_s, heartbeat_at_s "
                                   "FROM queue WHERE prompt_id = ?", (prompt_id,)).fetchone()
        return None if row is None else dict(row)

    # -- history ----------------------------------------------------------------------------------

    def history(self, max_items: int | None = None, offset: int = 0) -> dict[str, dict[str, Any]]:
        """ComfyUI's ``GET /history`` body: ``{prompt_id: item}``, oldest first.

        As in ComfyUI, ``offset`` counts from the oldest item; a negative offset with ``max_items``
        gives the newest ``max_items`` items (ComfyUI's default ``offset=-1``).
        """
        with self._lock:
            total = self._db.execute("SELECT COUNT(*) FROM history").fetchone()[0]
            if offset < 0:
                offset = max(total - max_items, 0) if max_items is not None else 0
            limit = -1 if max_items is None else max_items
            rows = self._db.execute("SELECT prompt_id, item FROM history ORDER BY seq LIMIT ? OFFSET ?",
                                    (limit, offset)).fetchall()
        return {row["prompt_id"]: json.loads(row["item"]) for row in rows}

    def history_item(self, prompt_id: str) -> dict[str, Any] | None:
        """One history item (``GET /history/{id}`` answers ``{id: item}``), or None."""
        with self._lock:
            row = self._db.execute("SELECT item FROM history WHERE prompt_id = ?", (prompt_id,)).fetchone()
        return None if row is None else json.loads(row["item"])

    def history_count(self) -> int:
        with self._lock:
            return self._db.execute("SELECT COUNT(*) FROM history").fetchone()[0]

    def delete_history(self, prompt_ids: Iterable[str]) -> int:
        ids = [str(i) for i in prompt_ids]
        with self._lock:
            with self._transaction() as db:
                return sum(db.execute("DELETE FROM history WHERE prompt_id = ?", (i,)).rowcount for i in ids)

    def clear_history(self) -> int:
        with self._lock:
            with self._transaction() as db:
                return db.execute("DELETE FROM history").rowcount

    def status_of(self, prompt_id: str) -> str | None:
        """``"pending"``, ``"running"``, ``"success"``, ``"error"``, ``"interrupted"`` or None (unknown)."""
        with self._lock:
            row = self._db.execute("SELECT state FROM queue WHERE prompt_id = ?", (prompt_id,)).fetchone()
            if row is not None:
                return row["state"]
            row = self._db.execute("SELECT status FROM history WHERE prompt_id = ?", (prompt_id,)).fetchone()
        return None if row is None else row["status"]


def _queue_entry(record: dict[str, Any]) -> list[Any]:
    return [record.get("number"), record["prompt_id"], record.get("prompt", {}),
            record.get("extra_data", {}), list(record.get("outputs_to_execute") or [])]


def _history_item(record: dict[str, Any], result: Any, attempts: int, *, start_ms: int,
                  end_ms: int, worker_id: str | None = None) -> dict[str, Any]:
    """ComfyUI's history item, plus a ``plexus`` key with per-node timings and bookkeeping."""
    status = _field(result, "status", "error")
    return {
        "prompt": _queue_entry(record),
        "outputs": dict(_field(result, "outputs", None) or {}),
        "status": {"status_str": "success" if status == "success" else "error",
                   "completed": status == "success",
                   "messages": [list(m) for m in (_field(result, "messages", None) or [])]},
        "meta": dict(_field(result, "meta", None) or {}),
        "plexus": {
            "status": status,
            "node_timings_s": dict(_field(result, "node_timings_s", None) or {}),
            "error": _field(result, "error", None),
            "attempts": attempts,
            "worker": worker_id,
            "create_time_ms": record.get("create_time_ms"),
            "execution_start_time_ms": start_ms,
            "execution_end_time_ms": end_ms,
        },
    }


def _worker_lost_error(record: dict[str, Any], worker_id: str | None, attempts: int,
                       reason: str = "") -> dict[str, Any]:
    """An ``execution_error`` payload for a prompt whose worker died on every attempt."""
    message = (f"Prompt {record['prompt_id']} was running when its worker ({worker_id or 'unknown'}) stopped "
               f"without finishing it, {attempts} times; it is not retried again"
               + (f" (last: {reason})" if reason else "") + ". Check the server log for "
               f"a crash or an out-of-memory kill, then queue the prompt again.")
    return {"prompt_id": record["prompt_id"], "node_id": None, "node_type": None, "executed": [],
            "exception_message": message, "exception_type": "WorkerLost", "traceback": [],
            "current_inputs": {}, "current_outputs": {}, "timestamp": _now_ms()}
