"""What the server is given: one object with the engine, the store, the event bus and the folders.

``main.py`` builds a :class:`Services` and a :class:`ServerSettings` and hands them to
``web.server.create_app``. Everything that needs torch or device knowledge (system stats with VRAM,
unloading models) arrives here as a plain callable so that ``web/`` stays free of torch and of
``nodes``.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

DEFAULT_MAX_UPLOAD_BYTES = 100 * 1024 * 1024
PLEXUS_VERSION = "0.1.0"
# The ComfyUI release whose API Plexus speaks; the editor compares versions with it.
COMFYUI_COMPAT_VERSION = "0.3.64"


@dataclass
class Plugin:
    """A loaded custom-node pack as the server sees it: its folder and its web directory (if any)."""

    name: str
    root: Path
    web_directory: Path | None = None


@dataclass
class ServerSettings:
    listen: str = "127.0.0.1"
    port: int = 8188
    max_upload_bytes: int = DEFAULT_MAX_UPLOAD_BYTES
    cors_origin: str | None = None  # --enable-cors-header [ORIGIN]; "*" when given bare
    api_token: str | None = None  # --api-token / PLEXUS_API_TOKEN
    front_end_root: Path | None = None  # --front-end-root; None = the installed package
    tls_keyfile: str | None = None
    tls_certfile: str | None = None
    argv: list[str] = field(default_factory=lambda: list(sys.argv))
    prompt_wait_max_s: float = 3600.0


def default_system_stats() -> dict[str, Any]:
    """System stats without torch: RAM from psutil (if present), one CPU device."""
    try:
        import psutil

        mem = psutil.virtual_memory()
        ram_total, ram_free = int(mem.total), int(mem.available)
    except Exception:  # psutil missing or failing: report zeros rather than breaking the editor
        ram_total = ram_free = 0
    return {
        "system": {
            "ram_total": ram_total,
            "ram_free": ram_free,
            "pytorch_version": "",
            "embedded_python": False,
        },
        "devices": [
            {
                "name": "cpu",
                "type": "cpu",
                "index": None,
                "vram_total": ram_total,
                "vram_free": ram_free,
                "torch_vram_total": ram_total,
                "torch_vram_free": ram_free,
            }
        ],
    }


@dataclass
class Services:
    """Everything the server talks to. ``engine``, ``store``, ``events``, ``registry`` follow the
    contracts of docs/architecture.md (execution's public API)."""

    engine: Any
    store: Any
    events: Any
    registry: Any
    folders: Any  # storage.Folders
    worker: Any = None
    plugins: list[Plugin] = field(default_factory=list)
    system_stats: Callable[[], dict[str, Any]] = default_system_stats
    free_memory: Callable[..., None] | None = None  # free_memory(unload_models=bool, free_memory=bool)
    plugin_api: Any = None  # web.plugin_api.PluginWebAPI: the plugins' routes, messages, on-prompt handlers
