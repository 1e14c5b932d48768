"""ComfyUI's ``folder_paths`` as a face over Plexus's ``storage.Folders`` (the one installed in
``nodes.services``). Names and behaviour follow ComfyUI 0.3.64; every value is read from, and every
change written to, the live ``Folders``, so plugins and Plexus see the same layout.

- ``folder_names_and_paths``: ``{kind: ([folder, ...], {".ext", ...})}``; the lists and sets handed out
  write through (``folder_names_and_paths["x"][0].append(path)`` adds a folder), and assigning a new
  ``(paths, extensions)`` entry registers a kind;
- ``models_dir``, ``base_path``, ``output_directory``, ``input_directory``, ``temp_directory``,
  ``user_directory`` are module attributes read from the layout;
- ``get_full_path`` returns None for an unknown kind or a missing file (``get_full_path_or_raise``
  raises FileNotFoundError), ``get_filename_list`` raises KeyError for an unknown kind;
- listings are Plexus's (cached until a scanned folder changes); ``filename_list_cache`` is a view
  whose ``pop`` / ``clear`` / ``del`` drop Plexus's cache.
"""
from __future__ import annotations

import logging
import mimetypes
import os
import time
from collections.abc import Iterator, MutableMapping
from pathlib import Path
from typing import Any, Collection

from nodes import services as _services
from storage.errors import StorageError as _StorageError
from storage.folders import LEGACY_KINDS as _LEGACY
from storage.folders import PT_EXTENSIONS as _PT_EXTENSIONS

supported_pt_extensions: set[str] = set(_PT_EXTENSIONS)
extension_mimetypes_cache = {"webp": "image", "fbx": "model"}


def _folders():
    return _services.folders()


def map_legacy(folder_name: str) -> str:
    return _LEGACY.get(folder_name, folder_name)


# --- folder_names_and_paths --------------------------------------------------------------------------

class _PathList(list):
    """One kind's folders (strings); every change is written to the layout."""

    def __init__(self, kind: str, paths: list[str]):
        super().__init__(paths)
        self._kind = kind

    def _sync(self) -> None:
        _folders().set_paths(self._kind, list(self))

    def _mutating(name: str):  # type: ignore[misc]
        def method(self, *args, **kwargs):
            result = getattr(list, name)(self, *args, **kwargs)
            self._sync()
            return result
        method.__name__ = name
        return method

    for _name in ("append", "extend", "insert", "remove", "pop", "clear", "__setitem__", "__delitem__",
                  "__iadd__", "sort", "reverse"):
        locals()[_name] = _mutating(_name)
    del _name, _mutating


class _ExtensionSet(set):
    """One kind's extensions; every change is written to the layout."""

    def __init__(self, kind: str, extensions: set[str]):
        super().__init__(extensions)
        self._kind = kind

    def _mutating(name: str):  # type: ignore[misc]
        def method(self, *args, **kwargs):
            result = getattr(set, name)(self, *args, **kwargs)
            _folders().set_extensions(self._kind, set(self))
            return result
        method.__name__ = name
        return method

    for _name in ("add", "update", "discard", "remove", "pop", "clear", "__ior__", "difference_update",
                  "intersection_update"):
        locals()[_name] = _mutating(_name)
    del _name, _mutating


class _FolderNamesAndPaths(MutableMapping):
    def __getitem__(self, kind: str) -> tuple[list[str], set[str]]:
        folders = _folders()
        if kind not in folders.kinds():
            raise KeyError(kind)
        return (_PathList(kind, [str(p) for p in folders.paths(kind)]),
                _ExtensionSet(kind, set(folders.extensions(kind))))

    def __setitem__(self, kind: str, value: Any) -> None:
        paths, extensions = value
        if isinstance(paths, (str, os.PathLike)):
            paths = [paths]
        _folders().add_kind(kind, list(paths), set(extensions or ()))

    def __delitem__(self, kind: str) -> None:
        if kind not in _folders().kinds():
            raise KeyError(kind)
        _folders().remove_kind(kind)

    def __iter__(self) -> Iterator[str]:
        return iter(_folders().kinds())

    def __len__(self) -> int:
        return len(_folders().kinds())

    def __contains__(self, kind: object) -> bool:
        return isinstance(kind, str) and kind in _folders().kinds()


folder_names_and_paths = _FolderNamesAndPaths()


class _FilenameListCache(MutableMapping):
    """``filename_list_cache``: ``{kind: (files, {folder: mtime}, time)}`` of the kinds listed so far;
    removing an entry drops Plexus's cached listing."""

    def __getitem__(self, kind: str) -> tuple[list[str], dict[str, float], float]:
        if kind not in _folders().kinds():
            raise KeyError(kind)
        return (_folders().list_files(kind), {}, time.perf_counter())

    def __setitem__(self, kind: str, value: Any) -> None:
        _folders().invalidate(kind)

    def __delitem__(self, kind: str) -> None:
        _folders().invalidate(kind)

    def __iter__(self) -> Iterator[str]:
        return iter([k for k in _folders().kinds() if k != "custom_nodes"])

    def __len__(self) -> int:
        return len(list(iter(self)))

    def clear(self) -> None:
        _folders().invalidate()

    def pop(self, kind: str, *default: Any) -> Any:
        _folders().invalidate(kind)
        return default[0] if default else None


filename_list_cache = _FilenameListCache()


class CacheHelper:
    """ComfyUI's per-request listing cache; Plexus's listings are cached already, so it only keeps
    the context-manager shape."""

    def __init__(self) -> None:
        self.cache: dict[str, Any] = {}
        self.active = False

    def get(self, key: str, default: Any = None) -> Any:
        return self.cache.get(key, default) if self.active else default

    def set(self, key: str, value: Any) -> None:
        if self.active:
            self.cache[key] = value

    def clear(self) -> None:
        self.cache.clear()

    def __enter__(self) -> CacheHelper:
        self.active = True
        return self

    def __exit__(self, *exc: Any) -> None:
        self.active = False
        self.clear()


cache_helper = CacheHelper()


# --- module attributes read from the layout -----------------------------------------------------------

def __getattr__(name: str) -> Any:
    folders = _folders()
    values = {"base_path": folders.base, "models_dir": folders.models_dir, "output_directory": folders.output,
              "input_directory": folders.input, "temp_directory": folders.temp, "user_directory": folders.user}
    if name in values:
        return str(values[name])
    raise AttributeError(f"module 'folder_paths' has no attribute {name!r}")


def get_output_directory() -> str:
    return str(_folders().output)


def get_input_directory() -> str:
    return str(_folders().input)


def get_temp_directory() -> str:
    return str(_folders().temp)


def get_user_directory() -> str:
    return str(_folders().user)


def set_output_directory(output_dir: str) -> None:
    _folders().output = Path(os.path.abspath(output_dir))


def set_input_directory(input_dir: str) -> None:
    _folders().input = Path(os.path.abspath(input_dir))


def set_temp_directory(temp_dir: str) -> None:
    _folders().temp = Path(os.path.abspath(temp_dir))


def set_user_directory(user_dir: str) -> None:
    _folders().user = Path(os.path.abspath(user_dir))


def get_directory_by_type(type_name: str) -> str | None:
    folder = _folders().directory(type_name)
    return str(folder) if folder is not None else None


# --- annotated names ("file.png [output]") ------------------------------------------------------------

def annotated_filepath(name: str) -> tuple[str, str | None]:
    for suffix, getter in ((" [output]", get_output_directory), (" [input]", get_input_directory),
                           (" [temp]", get_temp_directory)):
        if name.endswith(suffix.strip()):
            return name[:-len(suffix)], getter()
    return name, None


def get_annotated_filepath(name: str, default_dir: str | None = None) -> str:
    name, base_dir = annotated_filepath(name)
    return os.path.join(base_dir or default_dir or get_input_directory(), name)


def exists_annotated_filepath(name: str) -> bool:
    name, base_dir = annotated_filepath(name)
    return os.path.exists(os.path.join(base_dir or get_input_directory(), name))


# --- model folders -----------------------------------------------------------------------------------

def add_model_folder_path(folder_name: str, full_folder_path: str, is_default: bool = False) -> None:
    _folders().add_path(map_legacy(folder_name), full_folder_path, is_default=is_default)


def get_folder_paths(folder_name: str) -> list[str]:
    return list(folder_names_and_paths[map_legacy(folder_name)][0])


def recursive_search(directory: str, excluded_dir_names: list[str] | None = None) -> tuple[list[str], dict[str, float]]:
    """Every file below ``directory`` (relative names) and ``{folder: mtime}`` of the folders walked."""
    excluded = set(excluded_dir_names or ())
    files: list[str] = []
    dirs: dict[str, float] = {}
    if not os.path.isdir(directory):
        return files, dirs
    for root, subdirs, names in os.walk(directory, followlinks=True):
        subdirs[:] = [d for d in subdirs if d not in excluded]
        try:
            dirs[root] = os.path.getmtime(root)
        except OSError:
            continue
        files += [os.path.relpath(os.path.join(root, n), directory) for n in names]
    return files, dirs


def filter_files_extensions(files: Collection[str], extensions: Collection[str]) -> list[str]:
    return sorted(f for f in files if not extensions or os.path.splitext(f)[-1].lower() in extensions)


def filter_files_content_types(files: list[str], content_types: list[str]) -> list[str]:
    result = []
    for file in files:
        extension = file.split(".")[-1]
        content_type = extension_mimetypes_cache.get(extension)
        if content_type is None:
            mime, _ = mimetypes.guess_type(file, strict=False)
            if not mime:
                continue
            content_type = extension_mimetypes_cache[extension] = mime.split("/")[0]
        if content_type in content_types:
            result.append(file)
    return result


def get_full_path(folder_name: str, filename: str) -> str | None:
    folder_name = map_legacy(folder_name)
    folders = _folders()
    if folder_name not in folders.kinds():
        return None
    filename = os.path.relpath(os.path.join("/", filename), "/")   # no climbing out of the folders
    for folder in folders.paths(folder_name):
        full_path = os.path.join(folder, filename)
        if os.path.isfile(full_path):
            return full_path
        if os.path.islink(full_path):
            logging.warning("WARNING path %s exists but doesn't link anywhere, skipping.", full_path)
    return None


def get_full_path_or_raise(folder_name: str, filename: str) -> str:
    full_path = get_full_path(folder_name, filename)
    if full_path is None:
        raise FileNotFoundError(f"Model in folder '{folder_name}' with filename '{filename}' not found.")
    return full_path


def get_filename_list(folder_name: str) -> list[str]:
    folder_name = map_legacy(folder_name)
    if folder_name not in _folders().kinds():
        raise KeyError(folder_name)
    return _folders().list_files(folder_name)


def get_save_image_path(filename_prefix: str, output_dir: str, image_width: int = 0,
                        image_height: int = 0) -> tuple[str, str, int, str, str]:
    """``(full_output_folder, filename, counter, subfolder, filename_prefix)``; a prefix that leaves
    ``output_dir`` raises, as in ComfyUI."""
    try:
        target = _folders().save_target(filename_prefix, image_width, image_height, folder=Path(output_dir))
    except _StorageError as exc:
        raise Exception(f"**** ERROR: Saving image outside the output folder is not allowed. ({exc})") from exc
    return str(target.folder), target.filename, target.counter, target.subfolder, target.filename_prefix


def get_input_subfolders() -> list[str]:
    root = get_input_directory()
    found = []
    for current, dirs, _ in os.walk(root):
        found += [os.path.relpath(os.path.join(current, d), root).replace(os.sep, "/") for d in dirs]
    return sorted(found)
