"""ComfyUI's ``comfy.ldm.lightricks.vae`` for plugins."""
