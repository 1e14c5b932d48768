"""ComfyUI's ``comfy.ldm`` for plugins: only what packs import from it at load (``modules.attention``)."""
