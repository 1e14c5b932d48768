"""ComfyUI's ``comfy.ldm.modules.diffusionmodules`` for plugins: only ``model.ResnetBlock``."""
