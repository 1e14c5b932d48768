"""ComfyUI's ``comfy_api.v0_0_1``: the same V3 API as ``comfy_api.latest`` under a pinned version name."""
from comfy_api.latest import ComfyAPI_latest, ComfyAPISync, ComfyExtension, Input, InputImpl, Types, io, ui  # noqa: F401


class ComfyAPIAdapter_v0_0_1(ComfyAPI_latest):  # noqa: N801 - ComfyUI's name
    VERSION = "0.0.1"


ComfyAPI = ComfyAPIAdapter_v0_0_1

__all__ = ["ComfyAPI", "ComfyAPISync", "Input", "InputImpl", "Types", "ComfyExtension", "io", "ui"]
