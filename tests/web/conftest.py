"""A Plexus server started in-process on a free port, with the real engine, store, worker and event
bus, and the pure-Python test nodes of ``fakes.py``."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path
from typing import Any

import pytest

from execution.events import EventBus
from execution.executor import Engine
from execution.store import PromptStore
from execution.worker import Worker
from storage.folders import Folders
from web.server import start
from web.services import Plugin, ServerSettings, Services

from . import fakes


class Harness:
    """One server: ``start()`` / ``stop()`` (restartable on the same folders and database). It starts as
    with ``--preview-method auto`` (``preview_method``), so the fake sampler sends step previews."""

    preview_method = "auto"

    def __init__(self, base: Path, **settings: Any):
        self.base = base
        self.folders = Folders(base)
        self.folders.ensure_dirs()
        self.settings_overrides = settings
        self.plugins: list[Plugin] = []
        self.db_path = base / "user" / "plexus.sqlite"
        self.loop: asyncio.AbstractEventLoop | None = None
        self.thread: threading.Thread | None = None
        self.port = 0

    def build_services(self) -> Services:
        """The test stack: real engine, store, worker and events; the test nodes of fakes.py."""
        self.events = EventBus()
        self.registry = fakes.make_registry(self.folders)
        self.engine = Engine(self.registry, self.events, preview_method=self.preview_method)
        self.store = PromptStore(self.db_path)
        self.worker = Worker(self.store, self.engine, self.events)
        return Services(
            engine=self.engine,
            store=self.store,
            events=self.events,
            registry=self.registry,
            folders=self.folders,
            worker=self.worker,
            plugins=self.plugins,
        )

    def start(self) -> "Harness":
        services = self.build_services()
        settings = ServerSettings(
            **{"listen": "127.0.0.1", "port": 0, "argv": ["main.py"], **self.settings_overrides}
        )
        self.settings = settings
        self.loop = asyncio.new_event_loop()
        ready = threading.Event()
        failure: list[BaseException] = []

        def run() -> None:
            asyncio.set_event_loop(self.loop)
            try:
                self.runner, self.port = self.loop.run_until_complete(start(services, settings))
            except BaseException as exc:  # noqa: BLE001 - reported to the starting thread
                failure.append(exc)
                ready.set()
                return
            ready.set()
            self.loop.run_forever()

        self.thread = threading.Thread(target=run, name="plexus-test-server", daemon=True)
        self.thread.start()
        ready.wait(30)
        if failure:
            raise failure[0]
        if not self.worker.is_alive:
            self.worker.start()
        return self

    def stop(self, *, interrupt: bool = True) -> None:
        self.worker.stop(interrupt=interrupt)
        future = asyncio.run_coroutine_threadsafe(self.runner.cleanup(), self.loop)
        future.result(30)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(30)
        self.loop.close()
        self.store.close()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


class RealHarness(Harness):
    """The whole Plexus stack as ``python main.py`` wires it (built-in nodes, models), with the demo
    checkpoint name backed by a tiny random-weight SD1.5 checkpoint in the real layout."""

    DEMO_CHECKPOINT = "plexus-demo-sd15-random.safetensors"

    def build_services(self) -> Services:
        import main
        from models.testing import CheckpointSpec, tiny_unet_config, tiny_vae_config, write_random_checkpoint

        checkpoint = self.folders.models_dir / "checkpoints" / self.DEMO_CHECKPOINT
        if not checkpoint.exists():
            write_random_checkpoint(
                checkpoint, CheckpointSpec("sd1", tiny_unet_config("sd1"), tiny_vae_config())
            )
        args = main.parse_args(["--base-directory", str(self.base), "--cpu", "--queue-db", str(self.db_path)])
        app = main.build_app(args)
        services, _ = main.build_server(app)
        self.events, self.registry, self.engine = services.events, services.registry, services.engine
        self.store, self.worker = services.store, services.worker
        self.folders = services.folders
        services.plugins = self.plugins + list(services.plugins)
        return services


@pytest.fixture
def real_harness(tmp_path: Path):
    server = RealHarness(tmp_path).start()
    yield server
    server.stop()


@pytest.fixture
def harness(tmp_path: Path):
    fakes.GATES.clear()
    fakes.ENTERED.clear()
    server = Harness(tmp_path).start()
    yield server
    for gate in fakes.GATES.values():
        gate.set()
    server.stop()


@pytest.fixture
def make_harness(tmp_path: Path):
    """For tests that need other settings (token, CORS, upload limit) or a restart."""
    started: list[Harness] = []

    def make(**settings: Any) -> Harness:
        server = Harness(tmp_path, **settings)
        started.append(server)
        return server

    yield make
    for gate in fakes.GATES.values():
        gate.set()
    for server in started:
        if server.thread is not None and server.thread.is_alive():
            server.stop()


# --- the opt-in browser tests ------------------------------------------------------------------------
BROWSER_FLAG = "PLEXUS_BROWSER_TESTS"


def pytest_configure(config) -> None:
    config.addinivalue_line("markers", f"browser: drives headless Chromium; runs only with {BROWSER_FLAG}=1")


def pytest_collection_modifyitems(config, items) -> None:
    """Deselect (not skip) the browser tests unless asked for: they need chromium and playwright."""
    import os

    if os.environ.get(BROWSER_FLAG) == "1":
        return
    browser = [item for item in items if item.get_closest_marker("browser")]
    if browser:
        config.hook.pytest_deselected(items=browser)
        items[:] = [item for item in items if not item.get_closest_marker("browser")]
