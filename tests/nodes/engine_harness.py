"""Run built-in nodes through the real registry and Engine, with folders in a temp directory."""
from __future__ import annotations

import uuid
from pathlib import Path
from typing import ClassVar

from execution.events import EventBus
from execution.executor import Engine, PromptRecord, RunResult
from execution.registry import NodeRegistry
from nodes import services
from nodes.registry import register_builtins
from storage.folders import Folders


class Capture:
    """A test-only output node that keeps what it is given (`Capture.seen`; reset it per test)."""

    seen: ClassVar[list] = []

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"value": ("*",)}}

    RETURN_TYPES = ()
    FUNCTION = "run"
    OUTPUT_NODE = True
    CATEGORY = "_for_testing"

    def run(self, value):
        Capture.seen.append(value)
        return {}


class Harness:
    def __init__(self, base: Path):
        self.folders = Folders(base)
        self.folders.ensure_dirs()
        services.install(services.NodeServices(self.folders))
        self.registry = NodeRegistry()
        report = register_builtins(self.registry)
        assert not report.builtin_failures, report.lines()
        self.events = EventBus()
        self.seen: list = []
        self.events.subscribe(self.seen.append)
        self.engine = Engine(self.registry, self.events)

    def run(self, prompt: dict, extra_data: dict | None = None) -> RunResult:
        checked = self.engine.validate(prompt)
        assert checked.ok, (checked.error, checked.node_errors)
        record = PromptRecord(prompt_id=str(uuid.uuid4()), prompt=prompt, extra_data=extra_data or {},
                              outputs_to_execute=checked.outputs_to_execute)
        return self.engine.execute(record)

    def close(self) -> None:
        services.install(None)


def fp32_harness(base: Path, model_folders: tuple[str, ...] = ()) -> Harness:
    """A harness whose services compute in fp32 (--force-fp32), with TestCapture registered and the given
    model folders (ComfyUI names: "checkpoints", "controlnet", ...) created; `h.folders.paths(name)[0]`."""
    from model_management import MemorySettings
    h = Harness(base)
    h.services = services.NodeServices(h.folders, settings=MemorySettings(force_fp32=True))
    for name in model_folders:
        h.folders.paths(name)[0].mkdir(parents=True, exist_ok=True)
    h.registry.register("TestCapture", Capture)
    return h


def serving(h: Harness):
    """Generator body of a module-scoped fixture: installs the harness's services, yields it, closes it."""
    services.install(h.services)
    h.engine.clear_cache()
    yield h
    services.install(None)
    h.close()


def write_reference_image(h: Harness, shape: tuple[int, int] = (56, 56), name: str = "ref.png",
                          seed: int = 0) -> None:
    """A seeded random RGB image (height, width) in the harness's input folder, for LoadImage nodes."""
    import numpy as np
    from PIL import Image
    rgb = np.random.default_rng(seed).integers(0, 256, (*shape, 3), dtype=np.uint8)
    h.folders.input.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rgb).save(h.folders.input / name)


def installed(h: Harness):
    """Generator body of a per-test fixture over a module-scoped harness with its own services: installs them,
    clears the engine cache and `Capture.seen`, yields the harness, uninstalls after the test."""
    services.install(h.services)
    h.engine.clear_cache()
    Capture.seen = []
    yield h
    services.install(None)
