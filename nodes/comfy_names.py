"""What ``nodes.<Name>`` answers for plugins (see ``nodes/__init__.py``): ComfyUI's module-level names
of its ``nodes`` module, each over Plexus's own registry, node services and sampling driver."""
from __future__ import annotations

import importlib
from collections.abc import Iterator, MutableMapping
from typing import Any

from nodes import comfy_methods, services
from nodes.builtin import BUILTIN_MODULES
from nodes.spec import module_mappings


def _registry() -> Any:
    current = services.installed()
    registry = getattr(current, "registry", None)
    if registry is None:
        raise LookupError("no node registry is installed (nodes.services.install(NodeServices(registry=...)))")
    return registry


class ClassMappings(MutableMapping):
    """``NODE_CLASS_MAPPINGS``: the live registry as ComfyUI's dict (class_type -> class)."""

    def __getitem__(self, key: str) -> type:
        cls = _registry().get(key)
        if cls is None:
            raise KeyError(key)
        return cls

    def __setitem__(self, key: str, cls: type) -> None:
        _registry().register(key, cls, python_module=getattr(cls, "RELATIVE_PYTHON_MODULE", "custom_nodes"))

    def __delitem__(self, key: str) -> None:
        if key not in _registry():
            raise KeyError(key)
        _registry().unregister(key)

    def __iter__(self) -> Iterator[str]:
        return iter(list(_registry().names()))

    def __len__(self) -> int:
        return len(_registry().names())

    def __repr__(self) -> str:
        return f"NODE_CLASS_MAPPINGS({len(self)} nodes)"


class DisplayNameMappings(MutableMapping):
    """``NODE_DISPLAY_NAME_MAPPINGS``: the registry's display names (only those set explicitly)."""

    def _names(self) -> dict[str, str]:
        registry = _registry()
        return {name: registry.display_name(name) for name in registry.names()
                if registry.display_name(name) != name}

    def __getitem__(self, key: str) -> str:
        return self._names()[key]

    def __setitem__(self, key: str, value: str) -> None:
        registry = _registry()
        cls = registry.get(key)
        if cls is None:
            raise KeyError(f"{key!r} is not a registered node")
        registry.register(key, cls, display_name=str(value), python_module=registry.python_module(key))

    def __delitem__(self, key: str) -> None:
        raise TypeError("display names cannot be removed")

    def __iter__(self) -> Iterator[str]:
        return iter(self._names())

    def __len__(self) -> int:
        return len(self._names())


def builtin_class(name: str) -> type:
    """The built-in node registered as ``name`` (or whose Python class is called ``name``), with
    ComfyUI's method attached."""
    by_class_name = None
    for module_path in BUILTIN_MODULES:
        try:
            classes, _ = module_mappings(importlib.import_module(module_path))
        except Exception:      # a built-in module that cannot import (reported at start-up)
            continue
        if name in classes:
            comfy_methods.attach(classes[name], name)
            return classes[name]
        for class_type, cls in classes.items():
            if by_class_name is None and cls.__name__ == name:
                comfy_methods.attach(cls, class_type)
                by_class_name = cls
    if by_class_name is None:
        raise LookupError(name)
    return by_class_name


def common_ksampler(model: Any, seed: int, steps: int, cfg: float, sampler_name: str, scheduler: str,
                    positive: list, negative: list, latent: dict, denoise: float = 1.0,
                    disable_noise: bool = False, start_step: int | None = None, last_step: int | None = None,
                    force_full_denoise: bool = False) -> tuple[dict]:
    """ComfyUI's ``nodes.common_ksampler``: KSampler(Advanced) on a LATENT dict, progress and previews
    through the running node."""
    from diffusion.ksampler import ksample

    current = services.installed()
    preview_folders = current.folders.paths("vae_approx") if current is not None else ()
    return (ksample(model, latent, positive, negative, seed=seed, steps=steps, cfg=cfg,
                    sampler_name=sampler_name, scheduler=scheduler, denoise=denoise, add_noise=not disable_noise,
                    start_step=start_step, last_step=last_step,
                    return_with_leftover_noise=not force_full_denoise, preview_folders=preview_folders),)


def resolve(name: str) -> Any:
    """One of ComfyUI's ``nodes`` names; LookupError if it is none of them."""
    if name == "NODE_CLASS_MAPPINGS":
        return ClassMappings()
    if name == "NODE_DISPLAY_NAME_MAPPINGS":
        return DisplayNameMappings()
    if name == "EXTENSION_WEB_DIRS":
        current = services.installed()
        return current.extension_web_dirs if current is not None else {}
    if name == "common_ksampler":
        return common_ksampler
    if name.startswith("_") or not name[:1].isupper():
        raise LookupError(name)
    return builtin_class(name)
