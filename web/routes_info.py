"""Read-only information: node definitions, system stats, models, extensions, features, i18n.

Every endpoint the editor calls on boot answers 200 with valid JSON even on a fresh install (an empty
list or object rather than a 404), because the editor logs every failed request as a console error.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

from aiohttp import web

from .security import BadRequest
from .services import COMFYUI_COMPAT_VERSION, PLEXUS_VERSION
from .state import STATE, AppState

routes = web.RouteTableDef()  # served at / and /api
internal = web.RouteTableDef()  # served at /internal only (the editor does not prefix these)
FRONTEND_VERSION = "1.58.1"
EXAMPLE_DIRS = ("example_workflows", "example", "examples", "workflow", "workflows")


def _state(request: web.Request) -> AppState:
    return request.app[STATE]


# --- nodes -------------------------------------------------------------------------------------------
@routes.get("/object_info")
async def object_info(request: web.Request) -> web.Response:
    state = _state(request)
    return web.json_response(
        await state.call(state.services.registry.object_info_all), headers={"Cache-Control": "no-store"}
    )


@routes.get("/object_info/{node_class}")
async def object_info_one(request: web.Request) -> web.Response:
    state = _state(request)
    name = request.match_info["node_class"]
    registry = state.services.registry
    if name not in registry:
        raise web.HTTPNotFound(text=f"No node class {name!r}.")
    return web.json_response({name: await state.call(registry.object_info, name)})


# --- system ------------------------------------------------------------------------------------------
def system_stats(state: AppState) -> dict[str, Any]:
    stats = state.services.system_stats()
    argv = list(state.settings.argv)
    if "--disable-api-nodes" not in argv:
        # Plexus has no paid API nodes; the flag also stops the editor asking a vendor host for
        # release notes on every boot (an offline console error).
        argv.append("--disable-api-nodes")
    system = {
        "os": sys.platform if os.name != "nt" else "nt",
        "ram_total": 0,
        "ram_free": 0,
        "comfyui_version": COMFYUI_COMPAT_VERSION,
        "plexus_version": PLEXUS_VERSION,
        "required_frontend_version": FRONTEND_VERSION,
        "installed_templates_version": None,
        "required_templates_version": None,
        "python_version": sys.version,
        "pytorch_version": "",
        "embedded_python": False,
        "argv": argv,
        **(stats.get("system") or {}),
    }
    system["argv"] = argv
    answer = {"system": system, "devices": list(stats.get("devices") or [])}
    if "plexus" in stats:  # memory mode, dtype choices and loaded models (beyond ComfyUI's shape)
        answer["plexus"] = stats["plexus"]
    if "workers" in stats:  # --ray: the cluster's worker actors (id, device, memory, resident models)
        answer["workers"] = list(stats["workers"])
    return answer


@routes.get("/system_stats")
async def get_system_stats(request: web.Request) -> web.Response:
    state = _state(request)
    return web.json_response(await state.call(system_stats, state))


@routes.get("/features")
async def get_features(request: web.Request) -> web.Response:
    return web.json_response(_state(request).feature_flags)


# --- models ------------------------------------------------------------------------------------------
def _model_kinds(state: AppState) -> dict[str, tuple[list[Path], set[str]]]:
    return state.services.folders.model_folders()


@routes.get("/models")
async def list_model_kinds(request: web.Request) -> web.Response:
    return web.json_response(sorted(_model_kinds(_state(request))))


@routes.get("/models/{folder}")
async def list_models(request: web.Request) -> web.Response:
    state = _state(request)
    folder = request.match_info["folder"]
    if folder not in _model_kinds(state):
        raise web.HTTPNotFound(text=f"No model folder {folder!r}.")
    return web.json_response(await state.call(state.services.folders.list_files, folder))


@routes.get("/embeddings")
async def list_embeddings(request: web.Request) -> web.Response:
    state = _state(request)
    if "embeddings" not in _model_kinds(state):
        return web.json_response([])
    files = await state.call(state.services.folders.list_files, "embeddings")
    return web.json_response([os.path.splitext(name)[0] for name in files])


@routes.get("/experiment/models")
async def experiment_models(request: web.Request) -> web.Response:
    kinds = _model_kinds(_state(request))
    return web.json_response(
        [
            {"name": kind, "folders": [str(p) for p in paths]}
            for kind, (paths, _) in sorted(kinds.items())
            if kind not in ("configs",)
        ]
    )


def _model_files_info(state: AppState, folder: str) -> list[dict[str, Any]]:
    folders = state.services.folders
    paths = folders.paths(folder)
    found: list[dict[str, Any]] = []
    for name in folders.list_files(folder):
        for index, base in enumerate(paths):
            full = Path(base) / name
            try:
                stat = full.stat()
            except OSError:
                continue
            found.append(
                {
                    "name": name,
                    "pathIndex": index,
                    "modified": stat.st_mtime,
                    "created": getattr(stat, "st_birthtime", stat.st_ctime),
                    "size": stat.st_size,
                }
            )
            break
    return found


@routes.get("/experiment/models/{folder}")
async def experiment_models_folder(request: web.Request) -> web.Response:
    state = _state(request)
    folder = request.match_info["folder"]
    if folder not in _model_kinds(state):
        raise web.HTTPNotFound(text=f"No model folder {folder!r}.")
    return web.json_response(await state.call(_model_files_info, state, folder))


# --- extensions, translations, templates of plugins --------------------------------------------------
def list_extensions(state: AppState, static_root: Path | None) -> list[str]:
    urls: list[str] = []
    if static_root is not None and (static_root / "extensions").is_dir():
        base = static_root / "extensions"
        urls += sorted("/extensions/" + p.relative_to(base).as_posix() for p in base.rglob("*.js"))
    from .editor import OWN_EXTENSIONS

    for plugin in [OWN_EXTENSIONS, *state.services.plugins]:
        if plugin.web_directory is None or not Path(plugin.web_directory).is_dir():
            continue
        base = Path(plugin.web_directory)
        urls += sorted(
            f"/extensions/{plugin.name}/" + p.relative_to(base).as_posix()
            for p in base.rglob("*.js")
            if p.is_file()
        )
    return urls


@routes.get("/extensions")
async def get_extensions(request: web.Request) -> web.Response:
    state = _state(request)
    from .editor import STATIC_ROOT

    return web.json_response(
        await state.call(list_extensions, state, request.app[STATIC_ROOT]),
        headers={"Cache-Control": "no-store"},
    )


def _merge(into: dict[str, Any], more: dict[str, Any]) -> None:
    for key, value in more.items():
        if isinstance(value, dict) and isinstance(into.get(key), dict):
            _merge(into[key], value)
        else:
            into[key] = value


def collect_i18n(state: AppState) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for plugin in state.services.plugins:
        locales = Path(plugin.root) / "locales"
        if not locales.is_dir():
            continue
        for locale_dir in sorted(p for p in locales.iterdir() if p.is_dir()):
            entry: dict[str, Any] = {}
            for name, key in (
                ("main.json", None),
                ("nodeDefs.json", "nodeDefs"),
                ("commands.json", "commands"),
                ("settings.json", "settings"),
            ):
                try:
                    data = json.loads((locale_dir / name).read_text(encoding="utf-8"))
                except (OSError, ValueError):
                    continue
                if isinstance(data, dict):
                    _merge(entry, data if key is None else {key: data})
            if entry:
                _merge(result.setdefault(locale_dir.name, {}), entry)
    return result


@routes.get("/i18n")
async def get_i18n(request: web.Request) -> web.Response:
    state = _state(request)
    return web.json_response(await state.call(collect_i18n, state))


def _plugin_examples(state: AppState) -> dict[str, tuple[Path, list[str]]]:
    found: dict[str, tuple[Path, list[str]]] = {}
    for plugin in state.services.plugins:
        for dirname in EXAMPLE_DIRS:
            folder = Path(plugin.root) / dirname
            if folder.is_dir():
                names = sorted(p.stem for p in folder.glob("*.json") if p.is_file())
                if names:
                    found[plugin.name] = (folder, names)
                    break
    return found


@routes.get("/workflow_templates")
async def workflow_templates(request: web.Request) -> web.Response:
    state = _state(request)
    examples = await state.call(_plugin_examples, state)
    return web.json_response({name: names for name, (_, names) in examples.items()})


@routes.get("/workflow_templates/{plugin}/{name}")
async def workflow_template_file(request: web.Request) -> web.StreamResponse:
    from storage.safe_paths import resolve_inside

    state = _state(request)
    examples = await state.call(_plugin_examples, state)
    entry = examples.get(request.match_info["plugin"])
    if entry is None:
        raise web.HTTPNotFound(text="No such plugin with example workflows.")
    path = resolve_inside(entry[0], request.match_info["name"])
    if not path.is_file() or path.suffix != ".json":
        raise web.HTTPNotFound(text="No such example workflow.")
    return web.FileResponse(path, headers={"Content-Type": "application/json"})


@routes.get("/global_subgraphs")
async def global_subgraphs(request: web.Request) -> web.Response:
    return web.json_response({})


@routes.get("/global_subgraphs/{subgraph_id}")
async def global_subgraph(request: web.Request) -> web.Response:
    raise web.HTTPNotFound(text="No such global subgraph.")


# --- /internal ---------------------------------------------------------------------------------------
@internal.get("/folder_paths")
async def folder_paths(request: web.Request) -> web.Response:
    kinds = _model_kinds(_state(request))
    return web.json_response({kind: [str(p) for p in paths] for kind, (paths, _) in kinds.items()})


@internal.get("/files/{directory_type}")
async def internal_files(request: web.Request) -> web.Response:
    state = _state(request)
    kind = request.match_info["directory_type"]
    folder = state.services.folders.directory(kind)
    if folder is None:
        raise BadRequest("Directory type must be input, output or temp.")

    def newest_first() -> list[str]:
        if not Path(folder).is_dir():
            return []
        entries = [e for e in os.scandir(folder) if e.is_file() and not e.name.startswith(".")]
        entries.sort(key=lambda e: e.stat().st_mtime, reverse=True)
        return [e.name for e in entries]

    return web.json_response(await state.call(newest_first))


@internal.get("/logs")
async def internal_logs(request: web.Request) -> web.Response:
    return web.json_response("")


@internal.get("/logs/raw")
async def internal_logs_raw(request: web.Request) -> web.Response:
    return web.json_response({"entries": [], "size": {"cols": 80, "rows": 24}})


@internal.patch("/logs/subscribe")
async def internal_logs_subscribe(request: web.Request) -> web.Response:
    return web.json_response({})
