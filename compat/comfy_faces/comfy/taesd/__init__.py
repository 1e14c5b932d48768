"""ComfyUI's ``comfy.taesd`` for plugins: the TAESD building blocks (``taesd``)."""
