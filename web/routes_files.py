"""Files: /view, uploads, model metadata, per-user data, settings and users.

Every client-supplied name goes through :func:`storage.safe_paths.resolve_inside`, which raises
``UnsafePathError`` (answered 403 by the error middleware) for traversal, absolute paths, encoded dots,
backslashes and symlinks out. Uploads must decode as an
image with Pillow; SVG / HTML / anything not an image is served only as a download, never inline.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import struct
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote

from aiohttp import web
from PIL import Image, ImageOps, UnidentifiedImageError

from storage.errors import StorageError
from storage.safe_paths import claim_free_path, resolve_inside, sanitize_filename

from .editor import content_type_of
from .security import BadRequest, parse_json, read_json
from .state import STATE, AppState

routes = web.RouteTableDef()
USER = "default"  # single-user mode: every request is this user
INLINE_TYPES = {
    "image/png",
    "image/jpeg",
    "image/webp",
    "image/gif",
    "image/bmp",
    "video/mp4",
    "video/webm",
    "audio/mpeg",
    "audio/wav",
    "audio/x-wav",
    "audio/flac",
    "audio/ogg",
    "image/avif",
    "image/tiff",
}
Image.MAX_IMAGE_PIXELS = 16384 * 16384


def _state(request: web.Request) -> AppState:
    return request.app[STATE]


def _safe_headers(filename: str, inline: bool) -> dict[str, str]:
    disposition = "inline" if inline else "attachment"
    return {
        "Content-Disposition": f"{disposition}; filename*=UTF-8''{quote(filename)}",
        "X-Content-Type-Options": "nosniff",
        "Content-Security-Policy": "default-src 'none'; img-src 'self'; media-src 'self'; sandbox",
    }


# --- /view -------------------------------------------------------------------------------------------
@routes.get("/view")
async def view(request: web.Request) -> web.StreamResponse:
    state = _state(request)
    query = request.query
    filename = query.get("filename", "")
    if not filename:
        raise BadRequest("'filename' is required.")
    kind = query.get("type", "output") or "output"
    folder = state.services.folders.directory(kind)
    if folder is None:
        raise BadRequest("'type' must be input, output or temp.", f"got {kind!r}")
    path = resolve_inside(folder, query.get("subfolder", ""), filename)
    if not path.is_file():
        raise web.HTTPNotFound(text=f"{kind}/{filename} does not exist.")
    content_type = content_type_of(path)
    preview = query.get("preview")
    channel = query.get("channel", "rgba")
    if content_type.startswith("image/") and content_type in INLINE_TYPES and (preview or channel != "rgba"):
        data, content_type, name = await state.call(_transform_image, path, preview, channel)
        return web.Response(body=data, content_type=content_type, headers=_safe_headers(name, True))
    inline = content_type in INLINE_TYPES
    headers = _safe_headers(path.name, inline)
    if not inline:
        headers["Content-Type"] = "application/octet-stream"
    else:
        headers["Content-Type"] = content_type
    return web.FileResponse(path, headers=headers)


def _transform_image(path: Path, preview: str | None, channel: str) -> tuple[bytes, str, str]:
    with Image.open(path) as image:
        image = ImageOps.exif_transpose(image)
        if channel == "rgb":
            image = image.convert("RGB")
        elif channel == "a":
            image = image.convert("RGBA").getchannel("A")  # the mask as a grey image
        elif channel != "rgba":
            raise BadRequest("'channel' must be rgb, a or rgba.")
        out = io.BytesIO()
        stem = path.stem
        if preview:
            fmt, _, quality = preview.partition(";")
            fmt = fmt.lower()
            if fmt not in ("webp", "jpeg", "png"):
                raise BadRequest("'preview' must be webp, jpeg or png (optionally ';quality').")
            try:
                q = int(quality or 90)
            except ValueError:
                raise BadRequest("'preview' quality must be an integer.")
            if fmt == "jpeg" and image.mode not in ("RGB", "L"):
                image = image.convert("RGB")
            image.save(out, format=fmt.upper(), quality=max(1, min(100, q)))
            return out.getvalue(), f"image/{fmt}", f"{stem}.{fmt}"
        image.save(out, format="PNG")
        return out.getvalue(), "image/png", f"{stem}.png"


# --- uploads -----------------------------------------------------------------------------------------
async def _read_upload(request: web.Request) -> tuple[bytes, str, dict[str, str]]:
    if not request.content_type.startswith("multipart/"):
        raise BadRequest("Uploads are multipart/form-data with an 'image' file field.")
    limit = _state(request).settings.max_upload_bytes
    reader = await request.multipart()
    fields: dict[str, str] = {}
    data: bytes | None = None
    filename = ""
    async for part in reader:
        if part.name == "image" and part.filename is not None:
            chunks, size = [], 0
            while chunk := await part.read_chunk(1 << 16):
                size += len(chunk)
                if size > limit:
                    raise web.HTTPRequestEntityTooLarge(max_size=limit, actual_size=size)
                chunks.append(chunk)
            data, filename = b"".join(chunks), part.filename
        elif part.name:
            text = (await part.read(decode=True))[:4096]
            fields[part.name] = text.decode("utf-8", "replace")
    if data is None:
        raise BadRequest("No 'image' file in the upload.")
    return data, filename, fields


def _verify_image(data: bytes) -> str:
    try:
        with Image.open(io.BytesIO(data)) as image:
            fmt = image.format or ""
            image.verify()
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise BadRequest("The upload is not an image Pillow can read.", str(exc), "invalid_image")
    return fmt


def _upload_target(state: AppState, fields: dict[str, str], filename: str) -> tuple[Path, str, str, bool]:
    kind = fields.get("type", "input") or "input"
    folder = state.services.folders.directory(kind)
    if folder is None:
        raise BadRequest("'type' must be input, output or temp.", f"got {kind!r}")
    subfolder = fields.get("subfolder", "")
    target_dir = resolve_inside(folder, subfolder)
    overwrite = fields.get("overwrite", "").lower() in ("true", "1", "yes")
    return target_dir, kind, subfolder, overwrite


def _store_upload(target_dir: Path, filename: str, data: bytes, overwrite: bool) -> Path:
    target_dir.mkdir(parents=True, exist_ok=True)
    if overwrite:
        path = resolve_inside(target_dir, filename)  # refuses an existing symlink that leads out
        tmp = target_dir / f".{filename}.{os.getpid()}.part"
        tmp.write_bytes(data)
        os.replace(tmp, path)
        return path
    path = claim_free_path(target_dir, filename)  # atomic: concurrent uploads get distinct names
    path.write_bytes(data)
    return path


def _stored_name(filename: str, fmt: str) -> str:
    # Decoded first (some clients percent-encode the multipart file name), '%' never kept: a stored
    # name must be readable back through /view, which refuses encoded dots and slashes.
    name = sanitize_filename(unquote(filename or "upload.png"), "upload.png").replace("%", "_")
    if "." not in name:
        name += "." + (fmt.lower() or "png").replace("jpeg", "jpg")
    ext = name.rsplit(".", 1)[1].lower()
    if ext in ("svg", "svgz", "html", "htm", "xhtml", "xml", "js", "mjs"):
        name += ".png"
    return name


@routes.post("/upload/image")
async def upload_image(request: web.Request) -> web.Response:
    state = _state(request)
    data, filename, fields = await _read_upload(request)
    fmt = await state.call(_verify_image, data)
    target_dir, kind, subfolder, overwrite = _upload_target(state, fields, filename)
    path = await state.call(_store_upload, target_dir, _stored_name(filename, fmt), data, overwrite)
    return web.json_response({"name": path.name, "subfolder": subfolder, "type": kind})


def _apply_mask(original: Path, mask_bytes: bytes) -> bytes:
    with Image.open(original) as base, Image.open(io.BytesIO(mask_bytes)) as mask:
        base = ImageOps.exif_transpose(base).convert("RGBA")
        alpha = mask.convert("RGBA").getchannel("A").resize(base.size)
        base.putalpha(alpha)
        out = io.BytesIO()
        base.save(out, format="PNG")
        return out.getvalue()


@routes.post("/upload/mask")
async def upload_mask(request: web.Request) -> web.Response:
    state = _state(request)
    data, filename, fields = await _read_upload(request)
    await state.call(_verify_image, data)
    try:
        ref = parse_json(fields.get("original_ref", ""))
    except ValueError:
        raise BadRequest("'original_ref' must be JSON {filename, subfolder, type}.")
    if not isinstance(ref, dict) or not isinstance(ref.get("filename"), str):
        raise BadRequest("'original_ref' must be JSON {filename, subfolder, type}.")
    folder = state.services.folders.directory(ref.get("type", "input") or "input")
    if folder is None:
        raise BadRequest("'original_ref.type' must be input, output or temp.")
    original = resolve_inside(folder, str(ref.get("subfolder", "") or ""), ref["filename"])
    if not original.is_file():
        raise web.HTTPNotFound(text="The original image of the mask does not exist.")
    target_dir, kind, subfolder, overwrite = _upload_target(state, fields, filename)
    try:
        merged = await state.call(_apply_mask, original, data)
    except (OSError, ValueError) as exc:
        raise BadRequest("The original image could not be read.", str(exc))
    name = _stored_name(filename, "PNG")
    path = await state.call(_store_upload, target_dir, name, merged, overwrite)
    return web.json_response({"name": path.name, "subfolder": subfolder, "type": kind})


# --- model metadata ----------------------------------------------------------------------------------
def _model_file(state: AppState, folder_name: str, filename: str) -> Path | None:
    try:
        return state.services.folders.find(folder_name, filename)
    except StorageError as exc:
        if exc.type == "unsafe_path":
            raise
        return None


def _safetensors_metadata(path: Path) -> dict[str, Any] | None:
    with open(path, "rb") as handle:
        head = handle.read(8)
        if len(head) < 8:
            return None
        (length,) = struct.unpack("<Q", head)
        if length <= 0 or length > 100 * 1024 * 1024:
            return None
        try:
            header = json.loads(handle.read(length))
        except ValueError:
            return None
    meta = header.get("__metadata__") if isinstance(header, dict) else None
    return meta if isinstance(meta, dict) else None


@routes.get("/view_metadata/{folder_name}")
async def view_metadata(request: web.Request) -> web.Response:
    state = _state(request)
    filename = request.query.get("filename", "")
    if not filename:
        raise BadRequest("'filename' is required.")
    folder_name = request.match_info["folder_name"]
    if folder_name not in state.services.folders.model_folders():
        raise web.HTTPNotFound(text=f"No model folder {folder_name!r}.")
    path = await state.call(_model_file, state, folder_name, filename)
    if path is None:
        raise web.HTTPNotFound(text=f"{folder_name}/{filename} does not exist.")
    if not path.name.endswith(".safetensors"):
        return web.json_response({})
    meta = await state.call(_safetensors_metadata, path)
    return web.json_response(meta or {})


# --- user data ---------------------------------------------------------------------------------------
def user_root(state: AppState) -> Path:
    root = Path(state.services.folders.user) / USER
    root.mkdir(parents=True, exist_ok=True)
    return root


# Answers for files the editor asks for on every boot that a new user does not have yet (a 404 is a
# console error in the browser).
_MISSING_DEFAULTS: dict[str, tuple[str, str]] = {
    "user.css": ("", "text/css"),
    "comfy.templates.json": ("[]", "application/json"),
    "workflows/.index.json": ('{"favorites":[]}', "application/json"),
}


def _user_path(state: AppState, relative: str) -> Path:
    if not relative or relative.endswith("/"):
        raise BadRequest("A user data file name is required.")
    return resolve_inside(user_root(state), relative)


def _file_info(root: Path, path: Path) -> dict[str, Any]:
    stat = path.stat()
    created = getattr(stat, "st_birthtime", stat.st_ctime)
    return {
        "path": path.relative_to(root).as_posix(),
        "size": stat.st_size,
        "modified": stat.st_mtime,
        "created": created,
    }


def _list_dir(base: Path, recurse: bool, full_info: bool, split: bool) -> list[Any]:
    found: list[Any] = []
    real_base = os.path.realpath(base)
    for dirpath, dirnames, filenames in os.walk(base, followlinks=False):
        dirnames[:] = sorted(d for d in dirnames if not os.path.islink(os.path.join(dirpath, d)))
        for name in sorted(filenames):
            path = Path(dirpath) / name
            if not os.path.realpath(path).startswith(real_base + os.sep):
                continue
            rel = path.relative_to(base).as_posix()
            if full_info:
                found.append(_file_info(base, path))
            elif split:
                found.append([rel, *rel.split("/")])
            else:
                found.append(rel)
        if not recurse:
            break
    return found


@routes.get("/userdata")
async def list_userdata(request: web.Request) -> web.Response:
    state = _state(request)
    directory = request.query.get("dir", "")
    if not directory:
        raise BadRequest("'dir' is required.")
    base = resolve_inside(user_root(state), directory.rstrip("/"))
    if not base.is_dir():
        return web.json_response([])

    def flag(name: str) -> bool:
        return request.query.get(name, "").lower() == "true"

    return web.json_response(
        await state.call(_list_dir, base, flag("recurse"), flag("full_info"), flag("split"))
    )


@routes.get("/userdata/{file}")
async def get_userdata(request: web.Request) -> web.StreamResponse:
    state = _state(request)
    relative = request.match_info["file"]
    path = _user_path(state, relative)
    if not path.is_file():
        if relative in _MISSING_DEFAULTS:
            text, content_type = _MISSING_DEFAULTS[relative]
            return web.Response(text=text, content_type=content_type)
        raise web.HTTPNotFound(text=f"User file {relative!r} does not exist.")
    content_type = content_type_of(path)
    if (
        content_type not in ("application/json", "text/css", "text/plain")
        and content_type not in INLINE_TYPES
    ):
        content_type = "application/octet-stream"
    return web.FileResponse(
        path,
        headers={
            "Content-Type": content_type,
            "X-Content-Type-Options": "nosniff",
            "Cache-Control": "no-cache",
        },
    )


def _write_user_file(path: Path, data: bytes, overwrite: bool) -> bool:
    if path.exists() and not overwrite:
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.part")
    tmp.write_bytes(data)
    os.replace(tmp, path)
    return True


def _user_answer(state: AppState, path: Path, full_info: bool) -> web.Response:
    root = user_root(state)
    if full_info:
        return web.json_response(_file_info(root, path))
    return web.json_response(path.relative_to(root).as_posix())


@routes.post("/userdata/{file}")
async def post_userdata(request: web.Request) -> web.Response:
    state = _state(request)
    path = _user_path(state, request.match_info["file"])
    overwrite = request.query.get("overwrite", "true").lower() != "false"
    data = await request.read()
    if path.is_dir():
        raise BadRequest("That name is a folder.")
    if not await state.call(_write_user_file, path, data, overwrite):
        return web.json_response(
            {
                "error": {
                    "type": "file_exists",
                    "message": "File already exists",
                    "details": "",
                    "extra_info": {},
                }
            },
            status=409,
        )
    return _user_answer(state, path, request.query.get("full_info", "").lower() == "true")


@routes.delete("/userdata/{file}")
async def delete_userdata(request: web.Request) -> web.Response:
    state = _state(request)
    path = _user_path(state, request.match_info["file"])
    if not path.is_file():
        raise web.HTTPNotFound(text="No such user file.")
    await state.call(path.unlink)
    return web.Response(status=204)


@routes.post("/userdata/{file}/move/{dest}")
async def move_userdata(request: web.Request) -> web.Response:
    state = _state(request)
    source = _user_path(state, request.match_info["file"])
    dest = _user_path(state, request.match_info["dest"])
    if not source.is_file():
        raise web.HTTPNotFound(text="No such user file.")
    overwrite = request.query.get("overwrite", "true").lower() != "false"
    if dest.exists() and not overwrite:
        return web.json_response(
            {
                "error": {
                    "type": "file_exists",
                    "message": "File already exists",
                    "details": "",
                    "extra_info": {},
                }
            },
            status=409,
        )
    dest.parent.mkdir(parents=True, exist_ok=True)
    await state.call(shutil.move, str(source), str(dest))
    return _user_answer(state, dest, request.query.get("full_info", "").lower() == "true")


# --- settings and users ------------------------------------------------------------------------------
def _settings_path(state: AppState) -> Path:
    return user_root(state) / "comfy.settings.json"


def load_settings(state: AppState) -> dict[str, Any]:
    path = _settings_path(state)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        data = {}
    return data if isinstance(data, dict) else {}


def _save_settings(state: AppState, changes: dict[str, Any]) -> None:
    with state.settings_lock:
        settings = load_settings(state)
        settings.update(changes)
        _write_user_file(_settings_path(state), json.dumps(settings, indent=2).encode(), True)


@routes.get("/settings")
async def get_settings(request: web.Request) -> web.Response:
    state = _state(request)
    return web.json_response(await state.call(load_settings, state))


@routes.get("/settings/{setting_id}")
async def get_setting(request: web.Request) -> web.Response:
    state = _state(request)
    settings = await state.call(load_settings, state)
    return web.json_response(settings.get(request.match_info["setting_id"]))


@routes.post("/settings")
async def post_settings(request: web.Request) -> web.Response:
    state = _state(request)
    body = await read_json(request)
    if not isinstance(body, dict):
        raise BadRequest("The settings body must be a JSON object.")
    await state.call(_save_settings, state, body)
    return web.json_response({})


@routes.post("/settings/{setting_id}")
async def post_setting(request: web.Request) -> web.Response:
    state = _state(request)
    value = await read_json(request)
    await state.call(_save_settings, state, {request.match_info["setting_id"]: value})
    return web.json_response({})


@routes.get("/users")
async def get_users(request: web.Request) -> web.Response:
    return web.json_response({"storage": "server", "migrated": True})


@routes.post("/users")
async def post_users(request: web.Request) -> web.Response:
    raise BadRequest("Plexus runs in single-user mode; there are no users to create.")
