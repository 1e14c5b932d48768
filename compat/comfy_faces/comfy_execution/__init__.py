"""ComfyUI's ``comfy_execution`` package for plugins (graph_utils, graph), over execution.protocol."""
