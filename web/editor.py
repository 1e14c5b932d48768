"""Serving the official ComfyUI editor, workflow templates, node docs and plugins' web directories.

* The editor is the ``static/`` folder of the PyPI package ``comfyui-frontend-package`` (found with
  ``importlib.resources``; ``--front-end-root`` overrides). ``/`` is its ``index.html`` (no-cache);
  every other path is a file below it, registered after all API routes. Hashed ``/assets/*`` are
  cached for a year; the rest revalidates (``If-Modified-Since`` gives 304).
* ``/templates/`` serves Plexus's own templates (``web/templates/``: the SD1.5 demo first), then the
  official ones: workflows and ``index*.json`` from ``comfyui-workflow-templates-json``, thumbnails from
  whichever ``comfyui-workflow-templates-media-*`` bundles are installed (or the old single
  ``comfyui-workflow-templates`` 0.1.x package). ``index.json`` lists ours first; an official template
  whose nodes or model family this server lacks is marked unsupported (``web.template_catalog``).
* ``/docs/`` serves the optional ``comfyui-embedded-docs`` package.
* ``/extensions/<plugin>/...`` serves each plugin's ``WEB_DIRECTORY``.
"""

from __future__ import annotations

import copy
import functools
import io
import importlib.resources
import json
import logging
import mimetypes
import re
from pathlib import Path
from typing import Any

from aiohttp import web

from storage.errors import StorageError
from storage.safe_paths import resolve_inside

from .services import Plugin
from .template_catalog import mark_index, read_workflow

log = logging.getLogger("plexus.web")

OWN_TEMPLATES = Path(__file__).resolve().parent / "templates"
TEMPLATE_PACKAGES = ("comfyui_workflow_templates_json", "comfyui_workflow_templates_media_image",
                     "comfyui_workflow_templates_media_video", "comfyui_workflow_templates_media_api",
                     "comfyui_workflow_templates_media_other", "comfyui_workflow_templates_media_assets_01",
                     "comfyui_workflow_templates_media_assets_02", "comfyui_workflow_templates")
# Plexus's own editor extensions, served and listed like a plugin's WEB_DIRECTORY.
OWN_EXTENSIONS = Plugin(
    "plexus-core",
    Path(__file__).resolve().parent,
    Path(__file__).resolve().parent / "extensions" / "plexus-core",
)
STATIC_ROOT: web.AppKey[Path | None] = web.AppKey("plexus_static_root", object)  # type: ignore[arg-type]
MIME_TYPES = {".js": "application/javascript", ".mjs": "application/javascript", ".css": "text/css",
              ".json": "application/json", ".webp": "image/webp", ".woff2": "font/woff2",
              ".webmanifest": "application/manifest+json", ".md": "text/markdown"}


def content_type_of(path: Path) -> str:
    """The editor's files by extension first (the OS's mime table may lack or misname them)."""
    known = MIME_TYPES.get(path.suffix.lower()) or mimetypes.guess_type(path.name)[0]
    return known or "application/octet-stream"


def package_dir(package: str, sub: str) -> Path | None:
    """``<installed package>/<sub>`` if the package is installed and has it, else None."""
    try:
        root = importlib.resources.files(package) / sub
    except (ModuleNotFoundError, TypeError):
        return None
    path = Path(str(root))
    return path if path.is_dir() else None


def find_front_end(override: Path | str | None) -> Path | None:
    if override is not None:
        path = Path(override).expanduser().resolve()
        if not (path / "index.html").is_file():
            raise FileNotFoundError(
                f"--front-end-root {path} has no index.html; point it at the editor's "
                "static folder (the one with index.html and assets/)."
            )
        return path
    return package_dir("comfyui_frontend_package", "static")


def _file_response(path: Path, *, cache: str) -> web.FileResponse:
    content_type = content_type_of(path)
    headers = {"Cache-Control": cache, "Content-Type": content_type, "X-Content-Type-Options": "nosniff"}
    if content_type in ("text/html", "image/svg+xml") and path.name != "index.html":
        # Only the editor's own index.html is served as a page; any other HTML/SVG is inert.
        headers["Content-Security-Policy"] = "default-src 'none'; style-src 'unsafe-inline'; sandbox"
    return web.FileResponse(path, headers=headers)


def _cache_for(relative: str) -> str:
    if relative.startswith("assets/") and not relative.endswith((".json", ".html")):
        return "public, max-age=31536000, immutable"
    return "no-cache"


def _safe_file(root: Path, relative: str) -> Path | None:
    try:
        path = resolve_inside(root, relative)
    except StorageError:
        return None
    return path if path.is_file() else None


class TemplateSources:
    """Plexus's own templates plus the installed template packages, one URL space. With
    `registered` (the node types this server has) the packages' index entries are marked by
    `template_catalog.mark_index`; the marked index is computed once per locale file."""

    def __init__(self, registered: Any = None, own: Path = OWN_TEMPLATES,
                 packages: tuple[str, ...] = TEMPLATE_PACKAGES) -> None:
        package_roots = [package_dir(name, "templates") for name in packages]
        self.own = own if own.is_dir() else None
        self.package_roots = [p for p in package_roots if p is not None]
        self.roots = [p for p in (self.own, *self.package_roots) if p is not None]
        self.registered = registered
        self._marked: dict[str, list[Any]] = {}

    def workflow(self, name: str) -> dict[str, Any] | None:
        for root in self.package_roots:
            found = read_workflow(root, name)
            if found is not None:
                return found
        return None

    def _read_index(self, root: Path, name: str) -> list[Any]:
        path = root / name
        if not path.is_file() and name != "index.json":
            path = root / "index.json"  # a locale we lack: fall back to English for these entries
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return []
        return data if isinstance(data, list) else []

    def index(self, name: str) -> list[Any]:
        merged = self._read_index(self.own, name) if self.own is not None else []
        if name not in self._marked:
            official = next((entries for root in self.package_roots
                             if (entries := self._read_index(root, name))), [])
            if self.registered is not None:
                official = mark_index(official, self.workflow, self.registered)
            self._marked[name] = official
        return _ranked_first(merged, self._marked[name]) + self._marked[name]

    def file(self, relative: str) -> Path | None:
        for root in self.roots:
            found = _safe_file(root, relative)
            if found is not None:
                return found
        return None


_THUMBNAIL = re.compile(r"[A-Za-z0-9_.\-]+-\d+\.webp")


@functools.cache
def _placeholder_thumbnail() -> bytes:
    """A small neutral-grey WebP, written once with Pillow."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (64, 64), (58, 58, 62)).save(buffer, format="WEBP")
    return buffer.getvalue()


def _ranked_first(own: list[Any], official: list[Any]) -> list[Any]:
    """Our entries with a `usage` above every official template's, so that the editor's first view
    ("Popular", sorted by usage) shows Plexus's demo first, as it does in the "Plexus" category."""
    usages = [t.get("usage", 0) for module in official if isinstance(module, dict)
              for t in module.get("templates", []) if isinstance(t, dict) and isinstance(t.get("usage"), int)]
    top = max(usages, default=0) + 1
    ranked = copy.deepcopy(own)
    for module in ranked:
        for template in module.get("templates", []) if isinstance(module, dict) else []:
            template["usage"] = top
    return ranked


def add_editor_routes(app: web.Application, static_root: Path | None, plugins: list[Plugin],
                      registered: Any = None) -> None:
    """Register templates, docs, plugin web directories and (last) the editor's static files.
    `registered` (a container of node type names) marks the templates this server cannot run."""
    templates = TemplateSources(registered)
    docs_root = package_dir("comfyui_embedded_docs", "docs")
    plugin_dirs = {
        p.name: Path(p.web_directory)
        for p in [OWN_EXTENSIONS, *plugins]
        if p.web_directory is not None and Path(p.web_directory).is_dir()
    }

    async def template_file(request: web.Request) -> web.StreamResponse:
        relative = request.match_info["path"]
        if (
            relative.startswith("index")
            and relative.endswith(".json")
            and "/" not in relative
            and relative != "index_logo.json"
            and not relative.endswith("schema.json")
        ):
            return web.json_response(templates.index(relative), headers={"Cache-Control": "no-cache"})
        found = templates.file(relative)
        if found is None:
            if relative in ("index_logo.json", "fuse_options.json"):
                return web.json_response({}, headers={"Cache-Control": "no-cache"})
            if _THUMBNAIL.fullmatch(relative):
                # the official templates' thumbnails live in the optional media packages
                # (comfyui-workflow-templates-media-*); without them the browser shows a neutral tile
                return web.Response(body=_placeholder_thumbnail(), content_type="image/webp",
                                    headers={"Cache-Control": "no-cache"})
            raise web.HTTPNotFound(text=f"No template file {relative!r}.")
        return _file_response(found, cache="no-cache")

    async def docs_file(request: web.Request) -> web.StreamResponse:
        found = _safe_file(docs_root, request.match_info["path"]) if docs_root else None
        if found is None:
            raise web.HTTPNotFound(text="No such document.")
        return _file_response(found, cache="no-cache")

    async def plugin_file(request: web.Request) -> web.StreamResponse:
        root = plugin_dirs.get(request.match_info["plugin"])
        found = _safe_file(root, request.match_info["path"]) if root else None
        if found is None:
            return await static_file(request)  # /extensions/core/... lives in the editor package
        return _file_response(found, cache="no-cache")

    async def index(request: web.Request) -> web.StreamResponse:
        if static_root is None:
            return web.Response(
                text=_NO_EDITOR, content_type="text/html", headers={"Cache-Control": "no-cache"}
            )
        return _file_response(static_root / "index.html", cache="no-cache")

    async def static_file(request: web.Request) -> web.StreamResponse:
        relative = request.path.lstrip("/")
        if static_root is not None:
            found = _safe_file(static_root, relative)
            if found is not None:
                return _file_response(found, cache=_cache_for(relative))
            if relative == "favicon.ico":
                found = _safe_file(static_root, "assets/favicon.ico")
                if found is not None:
                    return _file_response(found, cache="public, max-age=86400")
        if relative == "user.css":
            return web.Response(text="", content_type="text/css", headers={"Cache-Control": "no-cache"})
        raise web.HTTPNotFound(text=f"No file {relative!r}.")

    app.router.add_get("/templates/{path:.+}", template_file)
    app.router.add_get("/docs/{path:.+}", docs_file)
    app.router.add_get("/extensions/{plugin}/{path:.+}", plugin_file)
    app.router.add_get("/", index)
    app.router.add_get("/{path:.+}", static_file)


_NO_EDITOR = """<!doctype html><html><head><meta charset="utf-8"><title>Plexus</title></head><body>
<h1>Plexus is running</h1><p>The editor package is not installed. Install it with
<code>pip install comfyui-frontend-package==1.58.1</code> (or start with <code>--front-end-root DIR</code>)
and reload. The HTTP API is available under <code>/api/</code>.</p></body></html>"""
