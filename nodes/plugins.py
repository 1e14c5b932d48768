"""Load custom-node plugins from ``custom_nodes/`` folders the way ComfyUI does.

Facts kept from ComfyUI (``nodes.load_custom_node`` / ``init_external_custom_nodes``):

- every entry of each custom_nodes folder is a candidate: a package (a folder with
  ``__init__.py``) or a single ``.py`` module; other files, ``__pycache__`` and names ending in
  ``.disabled`` are skipped;
- ``--disable-all-custom-nodes`` skips every entry whose name (``pack`` or ``pack.py``) is not in
  ``--whitelist-custom-nodes``;
- a package is imported under the name of its path with ``.`` replaced by ``_x_`` (a single file
  under its path without ``.py``) and put in ``sys.modules`` before it runs, so its relative imports
  work;
- it exports ``NODE_CLASS_MAPPINGS`` (required), ``NODE_DISPLAY_NAME_MAPPINGS`` and ``WEB_DIRECTORY``
  (relative to the plugin's folder; kept only if it is a directory);
- a plugin cannot replace a built-in node (the name is ignored); a later plugin replaces an earlier
  plugin's node of the same name (ComfyUI does this silently; we warn);
- the node's ``python_module`` is ``custom_nodes.<pack>`` (also set as ``RELATIVE_PYTHON_MODULE``);
- a plugin that raises while importing is reported with its path and traceback and the others load.

Differences: entries load in sorted order (ComfyUI uses ``os.listdir`` order), entries starting
with ``.`` are skipped, and a mapping entry that is not a classic node class is skipped with a
warning instead of breaking ``/object_info`` later.
"""
from __future__ import annotations

import importlib.util
import os
import re
import sys
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

CLASSIC_MEMBERS = ("INPUT_TYPES", "RETURN_TYPES", "FUNCTION")


@dataclass
class PluginReport:
    """What happened to one plugin. ``name`` is the pack name (folder name, or file name without
    ``.py``) used in ``custom_nodes.<name>`` and ``/extensions/<name>/``."""

    name: str
    path: Path
    is_ok: bool
    import_s: float
    node_names: list[str] = field(default_factory=list)
    display_names: dict[str, str] = field(default_factory=dict)
    web_directory: Path | None = None
    error: str | None = None           # "ExceptionType: message"
    traceback: str | None = None
    warnings: list[str] = field(default_factory=list)
    classes: dict[str, type] = field(default_factory=dict, repr=False)
    missing_requirements: list[str] = field(default_factory=list)   # requirements.txt lines not installed
    prestartup_s: float | None = None          # prestartup_script.py run time (None: the pack has none)
    prestartup_error: str | None = None

    @property
    def python_module(self) -> str:
        return f"custom_nodes.{self.name}"

    def web_files(self) -> list[str]:
        """``/extensions/<name>/<relative>`` for every ``*.js`` below the web directory (recursive)."""
        if self.web_directory is None or not self.web_directory.is_dir():
            return []
        return sorted(f"/extensions/{self.name}/{path.relative_to(self.web_directory).as_posix()}"
                      for path in self.web_directory.rglob("*.js") if path.is_file())

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "path": str(self.path), "ok": self.is_ok, "import_s": self.import_s,
                "node_names": list(self.node_names), "web_directory": str(self.web_directory or "") or None,
                "error": self.error, "traceback": self.traceback, "warnings": list(self.warnings),
                "missing_requirements": list(self.missing_requirements), "prestartup_s": self.prestartup_s,
                "prestartup_error": self.prestartup_error}


@dataclass
class PluginScan:
    """Every plugin tried (in load order) and every entry skipped, with the reason."""

    plugins: list[PluginReport] = field(default_factory=list)
    skipped: list[tuple[Path, str]] = field(default_factory=list)

    @property
    def failed(self) -> list[PluginReport]:
        return [p for p in self.plugins if not p.is_ok]

    def node_classes(self) -> dict[str, tuple[type, PluginReport]]:
        """The winning class of every plugin node name (a later plugin replaces an earlier one)."""
        merged: dict[str, tuple[type, PluginReport]] = {}
        for plugin in self.plugins:
            for name, cls in plugin.classes.items():
                merged[name] = (cls, plugin)
        return merged

    def display_names(self) -> dict[str, str]:
        merged: dict[str, str] = {}
        for plugin in self.plugins:
            merged.update(plugin.display_names)
        return merged

    def web_directories(self) -> dict[str, Path]:
        return {p.name: p.web_directory for p in self.plugins if p.is_ok and p.web_directory is not None}

    def import_times_text(self) -> str:
        """ComfyUI's start-up table: one line per plugin, fastest first, failures marked."""
        if not self.plugins:
            return ""
        lines = ["Import times for custom nodes:"]
        for plugin in sorted(self.plugins, key=lambda p: p.import_s):
            mark = "" if plugin.is_ok else " (IMPORT FAILED)"
            lines.append(f"{plugin.import_s:6.1f} seconds{mark}: {plugin.path}")
        return "\n".join(lines)

    def to_json(self) -> dict[str, Any]:
        return {"plugins": [p.to_json() for p in self.plugins],
                "skipped": [{"path": str(path), "reason": reason} for path, reason in self.skipped]}


def candidates(folder: Path, disable_all: bool = False, whitelist: Iterable[str] = (),
               skipped: list[tuple[Path, str]] | None = None) -> list[Path]:
    """The plugin entries of one custom_nodes folder, in load order."""
    allowed = set(whitelist)
    found: list[Path] = []
    try:
        names = sorted(os.listdir(os.path.realpath(folder)))
    except OSError:
        return []
    for name in names:
        path = Path(folder) / name
        if name == "__pycache__" or name.startswith("."):
            continue
        reason = None
        if name.endswith(".disabled"):
            reason = "disabled (name ends in .disabled)"
        elif path.is_file() and path.suffix != ".py":
            continue
        elif disable_all and name not in allowed:
            reason = "--disable-all-custom-nodes and not in --whitelist-custom-nodes"
        if reason is not None:
            if skipped is not None:
                skipped.append((path, reason))
            continue
        found.append(path)
    return found


def add_import_paths(paths: Iterable[Path | str]) -> None:
    """Put ``paths`` at the front of ``sys.path`` (once each), for plugins' imports."""
    for path in reversed([str(p) for p in paths]):
        if path not in sys.path:
            sys.path.insert(0, path)


def load_plugins(folders: Iterable[Path | str], *, builtin_names: Iterable[str] = (),
                 disable_all: bool = False, whitelist: Iterable[str] = (),
                 import_paths: Iterable[Path | str] = ()) -> PluginScan:
    """Import every plugin of ``folders`` (in order) and report each one. Never raises for a plugin.
    ``import_paths`` are put on ``sys.path`` before the first plugin is imported (and stay there:
    plugins import lazily while they run)."""
    scan = PluginScan()
    reserved = set(builtin_names)
    owners: dict[str, str] = {}  # node name -> pack that registered it so far
    import_paths = list(import_paths)
    entries = [path for folder in folders for path in candidates(Path(folder), disable_all, whitelist, scan.skipped)]
    if entries and import_paths:
        add_import_paths(import_paths)
    prestartup = {path: run_prestartup_script(path) for path in entries if (path / PRESTARTUP_SCRIPT).is_file()}
    for path in entries:
        report = load_plugin(path)
        if path in prestartup:
            report.prestartup_s, report.prestartup_error = prestartup[path]
        _claim_names(report, reserved, owners)
        scan.plugins.append(report)
    return scan


PRESTARTUP_SCRIPT = "prestartup_script.py"


def run_prestartup_script(pack: Path) -> tuple[float, str | None]:
    """Run a pack's ``prestartup_script.py`` before any pack loads (ComfyUI does this at start-up, under the
    script's path as module name). Returns (seconds, error or None); never raises."""
    script = pack / PRESTARTUP_SCRIPT
    started = time.perf_counter()
    try:
        spec = importlib.util.spec_from_file_location(str(script.with_suffix("")), script)
        spec.loader.exec_module(importlib.util.module_from_spec(spec))
        return time.perf_counter() - started, None
    except Exception as exc:  # a broken script must not stop start-up
        return time.perf_counter() - started, f"{type(exc).__name__}: {exc}"


def missing_requirements(pack: Path) -> list[str]:
    """The lines of the pack's ``requirements.txt`` whose distribution is not installed (Plexus never
    installs them; the user does, with ``pip install -r``). Markers that exclude this platform, options
    and URLs are skipped."""
    from importlib import metadata

    path = pack / "requirements.txt"
    if not path.is_file():
        return []
    missing = []
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        line = line.split(" #")[0].strip()
        if not line or line.startswith(("#", "-", "git+", "http:", "https:")):
            continue
        name = re.match(r"[A-Za-z0-9][A-Za-z0-9._-]*", line)
        if name is None:
            continue
        if ";" in line and not _marker_applies(line.split(";", 1)[1].strip()):
            continue
        try:
            metadata.distribution(name.group(0))
        except metadata.PackageNotFoundError:
            missing.append(line)
    return missing


def _marker_applies(marker: str) -> bool:
    """An environment marker (``sys_platform == 'win32'``) holds here; evaluated with ``packaging`` when it
    is installed, else assumed to hold."""
    try:
        markers = importlib.import_module("packaging.markers")
        return bool(markers.Marker(marker).evaluate())
    except Exception:
        return True


def pyproject_web_directory(pack: Path) -> Path | None:
    """``[tool.comfy] web`` of the pack's pyproject.toml, if that folder exists (ComfyUI serves it)."""
    path = pack / "pyproject.toml"
    if not path.is_file():
        return None
    try:
        import tomllib
        web = tomllib.loads(path.read_text(encoding="utf-8")).get("tool", {}).get("comfy", {}).get("web")
    except Exception:
        return None
    folder = pack / str(web) if web else None
    return folder if folder is not None and folder.is_dir() else None


def module_name_for(path: Path) -> str:
    """The ``sys.modules`` name ComfyUI gives a plugin: its path (``.`` -> ``_x_`` for a package,
    without ``.py`` for a file)."""
    if path.is_file():
        return str(path.with_suffix(""))
    return str(path).replace(".", "_x_")


def load_plugin(path: Path) -> PluginReport:
    """Import one plugin (package folder or ``.py`` file) and collect its exports."""
    path = Path(os.path.abspath(path))
    is_file = path.is_file()
    name = path.stem if is_file else path.name
    module_name = module_name_for(path)
    report = PluginReport(name=name, path=path, is_ok=False, import_s=0.0)
    started = time.perf_counter()
    try:
        init = path if is_file else path / "__init__.py"
        if not init.is_file():
            raise ImportError(f"{path} is neither a .py file nor a package (no __init__.py)")
        spec = importlib.util.spec_from_file_location(module_name, init)
        module = importlib.util.module_from_spec(spec)
        sys.modules[module_name] = module
        try:
            spec.loader.exec_module(module)
        except BaseException:
            sys.modules.pop(module_name, None)
            raise
        _collect(module, report, path.parent if is_file else path)
    except Exception as exc:  # a broken plugin must not stop start-up
        report.is_ok = False
        report.error = f"{type(exc).__name__}: {exc}"
        report.traceback = traceback.format_exc()
    report.import_s = time.perf_counter() - started
    if not is_file:
        report.missing_requirements = missing_requirements(path)
        if report.missing_requirements:
            note = (f"requirements.txt lists packages that are not installed: {', '.join(report.missing_requirements)}"
                    f" (install them with: pip install -r {path / 'requirements.txt'})")
            if report.is_ok:
                report.warnings.append(note)
            else:
                report.error += f"; {note}"
    return report


def _collect(module: Any, report: PluginReport, module_dir: Path) -> None:
    web = getattr(module, "WEB_DIRECTORY", None)
    if web is not None:
        web_dir = Path(os.path.abspath(module_dir / str(web)))
        if web_dir.is_dir():
            report.web_directory = web_dir
        else:
            report.warnings.append(f"WEB_DIRECTORY {web!r} is not a directory ({web_dir}); ignored")
    if report.web_directory is None:
        report.web_directory = pyproject_web_directory(module_dir)
    mappings = getattr(module, "NODE_CLASS_MAPPINGS", None)
    display_names = dict(getattr(module, "NODE_DISPLAY_NAME_MAPPINGS", None) or {})
    if mappings is None:
        if not hasattr(module, "comfy_entrypoint"):
            raise ImportError(f"{report.path} has neither NODE_CLASS_MAPPINGS nor comfy_entrypoint")
        mappings, display_names = v3_extension_nodes(module.comfy_entrypoint, report)
    for node_name, cls in dict(mappings).items():
        try:   # a V3 class computes these from its schema, which may fail
            missing = [m for m in CLASSIC_MEMBERS if not hasattr(cls, m)] if isinstance(cls, type) else ["a class"]
        except Exception as exc:  # noqa: BLE001 - one broken node must not fail the pack
            report.warnings.append(f"node {node_name!r} skipped: {type(exc).__name__}: {exc}")
            continue
        if missing:
            report.warnings.append(f"node {node_name!r} skipped: not a classic node (missing {', '.join(missing)})")
            continue
        report.classes[str(node_name)] = cls
    report.display_names = {str(k): str(v) for k, v in display_names.items()}
    report.is_ok = True


def v3_extension_nodes(entrypoint: Any, report: PluginReport) -> tuple[dict[str, type], dict[str, str]]:
    """The nodes of a V3 pack: ``comfy_entrypoint()`` (sync or async) returns a ComfyExtension whose
    ``on_load()`` runs, then ``get_node_list()`` (async) names the node classes; each registers under its
    schema's ``node_id`` (display name: the schema's). A node whose schema cannot be built is skipped with
    a warning; an entrypoint that fails fails the pack (ComfyUI skips it with a warning)."""
    from execution.protocol import run_blocking

    if not callable(entrypoint):
        raise ImportError(f"{report.path}: comfy_entrypoint is not callable")
    extension = run_blocking(entrypoint())
    if not callable(getattr(extension, "get_node_list", None)):
        raise ImportError(f"{report.path}: comfy_entrypoint() returned {type(extension).__name__}, not a ComfyExtension")
    if callable(getattr(extension, "on_load", None)):
        run_blocking(extension.on_load())
    node_list = run_blocking(extension.get_node_list())
    if not isinstance(node_list, list):
        raise ImportError(f"{report.path}: get_node_list() returned {type(node_list).__name__}, not a list of nodes")
    classes: dict[str, type] = {}
    display_names: dict[str, str] = {}
    for cls in node_list:
        try:
            schema = cls.GET_SCHEMA()
        except Exception as exc:  # one broken schema must not hide the pack's other nodes
            report.warnings.append(f"node class {getattr(cls, '__name__', cls)!r} skipped: its schema failed: "
                                   f"{type(exc).__name__}: {exc}")
            continue
        classes[str(schema.node_id)] = cls
        if schema.display_name is not None:
            display_names[str(schema.node_id)] = str(schema.display_name)
    return classes, display_names


def _claim_names(report: PluginReport, reserved: set[str], owners: dict[str, str]) -> None:
    """Drop names that clash with built-ins; warn when this plugin replaces an earlier plugin's node."""
    for node_name in list(report.classes):
        if node_name in reserved:
            del report.classes[node_name]
            report.warnings.append(f"node {node_name!r} ignored: a built-in node has that name")
            continue
        if node_name in owners and owners[node_name] != report.name:
            report.warnings.append(f"node {node_name!r} replaces the one from plugin {owners[node_name]!r}")
        owners[node_name] = report.name
        try:
            report.classes[node_name].RELATIVE_PYTHON_MODULE = report.python_module
        except (AttributeError, TypeError):
            pass
    report.node_names = list(report.classes)
