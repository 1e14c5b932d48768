"""ComfyUI's ``comfy_api.internal``: the helpers V3 node code and packs import from it.

``_ComfyNodeInternal`` / ``_NodeOutputInternal`` are the bases ComfyUI's executor tests with
``issubclass``; here ``comfy_api.latest.io.ComfyNode`` / ``NodeOutput`` derive from them so packs that
test the same way get the same answers."""
from __future__ import annotations

from dataclasses import asdict
from typing import Any, Callable


class _ComfyNodeInternal:
    """Base of every V3 node class (``io.ComfyNode``)."""

    @classmethod
    def GET_NODE_INFO_V1(cls) -> dict[str, Any]:  # noqa: N802 - ComfyUI's name
        raise NotImplementedError


class _NodeOutputInternal:
    """Base of every V3 node result (``io.NodeOutput``)."""


def prune_dict(d: dict) -> dict:
    """``d`` without the entries whose value is None."""
    return {key: value for key, value in d.items() if value is not None}


def as_pruned_dict(dataclass_obj: Any) -> dict:
    return prune_dict(asdict(dataclass_obj))


def is_class(obj: Any) -> bool:
    """True for a class, False for an instance."""
    return isinstance(obj, type)


def copy_class(cls: type | None) -> type | None:
    """A subclass of ``cls`` holding a copy of its attributes (so a change to the copy leaves ``cls`` alone)."""
    if cls is None:
        return None
    attributes = {k: v for k, v in cls.__dict__.items() if k not in ("__dict__", "__weakref__")}
    copied = type(cls.__name__, (cls,), attributes)
    copied.__module__, copied.__doc__ = cls.__module__, cls.__doc__
    return copied


def shallow_clone_class(cls: type, new_name: str | None = None) -> type:
    """A subclass of ``cls`` with ``cls``'s own attributes: class attributes set on the clone (``hidden``)
    never reach ``cls``, and ``super()`` in ``cls``'s methods still works."""
    return type(new_name or f"{cls.__name__}Clone", (cls,), {k: v for k, v in cls.__dict__.items()
                                                           if k not in ("__dict__", "__weakref__")})


class classproperty:  # noqa: N801 - ComfyUI's name
    """A read-only property of the class (``Node.RETURN_TYPES`` computed from the schema)."""

    def __init__(self, getter: Callable[[type], Any]):
        self.getter = getter
        self.__doc__ = getattr(getter, "__doc__", None)

    def __get__(self, obj: Any, owner: type) -> Any:
        return self.getter(owner)


def first_real_override(cls: type, name: str, *, base: type | None = None) -> Callable | None:
    """``cls.<name>`` when some class between ``cls`` and ``base`` (default ``cls.GET_BASE_CLASS()``)
    defines it, else None (only the placeholder on ``base`` exists)."""
    if base is None:
        if not hasattr(cls, "GET_BASE_CLASS"):
            raise ValueError("base is required when cls has no GET_BASE_CLASS (is it a ComfyNode subclass?)")
        base = cls.GET_BASE_CLASS()
    placeholder = next((klass.__dict__[name] for klass in base.__mro__ if name in klass.__dict__), None)
    if placeholder is None:
        return None
    placeholder_fn = getattr(placeholder, "__func__", placeholder)
    for klass in cls.__mro__:
        if klass is base:
            break
        if name in klass.__dict__:
            found = klass.__dict__[name]
            if getattr(found, "__func__", found) is not placeholder_fn:
                return getattr(cls, name)
    return None


__all__ = ["_ComfyNodeInternal", "_NodeOutputInternal", "as_pruned_dict", "classproperty", "copy_class",
           "first_real_override", "is_class", "prune_dict", "shallow_clone_class"]
