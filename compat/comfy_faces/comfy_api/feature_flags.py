"""ComfyUI's ``comfy_api.feature_flags``: the server's feature flags (those of the ``server`` face) and
the per-connection lookups packs call with ``PromptServer.instance.sockets_metadata``."""
from __future__ import annotations

from typing import Any


def get_server_features() -> dict[str, Any]:
    from server import PromptServer

    server = PromptServer.instance
    return dict(server.feature_flags) if server is not None else {}


def get_connection_feature(sockets_metadata: dict[str, dict[str, Any]], sid: str, feature_name: str,
                           default: Any = False) -> Any:
    if sid not in sockets_metadata:
        return default
    return sockets_metadata[sid].get("feature_flags", {}).get(feature_name, default)


def supports_feature(sockets_metadata: dict[str, dict[str, Any]], sid: str, feature_name: str) -> bool:
    return get_connection_feature(sockets_metadata, sid, feature_name, False) is True
