"""ComfyUI's ``comfy_extras`` package for plugins. Every ``comfy_extras.<module>`` (nodes_mask, nodes_latent,
nodes_upscale_model, ...) answers ComfyUI's node classes from Plexus's built-in nodes (nodes.comfy_names,
with ComfyUI's method names); a node Plexus lacks is an ImportError naming it. The modules are made on
import by the finder below; ``nodes_custom_sampler`` also holds the NOISE classes packs build."""
from __future__ import annotations

import importlib.abc
import importlib.machinery
import sys
import types


class _NodeModule(types.ModuleType):
    def __getattr__(self, name: str):
        from nodes.comfy_names import builtin_class
        if name.startswith("__"):
            raise AttributeError(name)
        try:
            return builtin_class(name)
        except LookupError:
            raise AttributeError(f"{self.__name__}.{name} is not a node Plexus has") from None


class _NodeModuleFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def find_spec(self, fullname, path=None, target=None):
        if fullname.startswith(__name__ + ".") and fullname.count(".") == 1:
            return importlib.machinery.ModuleSpec(fullname, self)
        return None

    def create_module(self, spec):
        return _NodeModule(spec.name)

    def exec_module(self, module):
        module.__doc__ = f"ComfyUI's {module.__name__}: its node classes, answered from Plexus's built-in nodes."


_FINDER = _NodeModuleFinder()
if not any(isinstance(f, _NodeModuleFinder) for f in sys.meta_path):
    sys.meta_path.append(_FINDER)    # after the path finder, so real files here (nodes_custom_sampler) win
