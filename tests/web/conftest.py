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
    """One server: ``start()`` / ``stop()`` (restartable on the same folders and database)."""

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

    def start(self) -> "Harness":
        self.events = EventBus()
        self.registry = fakes.make_registry(self.folders)
        self.engine = Engine(self.registry, self.events)
        self.store = PromptStore(self.db_path)
        self.worker = Worker(self.store, self.engine, self.events)
        services = Services(engine=self.engine, store=self.store, events=self.events, registry=self.registry,
                            folders=self.folders, worker=self.worker, plugins=self.plugins)
        settings = ServerSettings(**{"listen": "127.0.0.1", "port": 0, "argv": ["main.py"],
                                     **self.settings_overrides})
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
