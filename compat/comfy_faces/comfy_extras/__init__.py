"""ComfyUI's ``comfy_extras`` package for plugins: each module answers ComfyUI's node classes of that
module from Plexus's built-in nodes (nodes.comfy_names), with ComfyUI's method names."""
