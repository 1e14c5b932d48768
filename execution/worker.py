"""The worker thread: claims prompts from the store, runs them on the engine, records the result.

One worker per process. It sleeps on the store's condition variable until a prompt is pending (no
polling loop), claims it, runs ``engine.execute(record)`` while a small timer thread heartbeats the
claim, and finishes the prompt with the RunResult. Whatever the engine raises, the prompt ends in
history as an error and the worker carries on. Every change of the queue, made by this worker or by
the server thread, is announced to all clients as ComfyUI's ``status`` event.
"""
from __future__ import annotations

import logging
import threading
import time
import traceback
import uuid
from typing import Any

from execution.store import PromptStore

log = logging.getLogger(__name__)

DEFAULT_HEARTBEAT_INTERVAL_S = 5.0


class Worker:
    """Runs queued prompts one at a time on ``engine`` in a background thread.

    ``start()`` first calls ``store.recover(recover_stale_after_s)`` (``None``: every prompt left
    running is from a crash of this process's predecessor); ``stop()`` ends the thread. With
    ``interrupt=True`` a prompt still running is interrupted and handed back to the queue unrun.
    The wait for work is woken by changes made in this process; when other processes add prompts to
    the same database, ``idle_recheck_s`` bounds how long an idle worker takes to notice them.
    """

    def __init__(self, store: PromptStore, engine: Any, events: Any, *, worker_id: str | None = None,
                 heartbeat_interval_s: float = DEFAULT_HEARTBEAT_INTERVAL_S,
                 recover_stale_after_s: float | None = None, idle_recheck_s: float | None = None):
        self.store = store
        self.engine = engine
        self.events = events
        self.worker_id = worker_id or f"worker-{uuid.uuid4().hex[:12]}"
        self.heartbeat_interval_s = heartbeat_interval_s
        self.recover_stale_after_s = recover_stale_after_s
        self.idle_recheck_s = idle_recheck_s  # set when other processes add work to the same file
        self._is_stopping = False
        self._thread: threading.Thread | None = None
        self._unsubscribe = None
        self._current_prompt_id: str | None = None
        self._state = threading.Condition()  # notified when a prompt ends or the queue changes
        self._between: list[Any] = []         # callables to run on this thread before the next prompt

    # -- life cycle -------------------------------------------------------------------------------

    def start(self) -> Worker:
        if self._thread is not None:
            raise RuntimeError("worker already started")
        self.store.recover(self.recover_stale_after_s)
        self._unsubscribe = self.store.subscribe(self._on_queue_change)
        self._thread = threading.Thread(target=self._run, name=self.worker_id, daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout_s: float | None = 30.0, interrupt: bool = True) -> None:
        """Stop after the current prompt (or interrupt it and re-queue it, with ``interrupt=True``)."""
        self._is_stopping = True
        prompt_id = self._current_prompt_id
        if interrupt and prompt_id is not None:
            self._call_interrupt(prompt_id)
        self.store.wake()
        if self._thread is not None:
            self._thread.join(timeout_s)
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None

    @property
    def is_alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    @property
    def current_prompt_id(self) -> str | None:
        return self._current_prompt_id

    def wait_idle(self, timeout_s: float | None = None) -> bool:
        """Block until no prompt is running or pending (False on timeout); for tests and shutdown."""
        with self._state:
            return self._state.wait_for(
                lambda: self._current_prompt_id is None and self.store.queue_remaining() == 0, timeout_s)

    # -- the loop ---------------------------------------------------------------------------------

    def run_between_prompts(self, task: Any) -> None:
        """Run ``task()`` on the worker thread once no prompt is running (now if idle, else after the
        running prompt): how ``/free`` unloads models without pulling weights from under a forward."""
        with self._state:
            self._between.append(task)
        self.store.wake()

    def _run_between_tasks(self) -> None:
        with self._state:
            tasks, self._between = self._between, []
        for task in tasks:
            try:
                task()
            except Exception:
                log.exception("%s: a task between prompts failed", self.worker_id)

    def _run(self) -> None:
        while not self._is_stopping:
            self._run_between_tasks()
            try:
                record = self.store.claim(self.worker_id)
            except Exception:
                log.exception("%s: claiming a prompt failed", self.worker_id)
                record = None
            if record is None:
                self.store.wait_for_pending(lambda: self._is_stopping or bool(self._between), self.idle_recheck_s)
                continue
            try:
                self._run_one(record)
            finally:
                with self._state:
                    self._current_prompt_id = None
                    self._state.notify_all()

    def _run_one(self, record: Any) -> None:
        prompt_id = record.prompt_id
        with self._state:
            self._current_prompt_id = prompt_id
        done = threading.Event()
        beat = threading.Thread(target=self._heartbeat, args=(prompt_id, done),
                                name=f"{self.worker_id}-heartbeat", daemon=True)
        beat.start()
        try:
            try:
                result = self.engine.execute(record)
            except BaseException as exc:  # the engine should report errors itself; never die of it
                if isinstance(exc, (KeyboardInterrupt, SystemExit)):
                    raise
                log.exception("%s: the engine raised while running prompt %s", self.worker_id, prompt_id)
                result = _engine_failure(record, exc)
                self._emit("execution_error", result["error"], getattr(record, "client_id", None))
        finally:
            done.set()
            beat.join()
        status = result.get("status") if isinstance(result, dict) else getattr(result, "status", None)
        try:
            if self._is_stopping and status == "interrupted":
                self.store.release(prompt_id, self.worker_id)
            elif self.store.finish(prompt_id, result, worker_id=self.worker_id) is None:
                log.warning("%s: prompt %s was no longer claimed by this worker when it finished; "
                            "its result was dropped (another worker re-ran it)", self.worker_id, prompt_id)
        except Exception:
            log.exception("%s: recording the result of prompt %s failed", self.worker_id, prompt_id)

    def _heartbeat(self, prompt_id: str, done: threading.Event) -> None:
        while not done.wait(self.heartbeat_interval_s):
            try:
                self.store.heartbeat(prompt_id, self.worker_id)
            except Exception:
                log.exception("%s: heartbeat for prompt %s failed", self.worker_id, prompt_id)

    # -- events -----------------------------------------------------------------------------------

    def _on_queue_change(self) -> None:
        with self._state:
            self._state.notify_all()
        self._emit_status()

    def _emit_status(self) -> None:
        try:
            remaining = self.store.queue_remaining()
        except Exception:
            log.exception("%s: counting the queue failed", self.worker_id)
            return
        self._emit("status", {"status": {"exec_info": {"queue_remaining": remaining}}}, None)

    def _emit(self, type: str, data: dict[str, Any], client_id: str | None) -> None:
        try:
            self.events.emit(type, data, client_id=client_id)
        except Exception:
            log.exception("%s: emitting %r failed", self.worker_id, type)

    def _call_interrupt(self, prompt_id: str) -> None:
        try:
            self.engine.interrupt(prompt_id)
        except Exception:
            log.exception("%s: interrupting prompt %s failed", self.worker_id, prompt_id)


def _engine_failure(record: Any, exc: BaseException) -> dict[str, Any]:
    """A RunResult-shaped dict for a prompt whose engine raised instead of returning a result."""
    error = {"prompt_id": record.prompt_id, "node_id": None, "node_type": None, "executed": [],
             "exception_message": f"The engine failed outside any node: {exc}",
             "exception_type": type(exc).__name__,
             "traceback": traceback.format_exception(type(exc), exc, exc.__traceback__),
             "current_inputs": {}, "current_outputs": {}, "timestamp": int(time.time() * 1000)}
    return {"status": "error", "outputs": {}, "messages": [["execution_error", error]],
            "node_timings_s": {}, "error": error, "meta": {}}
