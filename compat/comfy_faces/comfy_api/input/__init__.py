"""ComfyUI's ``comfy_api.input``: the value types of ``comfy_api.latest.Input``."""
from comfy_api.latest._input import AudioInput, ImageInput, LatentInput, MaskInput, VideoInput

__all__ = ["ImageInput", "AudioInput", "MaskInput", "LatentInput", "VideoInput"]
