"""What a test worker actor builds: the server tests' pure-Python nodes (fakes.py) plus a node that
names a "checkpoint" (so routing has something to route on) and one that takes a while."""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from execution.events import EventBus
from execution.executor import Engine
from execution.protocol import current_context
from storage.folders import Folders

from tests.web import fakes

FREES: list[tuple[bool, bool]] = []   # per worker process: the /free calls it received


class UseCheckpoint:
    """Passes an image through; its ``ckpt_name`` widget is what routing sees."""

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {"image": ("IMAGE",), "ckpt_name": ("STRING", {"default": "a.safetensors"})}}

    RETURN_TYPES = ("IMAGE",)
    FUNCTION = "run"
    CATEGORY = "test"

    def run(self, image: Any, ckpt_name: str) -> tuple[Any]:
        return (image,)


class Sleep:
    """Passes an image through after ``seconds``, reporting progress and checking for interrupts."""

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {"image": ("IMAGE",), "seconds": ("FLOAT", {"default": 1.0})}}

    RETURN_TYPES = ("IMAGE",)
    FUNCTION = "run"
    CATEGORY = "test"

    def run(self, image: Any, seconds: float) -> tuple[Any]:
        context = current_context()
        ticks = max(int(seconds / 0.05), 1)
        for tick in range(ticks):
            time.sleep(0.05)
            if context is not None:
                context.check_interrupted()
                context.report_progress(tick + 1, ticks)
        return (image,)


def make_registry(folders: Folders) -> Any:
    registry = fakes.make_registry(folders)
    registry.register("UseCheckpoint", UseCheckpoint)
    registry.register("Sleep", Sleep)
    return registry


def build_parts(scratch_dir: Path) -> Any:
    from cluster.runtime import RuntimeParts

    folders = Folders(Path(scratch_dir))
    folders.ensure_dirs()
    events = EventBus()
    engine = Engine(make_registry(folders), events)

    def free(unload_models: bool, free_memory: bool) -> None:
        FREES.append((unload_models, free_memory))

    def stats() -> dict[str, Any]:
        return {"device": {"name": "cpu", "type": "cpu"}, "memory": {}, "frees": list(FREES)}

    return RuntimeParts(engine, events, folders.directory, None, free, stats)


def prompt(seed: int, ckpt: str = "a.safetensors", sleep_s: float = 0.0, prefix: str = "cl") -> dict[str, Any]:
    """MakeImage -> UseCheckpoint -> [Sleep] -> SaveImage."""
    api: dict[str, Any] = {
        "1": {"class_type": "MakeImage", "inputs": {"seed": seed, "steps": 3, "width": 16, "height": 16}},
        "2": {"class_type": "UseCheckpoint", "inputs": {"image": ["1", 0], "ckpt_name": ckpt}},
    }
    last = "2"
    if sleep_s:
        api["3"] = {"class_type": "Sleep", "inputs": {"image": [last, 0], "seconds": sleep_s}}
        last = "3"
    api["9"] = {"class_type": "SaveImage", "inputs": {"images": [last, 0], "filename_prefix": prefix}}
    return api
