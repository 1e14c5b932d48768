"""What runs inside one worker (a Ray actor): its own Engine, node registry and model manager.

The runtime is built by a ``build(scratch_dir) -> RuntimeParts`` callable the front end gives it
(``main.build_worker_parts`` in the server: the same wiring as single-machine mode, with the output
and temp folders moved to the worker's scratch directory). ``run`` executes one prompt record and
yields the messages of :mod:`cluster.pool`: the events of the run in order, each output file as
bytes just before the ``executed`` event that names it, then the result and what is resident.
"""
from __future__ import annotations

import logging
import queue
import threading
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cluster.inputs import INPUTS_KEY, write_input_files
from cluster.needs import ModelNeeds, prompt_needs
from cluster.outputs import file_entries

log = logging.getLogger(__name__)
_END = object()


@dataclass
class RuntimeParts:
    engine: Any                                         # execution.Engine
    events: Any                                         # the EventBus the engine emits to
    directory: Callable[[str], Path | None]             # "output" / "temp" / "input" -> folder
    resident: Callable[[], list[dict]] | None = None    # ModelManager.resident (None: no manager)
    free: Callable[[bool, bool], None] | None = None    # free(unload_models, free_memory)
    stats: Callable[[], dict] | None = None             # device and memory


class WorkerRuntime:
    def __init__(self, worker_id: str, build: Callable[[Path], RuntimeParts], scratch_dir: Path):
        self.worker_id = worker_id
        self.scratch_dir = Path(scratch_dir)
        self.scratch_dir.mkdir(parents=True, exist_ok=True)
        self.parts = build(self.scratch_dir)
        self._run_lock = threading.Lock()   # one prompt at a time; free() waits for it
        self._seen_files: set[str] = set()
        self._last = ModelNeeds()

    # -- running a prompt -----------------------------------------------------------------------

    def run(self, record: dict[str, Any]) -> Iterator[tuple[Any, ...]]:
        with self._run_lock:
            yield ("started", self.worker_id)
            record = dict(record)
            inputs = write_input_files(record.pop(INPUTS_KEY, None) or [], self.parts.directory)
            messages: queue.Queue = queue.Queue()
            unsubscribe = self.parts.events.subscribe(lambda event: messages.put(event))
            box: dict[str, Any] = {}
            thread = threading.Thread(target=self._execute, args=(record, box, messages),
                                      name=f"{self.worker_id}-prompt", daemon=True)
            thread.start()
            try:
                while (event := messages.get()) is not _END:
                    if event.type == "status":
                        continue  # the front end announces its own queue
                    if event.type == "executed":
                        yield from self._files_of((event.data or {}).get("output"))
                    yield ("event", event.type, event.data, event.client_id)
            finally:
                unsubscribe()
                thread.join()
                for path in inputs:   # scratch: the front end's input folder stays the only copy
                    path.unlink(missing_ok=True)
            result = box["result"]
            for ui in (result.get("outputs") or {}).values():
                yield from self._files_of(ui, only_new=True)
            needs = prompt_needs(record.get("prompt") or {})
            self._seen_files |= needs.files
            self._last = needs
            yield ("result", result, self.resident().to_json())

    def _execute(self, record: dict[str, Any], box: dict[str, Any], messages: queue.Queue) -> None:
        from execution.executor import PromptRecord

        try:
            box["result"] = self.parts.engine.execute(PromptRecord.from_json(record)).to_json()
        except BaseException as exc:  # execute never raises; a broken record still ends the stream
            error = {"prompt_id": record.get("prompt_id"), "node_id": None, "node_type": None, "executed": [],
                     "exception_message": f"worker {self.worker_id} failed outside any node: {exc}",
                     "exception_type": type(exc).__name__,
                     "traceback": traceback.format_exception(type(exc), exc, exc.__traceback__),
                     "current_inputs": {}, "current_outputs": {}}
            box["result"] = {"status": "error", "outputs": {}, "messages": [["execution_error", error]],
                             "node_timings_s": {}, "error": error, "meta": {}}
        finally:
            messages.put(_END)

    def _files_of(self, ui: Any, only_new: bool = False) -> Iterator[tuple[Any, ...]]:
        shipped = self.__dict__.setdefault("_shipped", set())
        for item in file_entries(ui):
            kind, subfolder = item.get("type") or "output", item.get("subfolder") or ""
            key = (kind, subfolder, item["filename"])
            if only_new and key in shipped:
                continue
            root = self.parts.directory(kind)
            path = None if root is None else Path(root) / subfolder / item["filename"]
            if path is None or not path.is_file() or kind == "input":
                continue
            shipped.add(key)
            yield ("file", kind, subfolder, item["filename"], path.read_bytes())

    # -- control --------------------------------------------------------------------------------

    def interrupt(self, prompt_id: str | None = None) -> None:
        self.parts.engine.interrupt(prompt_id)

    def free(self, unload_models: bool, free_memory: bool) -> None:
        with self._run_lock:
            if free_memory:
                self.parts.engine.clear_cache()
            if self.parts.free is not None:
                self.parts.free(unload_models, free_memory)

    def resident(self) -> ModelNeeds:
        """The model files (by the names prompts use) and LoRA set this worker holds now."""
        if self.parts.resident is None:
            return self._last
        held = {Path(str(r.get("source_key") or "").split("#")[0]).name for r in self.parts.resident()}
        files = frozenset(name for name in self._seen_files if Path(name).name in held)
        loras = self._last.loras if self._last.files <= files else frozenset()
        return ModelNeeds(files, loras)

    def stats(self) -> dict[str, Any]:
        stats = dict(self.parts.stats() if self.parts.stats is not None else {})
        stats["resident"] = self.resident().to_json()
        stats["models"] = list(self.parts.resident()) if self.parts.resident is not None else []
        return stats
