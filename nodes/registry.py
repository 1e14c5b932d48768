"""Fill a node registry from the built-in node modules and the custom_nodes plugins.

``nodes/`` may not import ``execution.registry`` (docs/architecture.md), so the registry is passed
in: anything with ``register(class_type, cls, display_name=None, python_module="nodes")`` and
``names()``, in practice ``execution.registry.NodeRegistry``, created by ``main.py``.
"""
from __future__ import annotations

import importlib
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Protocol

from nodes import comfy_methods, services
from nodes.builtin import BUILTIN_MODULES
from nodes.plugins import PluginScan, load_plugins
from nodes.spec import module_mappings


class Registry(Protocol):
    def register(self, class_type: str, cls: type, display_name: str | None = None,
                 python_module: str = "nodes") -> None: ...


@dataclass
class BuiltinFailure:
    module: str
    error: str
    traceback: str


@dataclass
class RegistryReport:
    """What was registered: built-in node names, built-in modules that failed, and the plugin scan."""

    builtin_names: list[str] = field(default_factory=list)
    builtin_failures: list[BuiltinFailure] = field(default_factory=list)
    plugins: PluginScan = field(default_factory=PluginScan)

    def lines(self) -> list[str]:
        """Human-readable start-up lines: failures with their reason, plugin warnings, import times."""
        out: list[str] = []
        for failure in self.builtin_failures:
            out.append(f"built-in node module {failure.module} failed to import: {failure.error}")
        for plugin in self.plugins.plugins:
            if not plugin.is_ok:
                out.append((plugin.traceback or "").rstrip())
                out.append(f"Cannot import {plugin.path} module for custom nodes: {plugin.error}")
            out += [f"{plugin.name}: {warning}" for warning in plugin.warnings]
            if plugin.prestartup_error:
                out.append(f"Failed to execute startup-script: {plugin.path / 'prestartup_script.py'} / "
                           f"{plugin.prestartup_error}")
        times = self.plugins.import_times_text()
        if times:
            out += ["", times, ""]
        return out


def register_builtins(registry: Registry, modules: Iterable[str] = BUILTIN_MODULES,
                      report: RegistryReport | None = None) -> RegistryReport:
    report = report or RegistryReport()
    for module_path in modules:
        try:
            module = importlib.import_module(module_path)
            classes, display_names = module_mappings(module)
        except Exception as exc:  # one broken module (a missing dependency) must not stop start-up
            report.builtin_failures.append(BuiltinFailure(module_path, f"{type(exc).__name__}: {exc}",
                                                          traceback.format_exc()))
            continue
        for name, cls in classes.items():
            comfy_methods.attach(cls, name)      # ComfyUI's method name (encode, sample, ...) for plugins
            registry.register(name, cls, display_name=display_names.get(name), python_module="nodes")
            report.builtin_names.append(name)
    return report


def register_plugins(registry: Registry, custom_node_dirs: Iterable[Path | str], *,
                     disable_all: bool = False, whitelist: Iterable[str] = (),
                     import_paths: Iterable[Path | str] = (),
                     report: RegistryReport | None = None) -> RegistryReport:
    report = report or RegistryReport()
    scan = load_plugins(custom_node_dirs, builtin_names=report.builtin_names,
                        disable_all=disable_all, whitelist=whitelist, import_paths=import_paths)
    display_names = scan.display_names()
    current = services.installed()
    if current is not None:    # nodes.EXTENSION_WEB_DIRS, as ComfyUI fills it
        current.extension_web_dirs.update({name: str(path) for name, path in scan.web_directories().items()})
    for name, (cls, plugin) in scan.node_classes().items():
        registry.register(name, cls, display_name=display_names.get(name), python_module=plugin.python_module)
    report.plugins = scan
    return report


def build_registry(registry: Registry, *, custom_node_dirs: Iterable[Path | str] = (),
                   disable_all_custom_nodes: bool = False, whitelist_custom_nodes: Iterable[str] = (),
                   builtin_modules: Iterable[str] = BUILTIN_MODULES,
                   import_paths: Iterable[Path | str] = ()) -> RegistryReport:
    """Register the built-in nodes, then the plugins (which cannot replace built-ins). ``import_paths``
    go on ``sys.path`` when there is a plugin to load (main.py: ComfyUI's module names, compat/)."""
    report = register_builtins(registry, builtin_modules)
    return register_plugins(registry, custom_node_dirs, disable_all=disable_all_custom_nodes,
                            whitelist=whitelist_custom_nodes, import_paths=import_paths, report=report)


def describe(report: RegistryReport) -> dict[str, Any]:
    return {"builtin_names": list(report.builtin_names),
            "builtin_failures": [vars(f) for f in report.builtin_failures],
            **report.plugins.to_json()}
