"""ComfyUI's ``comfy.ldm.lightricks`` for plugins (Plexus has no LTX-Video model): ``vae`` layer names."""
