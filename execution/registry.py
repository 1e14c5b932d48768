"""The node classes the engine can run, by ComfyUI class name.

The engine never imports ``nodes``: ``main.py`` fills a :class:`NodeRegistry` (built-in nodes and
plugins alike) and hands it to the :class:`~execution.executor.Engine` and the server.
"""
from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from typing import Any

log = logging.getLogger(__name__)


def _jsonable(value: Any) -> Any:
    """Tuples as lists, recursively, so ``/object_info`` serialises the way ComfyUI's does."""
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    return value


class NodeRegistry:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._classes: dict[str, type] = {}
        self._display: dict[str, str] = {}
        self._modules: dict[str, str] = {}
        self._output_types: frozenset[str] | None = None

    def register(self, class_type: str, cls: type, display_name: str | None = None,
                 python_module: str = "nodes") -> None:
        """Add (or replace) a node class under ``class_type``."""
        if not isinstance(class_type, str) or not class_type:
            raise ValueError("a node class needs a non-empty class_type string")
        for attribute in ("INPUT_TYPES", "RETURN_TYPES", "FUNCTION"):
            if not hasattr(cls, attribute):
                raise ValueError(f"node class {class_type!r} ({cls!r}) has no {attribute}; "
                                 f"a node needs INPUT_TYPES, RETURN_TYPES and FUNCTION")
        with self._lock:
            self._classes[class_type] = cls
            self._display[class_type] = display_name or class_type
            self._modules[class_type] = python_module
            self._output_types = None

    def unregister(self, class_type: str) -> None:
        with self._lock:
            self._classes.pop(class_type, None)
            self._display.pop(class_type, None)
            self._modules.pop(class_type, None)
            self._output_types = None

    def get(self, class_type: str) -> type | None:
        """The class registered as ``class_type``, or None."""
        return self._classes.get(class_type)

    def __contains__(self, class_type: object) -> bool:
        return class_type in self._classes

    def __len__(self) -> int:
        return len(self._classes)

    def __iter__(self) -> Iterator[str]:
        return iter(list(self._classes))

    def names(self) -> list[str]:
        return list(self._classes)

    def display_name(self, class_type: str) -> str:
        return self._display.get(class_type, class_type)

    def python_module(self, class_type: str) -> str:
        return self._modules.get(class_type, "nodes")

    def output_types(self) -> frozenset[str]:
        """Every socket type some registered node outputs (types that travel over links)."""
        types = self._output_types
        if types is None:
            found: set[str] = set()
            for cls in list(self._classes.values()):
                for item in getattr(cls, "RETURN_TYPES", ()) or ():
                    if isinstance(item, str):
                        found.update(part.strip() for part in item.split(","))
            types = self._output_types = frozenset(found)
        return types

    def object_info(self, class_type: str) -> dict[str, Any]:
        """ComfyUI's ``/object_info`` entry for one class; raises KeyError for an unknown class."""
        cls = self._classes[class_type]
        node_info_v1 = getattr(cls, "GET_NODE_INFO_V1", None)
        if callable(node_info_v1):
            # a V3 schema node (comfy_api's io.ComfyNode) states its whole entry, as ComfyUI's server reads it
            info = _jsonable(node_info_v1())
            info["python_module"] = self.python_module(class_type)
            return info
        declared = cls.INPUT_TYPES() or {}
        return_types = list(getattr(cls, "RETURN_TYPES", ()) or ())
        info: dict[str, Any] = {
            "input": _jsonable(declared),
            "input_order": {section: list(entries.keys()) for section, entries in declared.items()
                            if isinstance(entries, dict)},
            "output": _jsonable(return_types),
            "output_is_list": list(getattr(cls, "OUTPUT_IS_LIST", None) or [False] * len(return_types)),
            "output_name": _jsonable(list(getattr(cls, "RETURN_NAMES", None) or return_types)),
            "name": class_type,
            "display_name": self.display_name(class_type),
            "description": getattr(cls, "DESCRIPTION", "") or "",
            "python_module": self.python_module(class_type),
            "category": getattr(cls, "CATEGORY", "sd"),
            "output_node": getattr(cls, "OUTPUT_NODE", False) is True,
        }
        if hasattr(cls, "OUTPUT_TOOLTIPS"):
            info["output_tooltips"] = _jsonable(cls.OUTPUT_TOOLTIPS)
        if getattr(cls, "DEPRECATED", False):
            info["deprecated"] = True
        if getattr(cls, "EXPERIMENTAL", False):
            info["experimental"] = True
        if getattr(cls, "SEARCH_ALIASES", None):
            info["search_aliases"] = _jsonable(list(cls.SEARCH_ALIASES))
        return info

    def object_info_all(self) -> dict[str, dict[str, Any]]:
        """Every class's entry; a class whose ``INPUT_TYPES()`` fails is left out (and logged)."""
        result: dict[str, dict[str, Any]] = {}
        for class_type in self.names():
            try:
                result[class_type] = self.object_info(class_type)
            except Exception:  # one broken plugin must not hide every other node from the editor
                log.exception("object_info failed for %s", class_type)
        return result
