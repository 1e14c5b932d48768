"""ComfyUI's ``comfy.k_diffusion`` for plugins (``sampling``: the sampler functions by name)."""
