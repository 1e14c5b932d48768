"""ComfyUI's ``comfy_api.latest._input_impl``: video values. Plexus decodes no video; using one raises
a clear error (the names exist so packs that import them load)."""
from __future__ import annotations

from typing import Any

from ._input import VideoInput
from ._util import VideoComponents


class VideoFromFile(VideoInput):
    def __init__(self, file: Any):
        self._file = file

    def get_components(self) -> VideoComponents:
        raise NotImplementedError("Plexus does not decode video files (comfy_api VideoFromFile)")

    def save_to(self, path: str, format: Any = None, codec: Any = None, metadata: dict | None = None) -> None:
        raise NotImplementedError("Plexus does not encode video files (comfy_api VideoFromFile)")


class VideoFromComponents(VideoInput):
    def __init__(self, components: VideoComponents):
        self._components = components

    def get_components(self) -> VideoComponents:
        return self._components

    def save_to(self, path: str, format: Any = None, codec: Any = None, metadata: dict | None = None) -> None:
        raise NotImplementedError("Plexus does not encode video files (comfy_api VideoFromComponents)")
