"""Resolve a user-supplied relative name inside a folder, and name new files safely.

Every place that turns a name from a client or a workflow into a file (``/view``, ``/upload``,
``/userdata``, LoadImage, the model loaders) goes through :func:`resolve_inside`. It refuses, with
an :class:`~storage.errors.UnsafePathError` that names the reason:

- NUL bytes, backslashes, absolute paths and drive letters (``/etc/passwd``, ``C:x``);
- ``..`` components, also percent-encoded (``%2e%2e``, ``%2f``, ``%5c``, ``%00``, double-encoded ``%25``);
- a path whose real location (after resolving every symlink, on both the folder and the name) is
  outside the real folder. ``allow_symlinks_out=True`` keeps the textual checks but trusts symlinks
  placed by the owner of the folder (model folders often link to another disk).

Upload names are rewritten rather than refused: :func:`sanitize_filename`, then
:func:`next_free_name` / :func:`claim_free_path` so an upload never overwrites a file.
"""
from __future__ import annotations

import os
import re
from pathlib import Path

from storage.errors import UnsafePathError

_ENCODED_SPECIAL = re.compile(r"%(2e|2f|5c|00|25)", re.IGNORECASE)
_DRIVE = re.compile(r"^[A-Za-z]:")
_UNSAFE_FILENAME_CHARS = re.compile(r'[\x00-\x1f\x7f<>:"/\\|?*]')
_WINDOWS_RESERVED = {"CON", "PRN", "AUX", "NUL", *(f"COM{i}" for i in range(1, 10)),
                     *(f"LPT{i}" for i in range(1, 10))}
MAX_FILENAME_BYTES = 255


def check_relative_name(name: str) -> str:
    """The name as clean forward-slash components ("" for the folder itself), or raise UnsafePathError."""
    if not isinstance(name, str):
        raise UnsafePathError(repr(name), "not a string")
    if "\x00" in name:
        raise UnsafePathError(name, "contains a NUL byte")
    if _ENCODED_SPECIAL.search(name):
        raise UnsafePathError(name, "contains a percent-encoded '.', '/', '\\', NUL or '%'")
    if "\\" in name:
        raise UnsafePathError(name, "contains a backslash")
    if name.startswith("/") or _DRIVE.match(name):
        raise UnsafePathError(name, "is an absolute path")
    parts = [part for part in name.split("/") if part not in ("", ".")]
    if ".." in parts:
        raise UnsafePathError(name, "contains a '..' component")
    if os.name == "nt" and any(":" in part for part in parts):  # alternate data streams
        raise UnsafePathError(name, "contains ':'")
    return "/".join(parts)


def is_inside(root: Path | str, path: Path | str) -> bool:
    """True when ``path`` is ``root`` or below it (both taken as given: resolve them first)."""
    try:
        return os.path.commonpath([os.fspath(root), os.fspath(path)]) == os.fspath(root)
    except ValueError:  # different drives on Windows
        return False


def resolve_inside(root: Path | str, *names: str, allow_symlinks_out: bool = False) -> Path:
    """The path of ``root/names...`` if it stays inside ``root``; raise UnsafePathError otherwise.

    Several names are joined (``resolve_inside(output, subfolder, filename)``); each is checked on
    its own. The result is the real path (symlinks resolved) unless ``allow_symlinks_out``, where it
    is the lexical path below the real root. The file need not exist.
    """
    clean = [check_relative_name(name) for name in names]
    real_root = os.path.realpath(root)
    joined = os.path.join(real_root, *[part for part in clean if part])
    if allow_symlinks_out:
        return Path(joined)
    real = os.path.realpath(joined)
    if not is_inside(real_root, real):
        shown = "/".join(part for part in clean if part)
        raise UnsafePathError(shown, "leads outside its folder through a symlink")
    return Path(real)


def sanitize_filename(name: str, fallback: str = "file") -> str:
    """A file name safe to create on any OS: the last path component, unsafe characters replaced by
    '_', no leading dots or spaces, no trailing dots or spaces, not a reserved Windows device name,
    at most 255 bytes (the extension kept). An empty result becomes ``fallback``."""
    base = str(name).replace("\\", "/").rsplit("/", 1)[-1]
    base = _UNSAFE_FILENAME_CHARS.sub("_", base).strip().lstrip(".").rstrip(". ")
    if not base:
        return fallback
    stem, dot, ext = base.rpartition(".")
    if not dot:
        stem, ext = base, ""
    if stem.upper() in _WINDOWS_RESERVED:
        base = "_" + base
    while len(base.encode("utf-8")) > MAX_FILENAME_BYTES:
        stem, dot, ext = base.rpartition(".")
        if dot and 0 < len(ext) < 16 and len(stem) > 1:
            base = f"{stem[:-1]}.{ext}"
        else:
            base = base[:-1]
    return base


def _numbered(filename: str, number: int) -> str:
    stem, dot, ext = filename.rpartition(".")
    if not dot or not stem:
        return f"{filename} ({number})"
    return f"{stem} ({number}).{ext}"


def next_free_name(folder: Path | str, filename: str) -> str:
    """``filename`` if ``folder`` has no such entry, else ``name (1).ext``, ``name (2).ext``, ...
    (ComfyUI's spelling for uploads that must not overwrite)."""
    folder = Path(folder)
    candidate, number = filename, 1
    while os.path.lexists(folder / candidate):
        candidate = _numbered(filename, number)
        number += 1
    return candidate


def claim_free_path(folder: Path | str, filename: str) -> Path:
    """Create an empty file under the first free name (atomic: two uploads never get the same name)
    and return its path; the caller then writes into it."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    number = 0
    while True:
        candidate = folder / (filename if number == 0 else _numbered(filename, number))
        try:
            with open(candidate, "xb"):
                return candidate
        except FileExistsError:
            number += 1
