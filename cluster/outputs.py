"""Files a worker ships with its events, written into the front end's folders atomically.

A worker saves into its own scratch folders; each file reaches the front end as bytes (through
Ray's object store) just before the ``executed`` event that names it. The front end writes it under
a temporary name and renames it into place (``os.replace``), so a reader or a re-run never sees a half
file, and renumbers ComfyUI-style names (``<prefix>_<counter:05>_.<ext>``) to the next free counter
in its own folder — the name single-machine mode would have given. The renames are remembered per
worker so that a cached ``executed`` (the worker re-sending an old ui dict) names the same file.
"""
from __future__ import annotations

import os
import re
import threading
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

COUNTER_NAME = re.compile(r"^(?P<name>.*)_(?P<counter>\d{5,})_(?P<ext>\.[^.]+)$")


def file_entries(ui: Any) -> Iterator[dict[str, Any]]:
    """Every ``{"filename", "subfolder", "type"}`` entry of a ui dict (``images``, ``gifs``, ``audio`` ...)."""
    if not isinstance(ui, Mapping):
        return
    for items in ui.values():
        for item in items if isinstance(items, (list, tuple)) else ():
            if isinstance(item, Mapping) and isinstance(item.get("filename"), str):
                yield item  # type: ignore[misc]


def _inside(root: Path, *parts: str) -> Path:
    path = Path(os.path.realpath(root.joinpath(*parts)))
    root_real = Path(os.path.realpath(root))
    if path != root_real and root_real not in path.parents:
        raise ValueError(f"{'/'.join(parts)!r} leaves {root}")
    return path


class OutputWriter:
    """Writes shipped files into ``directory(type)`` folders; thread-safe (one lock for naming)."""

    def __init__(self, directory: Callable[[str], Path | None]):
        self.directory = directory
        self._lock = threading.Lock()
        self._renames: dict[tuple[str, str, str, str], str] = {}   # (worker, type, subfolder, name) -> name

    def write(self, worker_id: str, kind: str, subfolder: str, filename: str, data: bytes) -> str:
        """Write one file; returns the name it got in the front end's folder."""
        root = self.directory(kind or "output")
        if root is None:
            raise ValueError(f"{kind!r} is not an output folder type")
        folder = _inside(Path(root), subfolder or "")
        folder.mkdir(parents=True, exist_ok=True)
        with self._lock:
            final = self._free_name(folder, filename)
            target = _inside(folder, final)
            partial = target.with_name(f".{final}.{os.getpid()}.partial")
            with open(partial, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(partial, target)
            self._renames[(worker_id, kind, subfolder or "", filename)] = final
        return final

    @staticmethod
    def _free_name(folder: Path, filename: str) -> str:
        match = COUNTER_NAME.match(filename)
        if match is None:
            return filename
        stem = match.group("name")
        pattern = re.compile(re.escape(stem) + r"_(\d+)")
        numbers = [int(m.group(1)) for entry in os.listdir(folder) if (m := pattern.match(entry))]
        counter = max(numbers, default=0) + 1
        return f"{stem}_{counter:05}_{match.group('ext')}"

    def rename_ui(self, worker_id: str, ui: Any) -> Any:
        """A copy of a ui dict with the worker's file names replaced by the front end's."""
        if not isinstance(ui, Mapping):
            return ui
        out: dict[str, Any] = {}
        for key, items in ui.items():
            if isinstance(items, list):
                items = [self._renamed_entry(worker_id, item) for item in items]
            out[key] = items
        return out

    def _renamed_entry(self, worker_id: str, item: Any) -> Any:
        if not (isinstance(item, Mapping) and isinstance(item.get("filename"), str)):
            return item
        key = (worker_id, item.get("type") or "output", item.get("subfolder") or "", item["filename"])
        with self._lock:
            final = self._renames.get(key)
        return item if final is None else {**item, "filename": final}
