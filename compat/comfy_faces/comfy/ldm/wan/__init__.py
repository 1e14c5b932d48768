"""ComfyUI's ``comfy.ldm.wan`` for plugins: only ``vae``'s layer classes (Plexus has no Wan model)."""
