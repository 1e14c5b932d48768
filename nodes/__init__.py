"""Plexus's nodes: the spec helper, the built-in nodes, plugin loading and registry filling.

``nodes`` is also the module custom-node packs import as ComfyUI's ``nodes``, so the package answers
ComfyUI's names lazily (PEP 562 ``__getattr__``; nothing is imported or built when ``nodes`` is):

- ``MAX_RESOLUTION``;
- ``NODE_CLASS_MAPPINGS`` / ``NODE_DISPLAY_NAME_MAPPINGS``: live views of the registry being filled
  (``nodes.services``), so a pack sees the built-ins and the packs loaded before it, and writing into
  them registers a node;
- ``EXTENSION_WEB_DIRS``: ``{pack: web directory}`` of the packs loaded so far;
- ``common_ksampler(model, seed, steps, cfg, sampler_name, scheduler, positive, negative, latent, ...)``;
- every built-in node class under its ComfyUI name (``nodes.CLIPTextEncode``, ``nodes.KSampler``),
  answering ComfyUI's method names (``nodes.comfy_methods``).
"""
from __future__ import annotations

from typing import Any

MAX_RESOLUTION = 16384


def __getattr__(name: str) -> Any:
    # submodules (``from nodes import services``) are looked up here before they are imported: only
    # ComfyUI's names (capitalised, or common_ksampler) are resolved
    if not (name[:1].isupper() or name == "common_ksampler"):
        raise AttributeError(f"module 'nodes' has no attribute {name!r}")
    import importlib

    comfy_names = importlib.import_module("nodes.comfy_names")
    try:
        return comfy_names.resolve(name)
    except LookupError:
        raise AttributeError(f"module 'nodes' has no attribute {name!r}") from None
