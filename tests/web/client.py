"""Async client helpers for the server tests (aiohttp client; each test runs ``asyncio.run``)."""

from __future__ import annotations

import asyncio
import json
import struct
from typing import Any

import aiohttp

END_TYPES = ("execution_success", "execution_error", "execution_interrupted")


class Listener:
    """A websocket client that records every message; ``until_end(prompt_id)`` waits for its end."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        url: str,
        client_id: str | None = None,
        preview_metadata: bool = True,
    ):
        self.session, self.url, self.client_id = session, url, client_id
        self.preview_metadata = preview_metadata
        self.messages: list[tuple[str, Any]] = []  # (type, data); binary frames as ("binary", bytes)
        self._changed = asyncio.Event()
        self.sid: str | None = None

    async def __aenter__(self) -> "Listener":
        query = f"?clientId={self.client_id}" if self.client_id else ""
        self.ws = await self.session.ws_connect(self.url.replace("http", "ws", 1) + "/ws" + query)
        await self.ws.send_str(
            json.dumps(
                {"type": "feature_flags", "data": {"supports_preview_metadata": self.preview_metadata}}
            )
        )
        self.task = asyncio.create_task(self._read())
        await self.wait_for(lambda: any(t == "feature_flags" for t, _ in self.messages))
        self.sid = next(d["sid"] for t, d in self.messages if t == "status")
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.ws.close()
        self.task.cancel()

    async def _read(self) -> None:
        async for msg in self.ws:
            if msg.type == aiohttp.WSMsgType.TEXT:
                data = json.loads(msg.data)
                self.messages.append((data["type"], data["data"]))
            elif msg.type == aiohttp.WSMsgType.BINARY:
                self.messages.append(("binary", msg.data))
            self._changed.set()

    async def wait_for(self, predicate: Any, timeout_s: float = 30) -> None:
        async def loop() -> None:
            while not predicate():
                self._changed.clear()
                await self._changed.wait()

        await asyncio.wait_for(loop(), timeout_s)

    async def until_end(self, prompt_id: str, timeout_s: float = 30) -> str:
        await self.wait_for(
            lambda: any(t in END_TYPES and d.get("prompt_id") == prompt_id for t, d in self.messages),
            timeout_s,
        )
        return next(t for t, d in self.messages if t in END_TYPES and d.get("prompt_id") == prompt_id)

    async def until_recorded(self, prompt_id: str, timeout_s: float = 30) -> str:
        """The end event, then the ``status`` the worker sends once the result is in the history."""
        kind = await self.until_end(prompt_id, timeout_s)

        def recorded() -> bool:
            end = next(
                i
                for i, (t, d) in enumerate(self.messages)
                if t in END_TYPES and d.get("prompt_id") == prompt_id
            )
            return any(t == "status" for t, _ in self.messages[end + 1 :])

        await self.wait_for(recorded, timeout_s)
        return kind

    def of(self, prompt_id: str) -> list[tuple[str, Any]]:
        """Messages about one prompt (binary previews included when they name it)."""
        found = []
        for kind, data in self.messages:
            if kind == "binary":
                meta = decode_preview(data)[0]
                if meta.get("prompt_id") in (prompt_id, None):
                    found.append((kind, data))
            elif isinstance(data, dict) and data.get("prompt_id") == prompt_id:
                found.append((kind, data))
        return found


def decode_preview(frame: bytes) -> tuple[dict[str, Any], bytes]:
    (event,) = struct.unpack(">I", frame[:4])
    if event == 4:
        (length,) = struct.unpack(">I", frame[4:8])
        return json.loads(frame[8 : 8 + length]), frame[8 + length :]
    if event == 1:
        (fmt,) = struct.unpack(">I", frame[4:8])
        return {"format": fmt}, frame[8:]
    raise AssertionError(f"unknown binary event {event}")


async def post(session: aiohttp.ClientSession, url: str, body: Any = None, **kw: Any) -> tuple[int, Any]:
    data = kw.pop("data", None)
    if data is None and body is not None:
        data = json.dumps(body)
    async with session.post(url, data=data, **kw) as response:
        text = await response.text()
        try:
            return response.status, json.loads(text)
        except ValueError:
            return response.status, text


async def get(session: aiohttp.ClientSession, url: str, **kw: Any) -> tuple[int, Any]:
    async with session.get(url, **kw) as response:
        text = await response.text()
        try:
            return response.status, json.loads(text)
        except ValueError:
            return response.status, text


async def queue(session: aiohttp.ClientSession, base: str, prompt: dict[str, Any], **extra: Any) -> str:
    status, body = await post(session, base + "/prompt", {"prompt": prompt, **extra})
    assert status == 200, body
    return body["prompt_id"]
