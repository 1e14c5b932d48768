"""One event interface for the server and the headless runner.

The engine emits ComfyUI's websocket message types (``execution_start``, ``executing``, ``progress``
...) plus ``preview`` (data ``{"prompt_id", "node_id", "display_node_id", "preview": Preview}``, which
the server turns into a binary frame). Events are addressed to a client id, never to a socket; a
subscriber decides what to do with them.
"""
from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Event:
    type: str
    data: Any
    client_id: str | None = None


class EventBus:
    """Synchronous fan-out: ``emit`` calls every subscriber in the emitting thread.

    A subscriber that raises is logged and skipped; it never breaks the emitter.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._subscribers: tuple[Callable[[Event], None], ...] = ()

    def subscribe(self, callback: Callable[[Event], None]) -> Callable[[], None]:
        """Add ``callback``; returns a function that removes it again."""
        with self._lock:
            self._subscribers = self._subscribers + (callback,)

        def unsubscribe() -> None:
            with self._lock:
                subscribers = list(self._subscribers)
                if callback in subscribers:
                    subscribers.remove(callback)
                self._subscribers = tuple(subscribers)

        return unsubscribe

    @property
    def has_subscribers(self) -> bool:
        return bool(self._subscribers)

    def emit(self, type: str, data: Any, client_id: str | None = None) -> None:
        subscribers = self._subscribers  # a snapshot: subscribing while emitting is safe
        if not subscribers:
            return
        event = Event(type, data, client_id)
        for callback in subscribers:
            try:
                callback(event)
            except Exception:  # a broken subscriber must not stop a prompt
                log.exception("event subscriber %r failed on %s", callback, type)
