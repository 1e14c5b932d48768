"""ComfyUI's ``server`` module for plugins: ``PromptServer`` and ``BinaryEventTypes``, a face over
Plexus's ``web.plugin_api.PluginWebAPI``.

``PromptServer.instance`` exists as soon as a plugin imports ``server`` (packs add routes at import):
it wraps the API main.py installed in ``nodes.services`` for the server, or a detached one (routes
never mounted, messages dropped) under ``run`` / ``check``. ``routes`` is the aiohttp
``RouteTableDef`` Plexus mounts under ``/`` and ``/api``; ``send_sync(event, data, sid)`` reaches the
editor through the event bus and the websocket hub; ``client_id`` / ``last_node_id`` follow the running
prompt.
"""
from __future__ import annotations

import io
import struct
from typing import Any, Callable

from aiohttp import web  # noqa: F401  (ComfyUI's server module has it as an attribute: packs use server.web)

from nodes import services as _services
from web.plugin_api import PluginWebAPI


class BinaryEventTypes:
    PREVIEW_IMAGE = 1
    UNENCODED_PREVIEW_IMAGE = 2
    TEXT = 3
    PREVIEW_IMAGE_WITH_METADATA = 4


def _encode_image(image_data: Any) -> tuple[str, bytes]:
    """ComfyUI's ``[format, PIL image, max_size]`` preview -> (format, encoded bytes)."""
    from PIL import Image, ImageOps

    image_type, image, max_size = image_data[0], image_data[1], image_data[2]
    if max_size is not None:
        image = ImageOps.contain(image, (max_size, max_size), Image.Resampling.BILINEAR)
    buffer = io.BytesIO()
    image.save(buffer, format=image_type, quality=95, compress_level=1)
    return image_type, buffer.getvalue()


class PromptQueue:
    """``PromptServer.instance.prompt_queue``: ``currently_running`` holds the running prompt as ComfyUI's
    ``(number, prompt_id, prompt, extra_data, outputs_to_execute)`` (prompt and extra_data are not
    exposed to plugins by Plexus's executor yet: empty dicts); queueing from a plugin is not supported."""

    @property
    def currently_running(self) -> dict:
        from execution.protocol import current_context
        context = current_context()
        return {} if context is None else {0: (0, context.prompt_id, {}, {}, [])}

    def put(self, item: Any) -> None:
        raise NotImplementedError("PromptServer.instance.prompt_queue.put: plugins cannot queue prompts in "
                                  "Plexus yet; POST /prompt instead")

    def get_tasks_remaining(self) -> int:
        return len(self.currently_running)


class PromptServer:
    instance: PromptServer | None = None
    prompt_queue = PromptQueue()

    def __init__(self, api: PluginWebAPI):
        self._api = api
        PromptServer.instance = self

    # --- state read from Plexus's API -----------------------------------------------------------
    routes = property(lambda self: self._api.routes)
    app = property(lambda self: self._api.app)
    loop = property(lambda self: self._api.loop)
    supports = property(lambda self: self._api.supports)
    on_prompt_handlers = property(lambda self: self._api.on_prompt_handlers)
    last_prompt_id = property(lambda self: self._api.last_prompt_id)

    @property
    def client_id(self) -> str | None:
        return self._api.client_id

    @client_id.setter
    def client_id(self, value: str | None) -> None:
        self._api.client_id = value

    @property
    def last_node_id(self) -> str | None:
        return self._api.last_node_id

    @last_node_id.setter
    def last_node_id(self, value: str | None) -> None:
        self._api.last_node_id = value

    @property
    def number(self) -> int:
        return self._api.number

    @number.setter
    def number(self, value: int) -> None:
        self._api.number = value

    @property
    def feature_flags(self) -> dict[str, Any]:
        return self._api.feature_flags

    # --- messages --------------------------------------------------------------------------------
    def send_sync(self, event: str | int, data: Any, sid: str | None = None) -> None:
        if event == BinaryEventTypes.UNENCODED_PREVIEW_IMAGE:
            self._api.send_preview(*_encode_image(data), client_id=sid)
        elif event == BinaryEventTypes.PREVIEW_IMAGE_WITH_METADATA:
            image_data, metadata = data
            self._api.send_preview(*_encode_image(image_data), client_id=sid, meta=metadata)
        elif isinstance(data, (bytes, bytearray)):
            self._api.send(int(event), bytes(data), sid)
        else:
            self._api.send(event, data, sid)

    async def send(self, event: str | int, data: Any, sid: str | None = None) -> None:
        self.send_sync(event, data, sid)

    async def send_json(self, event: str, data: Any, sid: str | None = None) -> None:
        self._api.send(event, data, sid)

    async def send_bytes(self, event: int, data: bytes, sid: str | None = None) -> None:
        self._api.send(int(event), bytes(data), sid)

    def send_progress_text(self, text: str | bytes, node_id: str, sid: str | None = None) -> None:
        """ComfyUI's TEXT frame: ``uint32 len(node_id) | node_id | text``."""
        raw = text.encode("utf-8") if isinstance(text, str) else bytes(text)
        node = str(node_id).encode("utf-8")
        self._api.send(BinaryEventTypes.TEXT, struct.pack(">I", len(node)) + node + raw, sid)

    def queue_updated(self) -> None:
        """Plexus's worker sends ``status`` after every queue change itself."""

    # --- POST /prompt hooks ----------------------------------------------------------------------
    def add_on_prompt_handler(self, handler: Callable[[dict], dict]) -> None:
        self._api.add_on_prompt_handler(handler)

    def trigger_on_prompt(self, json_data: dict) -> dict:
        return self._api.trigger_on_prompt(json_data)


def _installed_api() -> PluginWebAPI:
    current = _services.installed()
    api = getattr(current, "web_api", None)
    if api is None:
        api = PluginWebAPI(getattr(current, "events", None))
        if current is not None:
            current.web_api = api
    return api


PromptServer(_installed_api())


def _as_comfy_root_file(name: str) -> str | None:
    """Where ``<name>.py`` would sit in ComfyUI's install folder, as plugins see it: inside the per-user
    ``Folders.plugin_root`` (created here). Packs locate ComfyUI with ``os.path.dirname(inspect.getfile(
    PromptServer))`` or ``folder_paths.__file__`` and write ``web/extensions/<pack>/`` and data files below
    it (they create the folders they need); that lands in the user folder and is served, instead of in
    Plexus's source tree. None (the face's own file stays) when no Plexus layout is installed."""
    folders = getattr(_services.installed(), "folders", None)
    return str(folders.plugin_root / f"{name}.py") if folders is not None else None


__file__ = _as_comfy_root_file("server") or __file__
