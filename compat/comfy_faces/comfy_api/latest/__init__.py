"""ComfyUI's ``comfy_api.latest``: ``io`` (the V3 node schema), ``ui`` (preview outputs),
``ComfyExtension`` (what a pack's ``comfy_entrypoint()`` returns), ``ComfyAPI`` / ``ComfyAPISync``
(``execution.set_progress`` over Plexus's node context) and the ``Input`` / ``InputImpl`` / ``Types``
namespaces."""
from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

from . import _io as io
from . import _ui as ui
from ._input import AudioInput, ImageInput, LatentInput, MaskInput, VideoInput
from ._input_impl import VideoFromComponents, VideoFromFile
from ._util import VideoCodec, VideoComponents, VideoContainer


class ComfyExtension(ABC):
    """A V3 pack: ``comfy_entrypoint()`` returns one; Plexus awaits ``on_load()`` and then
    ``get_node_list()`` while the pack loads."""

    async def on_load(self) -> None:
        """Called once when the pack loads (set up what its nodes share)."""

    @abstractmethod
    async def get_node_list(self) -> list[type[io.ComfyNode]]:
        """The pack's node classes."""


def _set_progress(value: float, max_value: float, node_id: str | None, preview_image: Any) -> None:
    from execution.protocol import current_context

    context = current_context()
    if context is None or (node_id is not None and node_id != context.node_id):
        raise ValueError("set_progress: Plexus reports progress for the node that is running; call it from "
                         "that node's execute (node_id may be left out)")
    preview = None
    if preview_image is not None:
        from comfy_api.latest._ui import preview_of

        preview = preview_of(preview_image)
    context.report_progress(value, max_value, preview)


class ComfyAPI_latest:  # noqa: N801 - ComfyUI's name
    VERSION = "latest"
    STABLE = False

    class Execution:
        async def set_progress(self, value: float, max_value: float, node_id: str | None = None,
                               preview_image: Any = None, ignore_size_limit: bool = False) -> None:
            """Update the running node's progress bar (and preview image) in the editor."""
            _set_progress(value, max_value, node_id, preview_image)

    def __init__(self) -> None:
        self.execution = self.Execution()


class ComfyAPISync(ComfyAPI_latest):
    """The same calls without ``await``."""

    class Execution:
        def set_progress(self, value: float, max_value: float, node_id: str | None = None,
                         preview_image: Any = None, ignore_size_limit: bool = False) -> None:
            _set_progress(value, max_value, node_id, preview_image)


ComfyAPI = ComfyAPI_latest


class Input:
    Image = ImageInput
    Audio = AudioInput
    Mask = MaskInput
    Latent = LatentInput
    Video = VideoInput


class InputImpl:
    VideoFromFile = VideoFromFile
    VideoFromComponents = VideoFromComponents


class Types:
    VideoCodec = VideoCodec
    VideoContainer = VideoContainer
    VideoComponents = VideoComponents


comfy_io = io

__all__ = ["ComfyAPI", "ComfyAPISync", "Input", "InputImpl", "Types", "ComfyExtension", "io", "comfy_io", "ui"]
