"""The folder layout, ComfyUI's: one base directory with ``models/<kind>/``, ``custom_nodes/``,
``input/``, ``output/``, ``temp/`` and ``user/``.

A :class:`Folders` object holds the layout (no module-level state): ``main.py`` builds one from the
directory options (``--base-directory``, ``--output-directory``, ...), adds the folders of
``extra_model_paths.yaml`` and hands it to the nodes and the server. Model kinds and their folder
names follow ComfyUI's ``folder_paths`` (for facts only), including two kinds that read two folders
each (``text_encoders`` = ``text_encoders/`` + ``clip/``, ``diffusion_models`` = ``unet/`` +
``diffusion_models/``) and the legacy names ``clip`` / ``unet`` that map onto them.

Listings are recursive, filtered by extension, sorted, with forward slashes, and cached until the
modification time of one of the scanned folders changes (a file added or removed anywhere below).
"""
from __future__ import annotations

import difflib
import os
import re
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from storage.errors import StorageError
from storage.safe_paths import check_relative_name, is_inside, resolve_inside

PT_EXTENSIONS = frozenset({".ckpt", ".pt", ".pt2", ".bin", ".pth", ".safetensors", ".pkl", ".sft"})

# kind -> (folder names below models/, accepted extensions). ``{"folder"}`` lists nothing (diffusers
# folders are directories); ``{""}`` accepts files without an extension. An empty set accepts all.
MODEL_KINDS: dict[str, tuple[tuple[str, ...], frozenset[str]]] = {
    "checkpoints": (("checkpoints",), PT_EXTENSIONS),
    "configs": (("configs",), frozenset({".yaml"})),
    "loras": (("loras",), PT_EXTENSIONS),
    "vae": (("vae",), PT_EXTENSIONS),
    "text_encoders": (("text_encoders", "clip"), PT_EXTENSIONS),
    "diffusion_models": (("unet", "diffusion_models"), PT_EXTENSIONS),
    "clip_vision": (("clip_vision",), PT_EXTENSIONS),
    "style_models": (("style_models",), PT_EXTENSIONS),
    "embeddings": (("embeddings",), PT_EXTENSIONS),
    "diffusers": (("diffusers",), frozenset({"folder"})),
    "vae_approx": (("vae_approx",), PT_EXTENSIONS),
    "controlnet": (("controlnet", "t2i_adapter"), PT_EXTENSIONS),
    "gligen": (("gligen",), PT_EXTENSIONS),
    "upscale_models": (("upscale_models",), PT_EXTENSIONS),
    "hypernetworks": (("hypernetworks",), PT_EXTENSIONS),
    "photomaker": (("photomaker",), PT_EXTENSIONS),
    "classifiers": (("classifiers",), frozenset({""})),
    "model_patches": (("model_patches",), PT_EXTENSIONS),
    "audio_encoders": (("audio_encoders",), PT_EXTENSIONS),
}
LEGACY_KINDS = {"unet": "diffusion_models", "clip": "text_encoders"}
# Created at server start so users see where to put files (each is in .gitignore: in a source checkout
# models/ is also the ``models`` Python package).
CREATED_MODEL_FOLDERS = ("checkpoints", "vae", "loras", "embeddings", "hypernetworks", "text_encoders",
                         "diffusion_models", "upscale_models", "vae_approx", "configs")
EXCLUDED_DIR_NAMES = frozenset({".git"})
# The folders a client may name with ``type=`` (``/view``, ``/upload``, "name.png [output]").
IO_TYPES = ("input", "output", "temp")


def canonical_kind(kind: str) -> str:
    """ComfyUI's legacy folder names mapped to the current ones (``unet`` -> ``diffusion_models``)."""
    return LEGACY_KINDS.get(kind, kind)


@dataclass(frozen=True)
class SaveTarget:
    """Where a save node writes: ``folder/<filename>_<counter:05>_.<ext>`` (ComfyUI's numbering)."""

    folder: Path
    filename: str
    counter: int
    subfolder: str
    filename_prefix: str

    def path(self, extension: str, counter: int | None = None) -> Path:
        return self.folder / f"{self.filename}_{(self.counter if counter is None else counter):05}_.{extension}"


@dataclass
class _Listing:
    files: list[str]
    dir_mtimes: dict[str, float]
    searched: tuple[str, ...]


class Folders:
    """The folders of one Plexus instance. Paths are absolute; ``models`` kinds may have many paths."""

    def __init__(self, base_dir: Path | str, *, output_dir: Path | str | None = None,
                 input_dir: Path | str | None = None, temp_dir: Path | str | None = None,
                 user_dir: Path | str | None = None, models_dir: Path | str | None = None):
        self.base = Path(os.path.abspath(base_dir))
        self.models_dir = Path(os.path.abspath(models_dir)) if models_dir else self.base / "models"
        self.output = Path(os.path.abspath(output_dir)) if output_dir else self.base / "output"
        self.input = Path(os.path.abspath(input_dir)) if input_dir else self.base / "input"
        self.temp = Path(os.path.abspath(temp_dir)) if temp_dir else self.base / "temp"
        self.user = Path(os.path.abspath(user_dir)) if user_dir else self.base / "user"
        # The folder plugins take for ComfyUI's install folder (the ``server`` / ``folder_paths`` faces'
        # ``__file__`` point into it): packs write ``web/extensions/<name>/`` and their own data there, which
        # is per user and writable, never Plexus's source tree. ``plugin_web_extensions`` are served.
        self.plugin_root = self.user / "plexus" / "comfy_root"
        self._kinds: dict[str, tuple[list[Path], frozenset[str]]] = {
            kind: ([self.models_dir / name for name in names], extensions)
            for kind, (names, extensions) in MODEL_KINDS.items()
        }
        self._kinds["custom_nodes"] = ([self.base / "custom_nodes"], frozenset())
        self._cache: dict[str, _Listing] = {}
        self._lock = threading.RLock()

    # -- layout ---------------------------------------------------------------------------------

    def kinds(self) -> list[str]:
        with self._lock:
            return list(self._kinds)

    def paths(self, kind: str) -> list[Path]:
        """The folders searched for ``kind``, highest priority first."""
        with self._lock:
            return list(self._entry(kind)[0])

    def extensions(self, kind: str) -> frozenset[str]:
        with self._lock:
            return self._entry(kind)[1]

    def add_path(self, kind: str, path: Path | str, is_default: bool = False) -> None:
        """Add a folder to ``kind`` (last, or first when ``is_default``); an unknown kind is created
        with no extension filter, as ComfyUI does for extra_model_paths.yaml entries."""
        kind = canonical_kind(kind)
        path = Path(os.path.abspath(os.path.expanduser(path)))
        with self._lock:
            paths, extensions = self._kinds.setdefault(kind, ([], frozenset()))
            if path in paths:
                paths.remove(path)
            if is_default:
                paths.insert(0, path)
            else:
                paths.append(path)
            self._cache.pop(kind, None)

    def add_kind(self, kind: str, paths: list[Path | str], extensions: set[str] | frozenset[str]) -> None:
        """Register a new kind (for plugins that bring their own model folders)."""
        with self._lock:
            self._kinds[canonical_kind(kind)] = ([Path(os.path.abspath(p)) for p in paths],
                                                 frozenset(e.lower() for e in extensions))
            self._cache.pop(canonical_kind(kind), None)

    def set_paths(self, kind: str, paths: list[Path | str]) -> None:
        """Replace the folders of ``kind`` (created, with no extension filter, if unknown)."""
        kind = canonical_kind(kind)
        with self._lock:
            _, extensions = self._kinds.get(kind, ([], frozenset()))
            self._kinds[kind] = ([Path(os.path.abspath(os.path.expanduser(p))) for p in paths], extensions)
            self._cache.pop(kind, None)

    def set_extensions(self, kind: str, extensions: set[str] | frozenset[str]) -> None:
        """Replace the accepted extensions of ``kind`` (empty: every file)."""
        kind = canonical_kind(kind)
        with self._lock:
            paths, _ = self._entry(kind)
            self._kinds[kind] = (paths, frozenset(e.lower() for e in extensions))
            self._cache.pop(kind, None)

    def remove_kind(self, kind: str) -> None:
        with self._lock:
            self._kinds.pop(canonical_kind(kind), None)
            self._cache.pop(canonical_kind(kind), None)

    def model_folders(self) -> dict[str, tuple[list[Path], set[str]]]:
        """Every kind except custom_nodes, as ``{kind: (paths, extensions)}`` (the server's view)."""
        with self._lock:
            return {kind: (list(paths), set(exts)) for kind, (paths, exts) in self._kinds.items()
                    if kind != "custom_nodes"}

    def directory(self, type_name: str) -> Path | None:
        """The folder for a client's ``type=`` value: ``input``, ``output`` or ``temp``; else None."""
        return {"input": self.input, "output": self.output, "temp": self.temp}.get(type_name)

    @property
    def plugin_web_extensions(self) -> Path:
        """``<plugin_root>/web/extensions``: each folder below it is served as ``/extensions/<folder>/``."""
        return self.plugin_root / "web" / "extensions"

    def ensure_dirs(self) -> None:
        """Create input/, output/, temp/, user/ and the common model folders if missing (the other
        model folders are searched when they exist)."""
        for path in (self.input, self.output, self.temp, self.user):
            path.mkdir(parents=True, exist_ok=True)
        for name in CREATED_MODEL_FOLDERS:
            (self.models_dir / name).mkdir(parents=True, exist_ok=True)

    def _entry(self, kind: str) -> tuple[list[Path], frozenset[str]]:
        entry = self._kinds.get(canonical_kind(kind))
        if entry is None:
            close = difflib.get_close_matches(kind, list(self._kinds) + list(LEGACY_KINDS), n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise StorageError("unknown_folder_kind", f"{kind!r} is not a model folder kind{hint}",
                               "known kinds: " + ", ".join(sorted(self._kinds)), {"kind": kind})
        return entry

    # -- listing --------------------------------------------------------------------------------

    def list_files(self, kind: str) -> list[str]:
        """Every file of ``kind`` below any of its folders: relative names with '/', filtered by
        extension, de-duplicated and sorted. Cached until a scanned folder's mtime changes."""
        kind = canonical_kind(kind)
        with self._lock:
            paths, extensions = self._entry(kind)
            searched = tuple(str(p) for p in paths)
            cached = self._cache.get(kind)
        if cached is not None and cached.searched == searched and _still_fresh(cached):
            return list(cached.files)
        names: set[str] = set()
        dir_mtimes: dict[str, float] = {}
        for folder in searched:
            names.update(_scan(folder, dir_mtimes))
        files = sorted(name for name in names if _extension_ok(name, extensions))
        with self._lock:
            self._cache[kind] = _Listing(files, dir_mtimes, searched)
        return list(files)

    def invalidate(self, kind: str | None = None) -> None:
        with self._lock:
            if kind is None:
                self._cache.clear()
            else:
                self._cache.pop(canonical_kind(kind), None)

    def find(self, kind: str, name: str) -> Path:
        """The file ``name`` (as listed by :meth:`list_files`) in the first folder of ``kind`` that
        has it. Raises StorageError naming the kind and the name, with the closest listed name."""
        clean = check_relative_name(name)
        paths, extensions = self._entry(kind)
        for folder in paths:
            candidate = resolve_inside(folder, clean, allow_symlinks_out=True)
            if candidate.is_file() or ("folder" in extensions and candidate.is_dir()):
                return candidate
        listed = self.list_files(kind)
        hint = _closest(clean, listed)
        searched = ", ".join(str(p) for p in paths) or "(no folders)"
        raise StorageError(
            "model_not_found",
            f"{canonical_kind(kind)} file {name!r} was not found"
            + (f"; did you mean {hint!r}?" if hint else
               f"; put it in {paths[0] if paths else 'a ' + kind + ' folder'} or check extra_model_paths.yaml"),
            f"searched {searched}",
            {"kind": canonical_kind(kind), "name": name, "closest": hint, "available": listed[:50]},
        )

    # -- input / output files ---------------------------------------------------------------------

    def annotated_path(self, name: str, default_type: str = "input") -> Path:
        """Resolve ComfyUI's ``"file.png [output]"`` annotation (``[input]``, ``[output]``,
        ``[temp]``; none = ``default_type``) to a safe path inside that folder."""
        type_name = default_type
        match = re.fullmatch(r"(.*?) ?\[(input|output|temp)\]", name)
        if match:
            name, type_name = match.group(1), match.group(2)
        folder = self.directory(type_name)
        if folder is None:
            raise StorageError("invalid_folder_type", f"{type_name!r} is not one of {', '.join(IO_TYPES)}")
        return resolve_inside(folder, name)

    def save_target(self, filename_prefix: str, image_width: int = 0, image_height: int = 0,
                    folder: Path | None = None) -> SaveTarget:
        """Where a save node writes the next file for ``filename_prefix`` (``"sub/name"`` allowed;
        ``%width%``, ``%height%``, ``%year%`` ... ``%second%`` expanded). The counter continues after
        the highest ``<name>_<number>`` already in the folder. Escaping the folder raises."""
        root = Path(folder) if folder is not None else self.output
        prefix = _expand_prefix(filename_prefix, image_width, image_height)
        normalized = os.path.normpath(prefix).replace(os.sep, "/")
        subfolder, _, filename = normalized.rpartition("/")
        target_folder = resolve_inside(root, subfolder) if subfolder else Path(os.path.realpath(root))
        counter = 1
        pattern = re.compile(re.escape(filename) + r"_(\d+)", re.IGNORECASE if os.name == "nt" else 0)
        try:
            numbers = [int(m.group(1)) for entry in os.listdir(target_folder)
                       if (m := pattern.match(entry))]
            counter = max(numbers, default=0) + 1
        except FileNotFoundError:
            target_folder.mkdir(parents=True, exist_ok=True)
        return SaveTarget(target_folder, filename, counter, subfolder, prefix)


def _extension_ok(name: str, extensions: frozenset[str]) -> bool:
    return not extensions or os.path.splitext(name)[1].lower() in extensions


def _scan(folder: str, dir_mtimes: dict[str, float]) -> list[str]:
    """Relative names of every file below ``folder`` (symlinks followed, each real dir once)."""
    found: list[str] = []
    seen: set[str] = set()

    def walk(path: str, prefix: str) -> None:
        real = os.path.realpath(path)
        if real in seen:
            return
        seen.add(real)
        try:
            dir_mtimes[path] = os.path.getmtime(path)
            entries = sorted(os.scandir(path), key=lambda e: e.name)
        except OSError:
            return
        for entry in entries:
            try:
                is_dir = entry.is_dir()
            except OSError:
                continue
            if is_dir:
                if entry.name not in EXCLUDED_DIR_NAMES:
                    walk(entry.path, prefix + entry.name + "/")
            elif entry.is_file():
                found.append(prefix + entry.name)

    if os.path.isdir(folder):
        walk(folder, "")
    return found


def _still_fresh(listing: _Listing) -> bool:
    for path, mtime in listing.dir_mtimes.items():
        try:
            if os.path.getmtime(path) != mtime:
                return False
        except OSError:
            return False
    # A configured folder that did not exist at scan time and exists now.
    return all(folder in listing.dir_mtimes or not os.path.isdir(folder) for folder in listing.searched)


def _closest(name: str, candidates: list[str]) -> str | None:
    if not candidates:
        return None
    base = name.rsplit("/", 1)[-1].lower()
    same_base = [c for c in candidates if c.rsplit("/", 1)[-1].lower() == base]
    if same_base:
        return same_base[0]
    close = difflib.get_close_matches(name, candidates, n=1, cutoff=0.5)
    return close[0] if close else None


def _expand_prefix(prefix: str, width: int, height: int) -> str:
    if "%" not in prefix:
        return prefix
    now = time.localtime()
    values = {"width": str(width), "height": str(height), "year": str(now.tm_year),
              "month": f"{now.tm_mon:02}", "day": f"{now.tm_mday:02}", "hour": f"{now.tm_hour:02}",
              "minute": f"{now.tm_min:02}", "second": f"{now.tm_sec:02}"}
    for key, value in values.items():
        prefix = prefix.replace(f"%{key}%", value)
    return prefix


__all__ = ["Folders", "SaveTarget", "MODEL_KINDS", "LEGACY_KINDS", "PT_EXTENSIONS", "IO_TYPES",
           "canonical_kind", "is_inside"]
