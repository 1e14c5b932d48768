"""ComfyUI's ``comfy.cldm`` for plugins: ``cldm.ControlNet``, the name packs subclass."""
