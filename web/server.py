"""The aiohttp application: ``create_app(services, settings)`` and ``serve(...)`` for main.py.

Route layout (ComfyUI's): every API route exists at ``/X`` and ``/api/X``; ``/internal/...`` is not
prefixed; the websocket is ``/ws`` (and ``/api/ws``); the editor's static files come last so that no
file can shadow an API route.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from typing import Awaitable, Callable

from aiohttp import web

from . import routes_files, routes_info, routes_prompt
from .editor import STATIC_ROOT, add_editor_routes, find_front_end
from .security import is_loopback_host, make_middlewares
from .services import ServerSettings, Services
from .state import STATE, AppState

log = logging.getLogger("plexus.web")
API_TABLES = (routes_prompt.routes, routes_files.routes, routes_info.routes)
# Requests other than uploads are small; a little slack over the upload limit covers multipart framing.
MULTIPART_SLACK_BYTES = 1 << 20


def feature_flags(settings: ServerSettings) -> dict[str, object]:
    """Sent as the ws ``feature_flags`` message and by GET /features (the editor reads both)."""
    return {"supports_preview_metadata": True, "max_upload_size": settings.max_upload_bytes}


def create_app(services: Services, settings: ServerSettings | None = None) -> web.Application:
    settings = settings or ServerSettings()
    app = web.Application(
        middlewares=make_middlewares(cors_origin=settings.cors_origin, api_token=settings.api_token),
        client_max_size=settings.max_upload_bytes + MULTIPART_SLACK_BYTES,
    )
    state = AppState(services, settings, feature_flags(settings))
    app[STATE] = state
    static_root = find_front_end(settings.front_end_root)
    app[STATIC_ROOT] = static_root

    for prefix in ("", "/api"):
        for table in API_TABLES:
            for route in table:
                app.router.add_route(route.method, prefix + route.path, route.handler)  # type: ignore[attr-defined]
        app.router.add_get(prefix + "/ws", state.hub.handle)
    for route in routes_info.internal:
        app.router.add_route(route.method, "/internal" + route.path, route.handler)  # type: ignore[attr-defined]
    plugin_api = getattr(services, "plugin_api", None)
    if plugin_api is not None:
        state.feature_flags.update(plugin_api.feature_flags)
        plugin_api.mount(app)          # plugin routes before the editor's files, which match anything
    add_editor_routes(app, static_root, services.plugins, services.registry)

    async def on_startup(_: web.Application) -> None:
        await state.start()
        if plugin_api is not None:
            plugin_api.loop = asyncio.get_running_loop()

    async def on_shutdown(_: web.Application) -> None:
        await state.stop()

    app.on_startup.append(on_startup)
    app.on_shutdown.append(on_shutdown)
    return app


def ssl_context(settings: ServerSettings) -> ssl.SSLContext | None:
    if not settings.tls_certfile and not settings.tls_keyfile:
        return None
    if not (settings.tls_certfile and settings.tls_keyfile):
        raise ValueError("TLS needs both --tls-certfile and --tls-keyfile.")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(settings.tls_certfile, settings.tls_keyfile)
    return context


def listen_hosts(settings: ServerSettings) -> list[str]:
    return [h.strip() for h in (settings.listen or "127.0.0.1").split(",") if h.strip()] or ["127.0.0.1"]


def url_of(settings: ServerSettings, port: int) -> str:
    scheme = "https" if settings.tls_certfile else "http"
    host = listen_hosts(settings)[0]
    if host in ("0.0.0.0", "::", ""):
        host = "127.0.0.1"
    if ":" in host:
        host = f"[{host}]"
    return f"{scheme}://{host}:{port}"


def exposure_warning(settings: ServerSettings) -> str | None:
    """The warning printed when the server listens beyond this machine."""
    exposed = [h for h in listen_hosts(settings) if not is_loopback_host(h)]
    if not exposed:
        return None
    if settings.api_token:
        return (
            f"plexus: listening on {', '.join(exposed)}, reachable from other machines; every request "
            "needs the API token."
        )
    return (
        f"plexus: WARNING: listening on {', '.join(exposed)}, reachable from other machines, with no "
        "API token: anyone who can reach this port can run prompts and read your outputs. Use "
        "--api-token (or PLEXUS_API_TOKEN) or --listen 127.0.0.1."
    )


async def start(services: Services, settings: ServerSettings) -> tuple[web.AppRunner, int]:
    """Start listening; returns the runner (``await runner.cleanup()`` to stop) and the bound port."""
    app = create_app(services, settings)
    runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=5.0)
    await runner.setup()
    port = settings.port
    context = ssl_context(settings)
    for host in listen_hosts(settings):  # "--listen" bare means "0.0.0.0,::"
        site = web.TCPSite(runner, host, port, ssl_context=context)
        await site.start()
        server = getattr(site, "_server", None)
        if port == 0 and server is not None and server.sockets:
            port = server.sockets[0].getsockname()[1]  # the free port picked for the first host
    return runner, port


def serve(
    services: Services,
    settings: ServerSettings,
    on_ready: Callable[[str], Awaitable[None] | None] | None = None,
) -> None:
    """Run the server until interrupted (Ctrl+C). ``on_ready(url)`` is called once it listens."""

    async def main() -> None:
        runner, port = await start(services, settings)
        url = url_of(settings, port)
        warning = exposure_warning(settings)
        if warning:
            print(warning, flush=True)
        if on_ready is not None:
            result = on_ready(url)
            if asyncio.iscoroutine(result):
                await result
        else:
            print(f"plexus: ready at {url}", flush=True)
        try:
            await asyncio.Event().wait()
        finally:
            await runner.cleanup()

    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        pass


__all__ = ["create_app", "serve", "start", "feature_flags", "url_of", "exposure_warning"]
