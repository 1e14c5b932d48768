"""An example Plexus plugin: classic ComfyUI custom nodes plus a small web extension.

It uses only the classic node protocol, so the same folder also loads in ComfyUI. Copy it as a
starting point: ``NODE_CLASS_MAPPINGS`` and ``NODE_DISPLAY_NAME_MAPPINGS`` name the nodes,
``WEB_DIRECTORY`` is a folder (relative to this one) whose ``*.js`` files the editor loads.
"""
from .example_nodes import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS

WEB_DIRECTORY = "./web"

__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS", "WEB_DIRECTORY"]
