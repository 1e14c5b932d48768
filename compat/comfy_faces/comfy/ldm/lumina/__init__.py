"""ComfyUI's ``comfy.ldm.lumina`` for plugins: only ``model.FeedForward``."""
