"""ComfyUI's ``comfy_api.v0_0_2``: the same V3 API as ``comfy_api.latest`` under a pinned version name."""
from comfy_api.latest import ComfyAPI_latest, ComfyAPISync, ComfyExtension, Input, InputImpl, Types, io, ui  # noqa: F401


class ComfyAPIAdapter_v0_0_2(ComfyAPI_latest):  # noqa: N801 - ComfyUI's name
    VERSION = "0.0.2"


ComfyAPI = ComfyAPIAdapter_v0_0_2

__all__ = ["ComfyAPI", "ComfyAPISync", "Input", "InputImpl", "Types", "ComfyExtension", "io", "ui"]
