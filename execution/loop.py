"""Running node coroutines (``async def`` FUNCTION, IS_CHANGED, VALIDATE_INPUTS) from sync code.

The engine owns one event loop, used from the worker thread only; code that may be called from a
thread that already runs a loop (the server validating a prompt) uses :func:`run_blocking`.
"""
from __future__ import annotations

import asyncio
import inspect
import threading
from typing import Any


class EngineLoop:
    """A private event loop, created on first use and closed by :meth:`close`."""

    def __init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None

    def run(self, awaitable: Any) -> Any:
        if self._loop is None or self._loop.is_closed():
            self._loop = asyncio.new_event_loop()
        return self._loop.run_until_complete(awaitable)

    def start(self, coroutine: Any) -> asyncio.Task:
        """A task for ``coroutine`` on this loop (it runs during the next :meth:`run`); it keeps the
        context variables current now (the node context of the call that made it)."""
        if self._loop is None or self._loop.is_closed():
            self._loop = asyncio.new_event_loop()
        return self._loop.create_task(coroutine)

    def gather(self, awaitables: list[Any]) -> list[Any]:
        async def all_of() -> list[Any]:
            return list(await asyncio.gather(*awaitables))
        return self.run(all_of())

    def close(self) -> None:
        if self._loop is not None and not self._loop.is_closed():
            self._loop.close()
        self._loop = None


def run_blocking(value: Any) -> Any:
    """``value`` itself, or the result of awaiting it when it is awaitable."""
    if not inspect.isawaitable(value):
        return value
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(_await(value))
    box: dict[str, Any] = {}

    def target() -> None:  # this thread runs a loop already: await on a helper thread
        try:
            box["value"] = asyncio.run(_await(value))
        except BaseException as exc:  # noqa: BLE001 - re-raised in the caller's thread
            box["error"] = exc

    helper = threading.Thread(target=target, name="plexus-await")
    helper.start()
    helper.join()
    if "error" in box:
        raise box["error"]
    return box["value"]


async def _await(value: Any) -> Any:
    return await value
