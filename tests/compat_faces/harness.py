"""Load small packs written like real ones through Plexus's plugin loader with the ComfyUI faces on
``sys.path``, then run graphs on the real Engine (and, for server faces, a real aiohttp server)."""
from __future__ import annotations

import asyncio
import sys
import textwrap
import threading
import uuid
from pathlib import Path

from execution.events import EventBus
from execution.executor import Engine, PromptRecord, RunResult
from execution.registry import NodeRegistry
from nodes import services
from nodes.registry import build_registry
from storage.folders import Folders

REPO = Path(__file__).resolve().parents[2]
FACES_DIR = REPO / "compat" / "comfy_faces"
FACE_TOPS = ("folder_paths", "server", "comfy", "comfy_api", "comfy_execution", "comfy_extras", "node_helpers",
             "latent_preview")


def write_pack(custom_nodes: Path, name: str, files: dict[str, str]) -> Path:
    for relative, text in files.items():
        path = custom_nodes / name / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))
    return custom_nodes / name


def forget_faces() -> None:
    """Drop the faces and the packs from sys.modules (each test builds its own layout)."""
    for name in list(sys.modules):
        if name.split(".")[0] in FACE_TOPS or "custom_nodes" in name:
            del sys.modules[name]


class FaceHarness:
    def __init__(self, base: Path, *, with_web_api: bool = False):
        forget_faces()
        self.base = base
        self.folders = Folders(base)
        self.folders.ensure_dirs()
        self.custom_nodes = base / "custom_nodes"
        self.custom_nodes.mkdir(exist_ok=True)
        self.registry = NodeRegistry()
        self.events = EventBus()
        self.seen: list = []
        self.events.subscribe(self.seen.append)
        self.web_api = None
        if with_web_api:
            from web.plugin_api import PluginWebAPI

            self.web_api = PluginWebAPI(self.events)
        self.services = services.NodeServices(folders=self.folders, registry=self.registry, events=self.events,
                                              web_api=self.web_api)
        services.install(self.services)
        self.report = None
        self.engine = Engine(self.registry, self.events)

    def pack(self, name: str, files: dict[str, str]) -> Path:
        return write_pack(self.custom_nodes, name, files)

    def load(self):
        if not any(self.custom_nodes.iterdir()):   # the faces go on sys.path only when a pack loads
            self.pack("empty_pack", {"__init__.py": "NODE_CLASS_MAPPINGS = {}\n"})
        self.report = build_registry(self.registry, custom_node_dirs=[self.custom_nodes], import_paths=[FACES_DIR])
        return self.report

    def plugin(self, name: str):
        return next(p for p in self.report.plugins.plugins if p.name == name)

    def run(self, prompt: dict, extra_data: dict | None = None, client_id: str | None = None) -> RunResult:
        checked = self.engine.validate(prompt)
        assert checked.ok, (checked.error, checked.node_errors)
        record = PromptRecord(prompt_id=str(uuid.uuid4()), prompt=prompt, extra_data=extra_data or {},
                              outputs_to_execute=checked.outputs_to_execute, client_id=client_id)
        return self.engine.execute(record)

    def close(self) -> None:
        self.engine.close()
        if self.web_api is not None:
            self.web_api.close()
        services.install(None)
        forget_faces()
        if str(FACES_DIR) in sys.path:
            sys.path.remove(str(FACES_DIR))


class ServerThread:
    """The Plexus aiohttp app of ``web.server`` for a FaceHarness, on a free port, in its own loop."""

    def __init__(self, harness: FaceHarness):
        from execution.store import PromptStore
        from execution.worker import Worker
        from web.services import Plugin, ServerSettings, Services

        self.store = PromptStore(None)
        self.worker = Worker(self.store, harness.engine, harness.events)
        plugins = [Plugin(p.name, p.path, p.web_directory) for p in harness.report.plugins.plugins if p.is_ok]
        self.services = Services(engine=harness.engine, store=self.store, events=harness.events,
                                 registry=harness.registry, folders=harness.folders, worker=self.worker,
                                 plugins=plugins, plugin_api=harness.web_api)
        self.settings = ServerSettings(listen="127.0.0.1", port=0, argv=["main.py"])
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.runner = None
        self.port = 0

    def start(self) -> ServerThread:
        from web.server import start

        self.worker.start()
        self.thread.start()
        self.runner, self.port = asyncio.run_coroutine_threadsafe(start(self.services, self.settings),
                                                                  self.loop).result(30)
        return self

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        if self.runner is not None:
            asyncio.run_coroutine_threadsafe(self.runner.cleanup(), self.loop).result(30)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.worker.stop()
