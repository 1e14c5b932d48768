"""ComfyUI's ``comfy_api.input_impl``: video values (see comfy_api.latest._input_impl)."""
from comfy_api.latest._input_impl import VideoFromComponents, VideoFromFile

__all__ = ["VideoFromFile", "VideoFromComponents"]
