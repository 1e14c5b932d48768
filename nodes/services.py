"""What nodes reach outside the graph through: the folder layout (and, later, device settings).

``INPUT_TYPES`` is a classmethod without arguments and model lists must be fresh each time it is
called, so a loader node needs the active :class:`storage.Folders` without being handed it. One
:class:`NodeServices` object is installed by ``main.py`` at start-up (never at import) and read by
the nodes; tests install their own. Nothing else in the process is global.
"""
from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from typing import Any, Callable

from storage.folders import Folders
from nodes.spec import FileList


@dataclass
class NodeServices:
    folders: Folders
    settings: Any = None   # model_management.MemorySettings from main.py's device flags
    registry: Any = None   # the execution.registry.NodeRegistry being filled (nodes.NODE_CLASS_MAPPINGS)
    events: Any = None     # the execution.events.EventBus (plugins' messages to the editor)
    web_api: Any = None    # web.plugin_api.PluginWebAPI when serving (plugin routes, on-prompt handlers)
    args: Any = None       # the parsed command line (argparse.Namespace), for plugins that read flags
    extension_web_dirs: dict[str, str] = field(default_factory=dict)   # pack -> web folder (ComfyUI's EXTENSION_WEB_DIRS)
    interrupt: Any = None  # () -> None: stop the running prompt (the Engine's interrupt; plugins' interrupt_current_processing)
    _model_manager: Any = field(default=None, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def model_manager(self) -> Any:
        """The process's ``model_management.ModelManager``, created on first use (the first model
        load), so that start-up and graphs without models never import torch."""
        with self._lock:
            if self._model_manager is None:
                from model_management.registry import ModelManager
                from model_management.settings import MemorySettings
                from models.files import file_view_test
                self._model_manager = ModelManager(self.settings or MemorySettings(), file_views=file_view_test)
                logging.getLogger("plexus").info("model manager: %s", "; ".join(self._model_manager.startup_lines()))
            return self._model_manager

    def existing_model_manager(self) -> Any:
        """The model manager if a model was ever loaded, else None (never creates one)."""
        with self._lock:
            return self._model_manager


_installed: NodeServices | None = None


def install(services: NodeServices | None) -> None:
    """Make ``services`` the ones nodes see (``None`` removes them)."""
    global _installed
    _installed = services


def current() -> NodeServices:
    if _installed is None:
        raise LookupError("node services are not installed: main.py (or the test) must call "
                          "nodes.services.install(NodeServices(folders)) before running nodes")
    return _installed


def folders() -> Folders:
    return current().folders


def installed() -> NodeServices | None:
    """The installed services, or None (never raises)."""
    return _installed


def file_list(kind: str) -> FileList:
    """A ``Combo`` option source: the files of a model kind, or [] while no services are installed."""
    return FileList(kind, _list_files)


def _list_files(kind: str) -> list[str]:
    return _installed.folders.list_files(kind) if _installed is not None else []
