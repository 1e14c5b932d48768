"""What custom-node packs reach of the server (ComfyUI's ``PromptServer`` surface), as Plexus's own API.

A :class:`PluginWebAPI` exists before any plugin is imported (packs add routes at import time):

- ``routes``: an aiohttp ``RouteTableDef``; :meth:`mount` adds its routes at ``/X`` and ``/api/X``
  (static routes at their own path only) after Plexus's API routes and before the editor's files;
- ``send(event, data, client_id)``: a message to the editor through the event bus and the websocket
  hub: JSON for ``str`` events, ``{"type": "binary", "data": {"event": int, "bytes": ...}}`` for
  ComfyUI's binary event numbers (the hub sends ``uint32 event | bytes``);
- ``on_prompt_handlers``: ``handler(body) -> body`` called on every POST /prompt body before it is
  read (a handler that raises is logged and skipped);
- ``client_id`` / ``last_node_id`` / ``last_prompt_id``: the client of the running prompt and the node
  running now, tracked from the engine's events;
- ``app``: an aiohttp application from the start, as ComfyUI's ``PromptServer.instance.app`` is while packs
  import (KJNodes checks ``app.router.frozen`` and adds a static route to it); :meth:`mount` moves what packs
  registered on it into the server's application, which ``app`` is from then on;
- ``supports`` and ``feature_flags``: what packs check (``custom_nodes_from_web``: the server serves
  each pack's ``WEB_DIRECTORY`` itself, so packs need not copy their JavaScript into the front end).
"""
from __future__ import annotations

import logging
import traceback
from typing import Any, Callable

from aiohttp import web

log = logging.getLogger("plexus.web.plugins")

SUPPORTS = ("custom_nodes_from_web",)
BINARY_EVENT = "binary"


class PluginWebAPI:
    def __init__(self, events: Any, feature_flags: dict[str, Any] | None = None) -> None:
        self.events = events
        self.routes = web.RouteTableDef()
        self.app: web.Application = web.Application()   # the import-time app; mount() moves its routes
        self.loop: Any = None
        self.on_prompt_handlers: list[Callable[[dict], dict]] = []
        self.supports = list(SUPPORTS)
        self.feature_flags: dict[str, Any] = dict(feature_flags or {})
        self.client_id: str | None = None
        self.last_node_id: str | None = None
        self.last_prompt_id: str | None = None
        self.number = 0
        self._unsubscribe = events.subscribe(self._track) if events is not None else None

    # --- what the engine is doing ------------------------------------------------------------------
    def _track(self, event: Any) -> None:
        data = event.data if isinstance(event.data, dict) else {}
        if event.type == "execution_start":
            self.client_id = event.client_id
            self.last_prompt_id = data.get("prompt_id")
        elif event.type == "executing":
            self.last_node_id = data.get("node")
            if data.get("prompt_id"):
                self.last_prompt_id = data.get("prompt_id")

    # --- messages to the editor --------------------------------------------------------------------
    def send(self, event: str | int, data: Any, client_id: str | None = None) -> None:
        """Queue a message for one client (or all when ``client_id`` is None); any thread."""
        if self.events is None:
            return
        if isinstance(event, int):
            self.events.emit(BINARY_EVENT, {"event": event, "bytes": bytes(data)}, client_id)
        else:
            self.events.emit(str(event), data, client_id)

    def send_preview(self, image_format: str, data: bytes, client_id: str | None = None,
                     meta: dict[str, Any] | None = None) -> None:
        """An already-encoded preview image (JPEG/PNG bytes), framed per client as the engine's are."""
        from execution.protocol import Preview

        meta = dict(meta or {})
        node_id = meta.get("node_id", self.last_node_id)
        self.events.emit("preview", {"prompt_id": meta.get("prompt_id", self.last_prompt_id), "node_id": node_id,
                                     "display_node_id": meta.get("display_node_id", node_id),
                                     "preview": Preview(image_format.upper(), data)}, client_id)

    # --- POST /prompt -----------------------------------------------------------------------------
    def add_on_prompt_handler(self, handler: Callable[[dict], dict]) -> None:
        self.on_prompt_handlers.append(handler)

    def trigger_on_prompt(self, body: dict) -> dict:
        for handler in list(self.on_prompt_handlers):
            try:
                body = handler(body)
            except Exception:  # a broken plugin handler must not refuse prompts
                log.warning("an on_prompt handler (%r) failed:\n%s", handler, traceback.format_exc())
        return body

    # --- the application --------------------------------------------------------------------------
    def mount(self, app: web.Application) -> None:
        """Add the plugins' routes to ``app``: each at ``/api`` + path and at its own path."""
        early, self.app = self.app, app
        if early is not app:
            for resource in early.router.resources():
                try:
                    app.router.register_resource(resource)
                except (ValueError, RuntimeError) as exc:
                    log.warning("plugin route %s not mounted: %s", resource.canonical, exc)
        api_routes = web.RouteTableDef()
        for route in self.routes:
            if isinstance(route, web.RouteDef):
                api_routes.route(route.method, "/api" + route.path)(route.handler, **route.kwargs)
        for table in (api_routes, self.routes):
            try:
                app.add_routes(table)
            except (ValueError, RuntimeError) as exc:  # a route clashing with Plexus's own
                log.warning("plugin routes not mounted: %s", exc)

    def close(self) -> None:
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None
