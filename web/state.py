"""The server's own state, one object stored on the aiohttp app under :data:`STATE`."""

from __future__ import annotations

import asyncio
import functools
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable

from aiohttp import web

from .services import ServerSettings, Services
from .websocket import ClientHub

TERMINAL = {"success", "error", "interrupted"}


class AppState:
    def __init__(self, services: Services, settings: ServerSettings, feature_flags: dict[str, Any]):
        self.services = services
        self.settings = settings
        self.feature_flags = feature_flags
        self.hub = ClientHub(
            self.queue_status_sync,
            feature_flags,
            is_recorded=lambda pid: services.store.status_of(pid) not in ("pending", "running"),
        )
        self.settings_lock = threading.Lock()  # comfy.settings.json is read-modify-written
        self._slow_pool = ThreadPoolExecutor(1, thread_name_prefix="plexus-free")
        self._unsubscribe: Callable[[], None] | None = None

    # --- life cycle ----------------------------------------------------------------------------------
    async def start(self) -> None:
        self.hub.attach(asyncio.get_running_loop())
        self._unsubscribe = self.services.events.subscribe(self.hub.on_event)

    async def stop(self) -> None:
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None
        await self.hub.close_all()
        self._slow_pool.shutdown(wait=False, cancel_futures=True)

    # --- helpers -------------------------------------------------------------------------------------
    async def call(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Run a short blocking call (store, validation, file I/O) in the default thread pool."""
        return await asyncio.get_running_loop().run_in_executor(None, functools.partial(fn, *args, **kwargs))

    async def call_slow(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Run a call that may wait for the running prompt (clearing the engine's cache, unloading
        models) on its own thread, so that it never starves the pool the other routes use."""
        return await asyncio.get_running_loop().run_in_executor(
            self._slow_pool, functools.partial(fn, *args, **kwargs)
        )

    def queue_status_sync(self) -> dict[str, Any]:
        return {"exec_info": {"queue_remaining": self.services.store.queue_remaining()}}

    async def queue_status(self) -> dict[str, Any]:
        return await self.call(self.queue_status_sync)

    async def wait_for_end(self, prompt_id: str, timeout_s: float) -> str | None:
        """Wait until ``prompt_id`` is finished (or ``timeout_s`` passes); returns its status.

        Woken by the events that end a prompt or change the queue; a slow re-check every few seconds
        covers an event that raced the store's write."""
        loop = asyncio.get_running_loop()
        changed = asyncio.Event()
        wake_on = {"status", "execution_success", "execution_error", "execution_interrupted"}
        remove = self.hub.add_listener(lambda event: changed.set() if event.type in wake_on else None)
        deadline = loop.time() + timeout_s
        try:
            while True:
                changed.clear()
                status = await self.call(self.services.store.status_of, prompt_id)
                remaining = deadline - loop.time()
                if status in TERMINAL or status is None or remaining <= 0:
                    return status
                try:
                    await asyncio.wait_for(changed.wait(), min(remaining, 2.0))
                except asyncio.TimeoutError:
                    pass
        finally:
            remove()


STATE: web.AppKey[AppState] = web.AppKey("plexus_state", AppState)
