"""ComfyUI's ``comfy_api.util``: the video enums and components record."""
from comfy_api.latest._util import VideoCodec, VideoComponents, VideoContainer

__all__ = ["VideoContainer", "VideoCodec", "VideoComponents"]
