"""The front end's dispatcher: the PromptStore stays the source of truth, workers only run prompts.

One thread decides (woken by every change of the queue, every finished run and a membership poll
every ``poll_interval_s``): it reads the pending prompts, asks the :class:`Scheduler` which free
worker takes which, claims each prompt in the store *for that worker* and starts a run thread. The
run thread streams the worker's messages: events go to the EventBus (so to the websocket client
that queued the prompt, in order), files are written by :class:`OutputWriter`, the claim is
heartbeated, and the result is finished in the store (its history item's ``plexus`` block names the
worker and the attempts). A worker lost mid-prompt has its prompt re-queued once, then failed with
the reason (``PromptStore.requeue_lost``); if the worker never started the prompt, the claim is
released without counting an attempt.

It offers the server what the single-machine worker and engine do: ``interrupt``, ``free``,
``stop``, ``wait_idle``, plus ``workers()`` for ``/system_stats`` and ``drain(worker_id)``.
"""
from __future__ import annotations

import logging
import threading
import time
from typing import Any

from cluster.inputs import INPUTS_KEY
from cluster.needs import ModelNeeds, pinned_worker, prompt_needs
from cluster.outputs import OutputWriter
from cluster.pool import WorkerLost, WorkerPool
from cluster.scheduler import Scheduler, pending_from_entries

log = logging.getLogger(__name__)


class Dispatcher:
    def __init__(self, store: Any, events: Any, pool: WorkerPool, outputs: OutputWriter, *,
                 policy: str = "residency", heartbeat_interval_s: float = 5.0, poll_interval_s: float = 1.0,
                 input_files: Any = None):
        self.store = store
        self.events = events
        self.pool = pool
        self.outputs = outputs
        self.input_files = input_files   # prompt -> [[type, relative path, bytes]] shipped with the record
        self.scheduler = Scheduler(policy)
        self.heartbeat_interval_s = heartbeat_interval_s
        self.poll_interval_s = poll_interval_s
        self._cond = threading.Condition()
        self._is_stopping = False
        self._thread: threading.Thread | None = None
        self._runs: dict[str, threading.Thread] = {}    # prompt id -> run thread
        self._unsubscribe: Any = None
        self._dirty = True

    # -- life cycle -------------------------------------------------------------------------------

    def start(self) -> Dispatcher:
        self.store.recover()   # prompts left running by a previous front end: re-queued once
        self._unsubscribe = self.store.subscribe(self._on_queue_change)
        self._thread = threading.Thread(target=self._loop, name="plexus-dispatcher", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout_s: float | None = 30.0, interrupt: bool = True) -> None:
        with self._cond:
            self._is_stopping = True
            self._cond.notify_all()
            runs = list(self._runs.items())
        if interrupt:
            for prompt_id, _ in runs:
                self.interrupt(prompt_id)   # handed back to the queue unrun, as the single-machine worker does
        if self._thread is not None:
            self._thread.join(timeout_s)
        for _, thread in runs:
            thread.join(timeout_s)
        if self._unsubscribe is not None:
            self._unsubscribe()
        self.pool.shutdown()

    @property
    def is_alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def wait_idle(self, timeout_s: float | None = None) -> bool:
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        with self._cond:
            while self._runs or self.store.queue_remaining():
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return False
                self._cond.wait(0.2 if remaining is None else min(remaining, 0.2))
        return True

    def worker_count(self) -> int:
        """How many workers have joined and are not lost."""
        with self._cond:
            return len(self.scheduler.workers)

    def wait_for_workers(self, count: int, timeout_s: float = 120.0) -> bool:
        deadline = time.monotonic() + timeout_s
        with self._cond:
            while len(self.scheduler.workers) < count:
                if time.monotonic() > deadline:
                    return False
                self._cond.wait(0.2)
        return True

    # -- the deciding thread ----------------------------------------------------------------------

    def _on_queue_change(self) -> None:
        with self._cond:
            self._dirty = True
            self._cond.notify_all()
        try:
            self.events.emit("status", {"status": {"exec_info": {"queue_remaining": self.store.queue_remaining()}}})
        except Exception:
            log.exception("emitting status failed")

    def _loop(self) -> None:
        next_poll = 0.0
        while True:
            with self._cond:
                if self._is_stopping:
                    return
                if not self._dirty and time.monotonic() < next_poll:
                    self._cond.wait(max(next_poll - time.monotonic(), 0.0))
                    continue
                self._dirty = False
            if time.monotonic() >= next_poll:
                next_poll = time.monotonic() + self.poll_interval_s
                self._poll_members()
            try:
                self._dispatch()
            except Exception:
                log.exception("dispatching failed")

    def _poll_members(self) -> None:
        try:
            joined, gone = self.pool.poll()
        except Exception:
            log.exception("polling the worker pool failed")
            return
        with self._cond:
            for worker_id, info in joined.items():
                state = self.scheduler.add_worker(worker_id, info, now_s=time.time())
                state.resident = ModelNeeds(frozenset((info.get("resident") or {}).get("files", ())),
                                            frozenset((info.get("resident") or {}).get("loras", ())))
                log.info("worker %s joined (%s)", worker_id, info.get("device", {}).get("name", "?"))
            for worker_id in gone:
                self.scheduler.remove_worker(worker_id)
            for state in list(self.scheduler.workers.values()):   # drained and idle: let it go
                if state.is_draining and state.running is None:
                    self.scheduler.remove_worker(state.worker_id)
                    self.pool.remove(state.worker_id)
            if joined or gone:
                self._dirty = True
            self._cond.notify_all()

    def _dispatch(self) -> None:
        entries = self.store.pending()
        if not entries:
            return
        created = {str(e[1]): e for e in entries}
        pending = pending_from_entries(entries, lambda pid: self._queued_at_s(pid), prompt_needs, pinned_worker)
        with self._cond:
            if self._is_stopping:
                return
            assignments = self.scheduler.plan(pending, time.time())
        for prompt_id, worker_id in assignments:
            record = self.store.claim(worker_id, prompt_id=prompt_id)
            if record is None:
                continue
            needs = prompt_needs(created[prompt_id][2])
            with self._cond:
                self.scheduler.started(worker_id, prompt_id, needs, time.time())
                thread = threading.Thread(target=self._run, args=(worker_id, record), daemon=True,
                                          name=f"plexus-run-{prompt_id[:8]}")
                self._runs[prompt_id] = thread
            thread.start()

    def _queued_at_s(self, prompt_id: str) -> float:
        record = self.store.get(prompt_id)
        created_ms = getattr(record, "create_time_ms", None)
        return (created_ms or 0) / 1000.0

    # -- one run ----------------------------------------------------------------------------------

    def _run(self, worker_id: str, record: Any) -> None:
        prompt_id = record.prompt_id
        resident: ModelNeeds | None = None
        is_started = False
        done = threading.Event()
        beat = threading.Thread(target=self._heartbeat, args=(prompt_id, worker_id, done), daemon=True)
        beat.start()
        try:
            result = None
            payload = record.to_json()
            if self.input_files is not None:
                payload[INPUTS_KEY] = self.input_files(record.prompt)
            for message in self.pool.run(worker_id, payload):
                kind = message[0]
                if kind == "started":
                    is_started = True
                elif kind == "file":
                    _, file_type, subfolder, filename, data = message
                    self.outputs.write(worker_id, file_type, subfolder, filename, data)
                elif kind == "event":
                    _, type_, data, client_id = message
                    self.events.emit(type_, self._renamed(worker_id, type_, data), client_id=client_id)
                elif kind == "result":
                    result, resident_json = message[1], message[2]
                    resident = ModelNeeds(frozenset(resident_json.get("files", ())),
                                          frozenset(resident_json.get("loras", ())))
            if result is None:
                raise WorkerLost(worker_id, "the stream ended without a result")
            result["outputs"] = {node: self.outputs.rename_ui(worker_id, ui)
                                 for node, ui in (result.get("outputs") or {}).items()}
            result["messages"] = [[m[0], self._renamed(worker_id, m[0], m[1])] for m in result.get("messages") or []]
            if self._is_stopping and result.get("status") == "interrupted":
                self.store.release(prompt_id, worker_id)      # stopped by our shutdown: runs again later
            elif self.store.finish(prompt_id, result, worker_id=worker_id) is None:
                log.warning("prompt %s was no longer claimed by %s when it finished", prompt_id, worker_id)
        except WorkerLost as lost:
            self._lost(worker_id, record, lost, is_started)
        except Exception as exc:   # a bug here must not strand the claim
            log.exception("running prompt %s on %s failed", prompt_id, worker_id)
            self._lost(worker_id, record, WorkerLost(worker_id, f"{type(exc).__name__}: {exc}"), is_started)
        finally:
            done.set()
            with self._cond:
                self._runs.pop(prompt_id, None)
                self.scheduler.finished(worker_id, time.time(), resident)
                self._dirty = True
                self._cond.notify_all()

    def _lost(self, worker_id: str, record: Any, lost: WorkerLost, is_started: bool) -> None:
        log.warning("%s (prompt %s)", lost, record.prompt_id)
        with self._cond:
            self.scheduler.remove_worker(worker_id)
        forget = getattr(self.pool, "forget", None)
        if forget is not None:
            forget(worker_id)
        if not is_started or self._is_stopping:
            self.store.release(record.prompt_id, worker_id)
            return
        outcome = self.store.requeue_lost(record.prompt_id, worker_id, lost.reason)
        if outcome == "failed":
            item = self.store.history_item(record.prompt_id) or {}
            error = (item.get("plexus") or {}).get("error")
            if error:
                self.events.emit("execution_error", error, client_id=record.client_id)

    def _renamed(self, worker_id: str, type_: str, data: Any) -> Any:
        if type_ == "executed" and isinstance(data, dict) and "output" in data:
            return {**data, "output": self.outputs.rename_ui(worker_id, data["output"])}
        return data

    def _heartbeat(self, prompt_id: str, worker_id: str, done: threading.Event) -> None:
        while not done.wait(self.heartbeat_interval_s):
            try:
                self.store.heartbeat(prompt_id, worker_id)
            except Exception:
                log.exception("heartbeat for %s failed", prompt_id)

    # -- what the server asks ---------------------------------------------------------------------

    def interrupt(self, prompt_id: str | None = None) -> None:
        """Interrupt ``prompt_id`` on the worker running it (None: every running prompt)."""
        with self._cond:
            targets = [(w.worker_id, w.running) for w in self.scheduler.workers.values()
                       if w.running is not None and (prompt_id is None or w.running == prompt_id)]
        for worker_id, running in targets:
            self.pool.interrupt(worker_id, running)

    def free(self, *, unload_models: bool = False, free_memory: bool = False) -> None:
        """``/free`` on every worker (each between its prompts)."""
        with self._cond:
            ids = list(self.scheduler.workers)
        for worker_id in ids:
            self.pool.free(worker_id, unload_models=unload_models, free_memory=free_memory)

    def drain(self, worker_id: str) -> None:
        """Give the worker no more prompts; it leaves once its running prompt ends."""
        with self._cond:
            self.scheduler.drain(worker_id)
            self._dirty = True
            self._cond.notify_all()

    def workers(self, timeout_s: float = 2.0) -> list[dict[str, Any]]:
        """``/system_stats``'s ``workers`` list: id, device, memory, resident models, state."""
        with self._cond:
            states = list(self.scheduler.workers.values())
        out = []
        for state in states:
            stats = self.pool.stats(state.worker_id, timeout_s) if state.running is None else dict(state.info)
            out.append({"id": state.worker_id, "device": stats.get("device"), "memory": stats.get("memory"),
                        "resident": stats.get("resident") or state.resident.to_json(),
                        "models": stats.get("models", []), "host": stats.get("host"),
                        "running": state.running, "draining": state.is_draining,
                        "prompts_run": state.prompts_run})
        return out


class ClusterEngine:
    """What the server calls ``engine``: validation on the front end's own registry, interrupts and
    cache clearing sent to the workers."""

    def __init__(self, local_engine: Any, dispatcher: Dispatcher):
        self.local = local_engine
        self.dispatcher = dispatcher
        self.registry = local_engine.registry
        self.events = local_engine.events

    def validate(self, *args: Any, **kwargs: Any) -> Any:
        return self.local.validate(*args, **kwargs)

    def interrupt(self, prompt_id: str | None = None) -> None:
        self.dispatcher.interrupt(prompt_id)

    def clear_cache(self) -> None:
        self.dispatcher.free(free_memory=True)

    def close(self) -> None:
        self.local.close()
