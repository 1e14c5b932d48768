"""ComfyUI's ``comfy.ldm.flux`` for plugins: only ``math`` (the rotary-embedding helpers packs call on their own
q/k). Plexus's Flux model itself is models/flux.py; ComfyUI's Flux module classes are not faced."""
