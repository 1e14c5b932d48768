"""The websocket: clients by id, events from the EventBus forwarded into the event loop.

Events are addressed to a client id (or to everyone when the id is None), never to a socket. The
EventBus calls :meth:`ClientHub.on_event` from the worker thread; it hops into the loop with
``call_soon_threadsafe`` and each socket has its own ordered outbox drained by one sender task, so
messages keep their order and one slow client never blocks the others (its previews are dropped first
when its outbox fills up).

Binary frames (big-endian): ``uint32 1 | uint32 format (1 JPEG, 2 PNG) | bytes`` for clients that did
not advertise ``supports_preview_metadata``; ``uint32 4 | uint32 json_len | json | bytes`` for those
that did.
"""

from __future__ import annotations

import asyncio
import json
import logging
import struct
import uuid
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable

from aiohttp import WSMsgType, web

log = logging.getLogger("plexus.web")

PREVIEW_IMAGE = 1
PREVIEW_IMAGE_WITH_METADATA = 4
_FORMAT_CODES = {"JPEG": 1, "PNG": 2}
_MIME = {"JPEG": "image/jpeg", "PNG": "image/png"}
OUTBOX_LIMIT = 512


@dataclass(eq=False)
class Client:
    """One open socket: its id, what it said it supports, and its ordered outbox."""

    client_id: str
    ws: web.WebSocketResponse
    features: dict[str, Any] = field(default_factory=dict)
    outbox: deque = field(default_factory=deque)
    has_mail: asyncio.Event = field(default_factory=asyncio.Event)

    def put(self, item: str | bytes, *, droppable: bool = False) -> None:
        """Queue a frame. A full outbox (a stalled client) drops previews first, then the oldest text."""
        if len(self.outbox) >= OUTBOX_LIMIT:
            if droppable:
                return
            victim = next((i for i in self.outbox if isinstance(i, bytes)), None)
            if victim is not None:
                self.outbox.remove(victim)
            else:
                self.outbox.popleft()
        self.outbox.append(item)
        self.has_mail.set()


def encode_preview(preview: Any, meta: dict[str, Any], with_metadata: bool) -> bytes:
    """A preview event's binary frame. ``preview`` has ``image_format`` ("JPEG"|"PNG") and ``data``."""
    fmt = str(getattr(preview, "image_format", "JPEG")).upper()
    data = bytes(getattr(preview, "data", b""))
    if with_metadata:
        header = json.dumps({**meta, "image_type": _MIME.get(fmt, "image/jpeg")}).encode()
        return struct.pack(">II", PREVIEW_IMAGE_WITH_METADATA, len(header)) + header + data
    return struct.pack(">II", PREVIEW_IMAGE, _FORMAT_CODES.get(fmt, 1)) + data


class ClientHub:
    """Connected websocket clients and the bridge from the EventBus into the loop."""

    def __init__(
        self,
        status_provider: Callable[[], dict[str, Any]],
        feature_flags: dict[str, Any],
        is_recorded: Callable[[str], bool] = lambda prompt_id: True,
    ):
        self._clients: dict[str, set[Client]] = {}
        self._is_recorded = is_recorded
        self._parked: list[Any] = []  # final ``executing {node: null}`` events waiting for the history
        self._status_provider = status_provider
        self._feature_flags = feature_flags
        self._loop: asyncio.AbstractEventLoop | None = None
        self._listeners: list[Callable[[Any], None]] = []

    # --- wiring -----------------------------------------------------------------------------------
    def attach(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop

    def add_listener(self, callback: Callable[[Any], None]) -> Callable[[], None]:
        """Run ``callback(event)`` in the loop for every event (used by POST /prompt?wait=true)."""
        self._listeners.append(callback)
        return lambda: self._listeners.remove(callback) if callback in self._listeners else None

    def on_event(self, event: Any) -> None:
        """EventBus subscriber; safe to call from any thread."""
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        try:
            loop.call_soon_threadsafe(self.dispatch, event)
        except RuntimeError:  # loop closed between the check and the call (shutdown)
            pass

    @property
    def client_count(self) -> int:
        return sum(len(s) for s in self._clients.values())

    # --- sending ----------------------------------------------------------------------------------
    def dispatch(self, event: Any) -> None:
        """Deliver one event (in the loop thread).

        The last message of a prompt, ``executing {node: null}``, is held back until the prompt is in
        the history: ComfyUI's example clients fetch /history/{id} as soon as they see it. The worker's
        ``status`` after recording the result releases it (so the order is ComfyUI's: execution_success,
        status, executing null); a timer releases it anyway if no status comes.
        """
        if (
            event.type == "executing"
            and isinstance(event.data, dict)
            and event.data.get("node") is None
            and event.data.get("prompt_id")
            and not self._recorded(event.data["prompt_id"])
        ):
            self._parked.append(event)
            if self._loop is not None:
                self._loop.call_later(5.0, self._release_late, event)
            return
        self._deliver(event)
        if event.type == "status" and self._parked:
            self._release_parked(False)

    def _recorded(self, prompt_id: str) -> bool:
        try:
            return self._is_recorded(prompt_id)
        except Exception:  # noqa: BLE001 - a store problem must not stop event delivery
            log.exception("checking whether prompt %s is recorded failed", prompt_id)
            return True

    def _release_parked(self, force: bool) -> None:
        parked, self._parked = self._parked, []
        for event in parked:
            if force or self._recorded(event.data["prompt_id"]):
                self._deliver(event)
            else:
                self._parked.append(event)

    def _release_late(self, event: Any) -> None:
        if event in self._parked:
            self._parked.remove(event)
            self._deliver(event)

    def _deliver(self, event: Any) -> None:
        targets = self._targets(getattr(event, "client_id", None))
        if event.type == "preview":
            data = event.data
            preview = data.get("preview")
            meta = {
                "node_id": data.get("node_id"),
                "prompt_id": data.get("prompt_id"),
                "display_node_id": data.get("display_node_id", data.get("node_id")),
                "parent_node_id": data.get("parent_node_id"),
                "real_node_id": data.get("real_node_id", data.get("node_id")),
            }
            frames: dict[bool, bytes] = {}
            for client in targets:
                flag = bool(client.features.get("supports_preview_metadata"))
                if flag not in frames:
                    frames[flag] = encode_preview(preview, meta, flag)
                client.put(frames[flag], droppable=True)
        elif event.type == "binary" and isinstance(event.data, dict):  # a plugin's ComfyUI binary event
            frame = struct.pack(">I", int(event.data.get("event", 0))) + bytes(event.data.get("bytes", b""))
            for client in targets:
                client.put(frame, droppable=True)
        else:
            text = json.dumps({"type": event.type, "data": event.data}, default=str)
            for client in targets:
                client.put(text)
        for listener in list(self._listeners):
            try:
                listener(event)
            except Exception:  # noqa: BLE001 - one listener must not break delivery
                log.exception("websocket event listener failed")

    def send_json(self, type_: str, data: Any, client_id: str | None = None) -> None:
        text = json.dumps({"type": type_, "data": data}, default=str)
        for client in self._targets(client_id):
            client.put(text)

    def _targets(self, client_id: str | None) -> list[Client]:
        if client_id is None:
            return [c for group in self._clients.values() for c in group]
        return list(self._clients.get(client_id, ()))

    # --- the /ws handler --------------------------------------------------------------------------
    async def handle(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(heartbeat=30, max_msg_size=1 << 20)
        await ws.prepare(request)
        client_id = request.query.get("clientId") or uuid.uuid4().hex
        if len(client_id) > 128:
            client_id = uuid.uuid4().hex
        client = Client(client_id, ws)
        self._clients.setdefault(client_id, set()).add(client)
        sender = asyncio.create_task(self._drain(client))
        try:
            status = await asyncio.get_running_loop().run_in_executor(None, self._status_provider)
            client.put(json.dumps({"type": "status", "data": {"status": status, "sid": client_id}}))
            client.put(json.dumps({"type": "feature_flags", "data": self._feature_flags}))
            async for msg in ws:
                if msg.type == WSMsgType.TEXT:
                    self._on_client_message(client, msg.data)
                elif msg.type == WSMsgType.ERROR:
                    break
        finally:
            group = self._clients.get(client_id)
            if group is not None:
                group.discard(client)
                if not group:
                    del self._clients[client_id]
            sender.cancel()
            try:
                await sender
            except (asyncio.CancelledError, Exception):  # noqa: BLE001
                pass
        return ws

    def _on_client_message(self, client: Client, text: str) -> None:
        try:
            message = json.loads(text)
        except ValueError:
            return
        if (
            isinstance(message, dict)
            and message.get("type") == "feature_flags"
            and isinstance(message.get("data"), dict)
        ):
            client.features = dict(message["data"])

    async def _drain(self, client: Client) -> None:
        ws = client.ws
        while True:
            await client.has_mail.wait()
            while client.outbox:
                item = client.outbox.popleft()
                if ws.closed:
                    return
                try:
                    if isinstance(item, bytes):
                        await ws.send_bytes(item)
                    else:
                        await ws.send_str(item)
                except (ConnectionResetError, RuntimeError):
                    return
            client.has_mail.clear()

    async def close_all(self) -> None:
        for client in [c for group in self._clients.values() for c in group]:
            await client.ws.close(code=1001, message=b"server shutdown")
