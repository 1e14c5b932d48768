"""ComfyUI's ``comfy.ldm`` for plugins: the modules packs import from it at load (``modules.attention``,
``modules.diffusionmodules``, ``flux.math``, ``lumina.model``, ``wan.vae``, ``lightricks.vae``, ``util``); see
each module for what is a real layer and what is a name that raises when built."""
