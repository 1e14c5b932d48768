"""``extra_model_paths.yaml``: extra model folders, in ComfyUI's format, so that Plexus can use the
models of an existing ComfyUI or AUTOMATIC1111 install.

The file has one section per install. In a section, ``base_path`` (``~`` and ``$VARS`` expanded; a
relative one is relative to the yaml file) is joined to every other value; ``is_default: true`` puts
the section's folders first instead of last. Every other key is a folder kind (``checkpoints``,
``loras``, legacy ``unet`` / ``clip`` too, or a new kind) whose value is one path or several, one per
line (a YAML ``|`` block), or a YAML list. Without ``base_path`` a relative path is relative to the
yaml file. ComfyUI's example ``a111:`` section::

    a111:
        base_path: path/to/stable-diffusion-webui/
        checkpoints: models/Stable-diffusion
        configs: models/Stable-diffusion
        vae: models/VAE
        loras: |
             models/Lora
             models/LyCORIS
        upscale_models: |
                      models/ESRGAN
                      models/RealESRGAN
                      models/SwinIR
        embeddings: embeddings
        hypernetworks: models/hypernetworks
        controlnet: models/ControlNet

``custom_nodes: path`` adds a folder that plugins are loaded from.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from storage.errors import StorageError
from storage.folders import Folders, canonical_kind

DEFAULT_FILENAME = "extra_model_paths.yaml"


@dataclass(frozen=True)
class ExtraPath:
    """One folder from the yaml: which section it came from, its kind, path and priority."""

    section: str
    kind: str
    path: Path
    is_default: bool


def parse_extra_paths(config: Any, yaml_dir: Path | str, source: str = DEFAULT_FILENAME) -> list[ExtraPath]:
    """The folders a parsed yaml document declares, in file order. Raises StorageError for a
    document that is not a mapping of sections, or a value that is neither text nor a list."""
    if config is None:
        return []
    if not isinstance(config, dict):
        raise StorageError("invalid_extra_model_paths", f"{source}: expected sections (a mapping) at the top",
                           f"found {type(config).__name__}", {"path": source})
    yaml_dir = os.path.abspath(yaml_dir)
    found: list[ExtraPath] = []
    for section, entries in config.items():
        if entries is None:
            continue
        if not isinstance(entries, dict):
            raise StorageError("invalid_extra_model_paths",
                               f"{source}: section {section!r} must map folder kinds to paths",
                               f"found {type(entries).__name__}", {"path": source, "section": section})
        entries = dict(entries)
        base_path = entries.pop("base_path", None)
        if base_path is not None:
            base_path = os.path.expandvars(os.path.expanduser(str(base_path)))
            if not os.path.isabs(base_path):
                base_path = os.path.join(yaml_dir, base_path)
        is_default = bool(entries.pop("is_default", False))
        for kind, value in entries.items():
            for line in _lines(value, source, section, kind):
                if base_path is not None:
                    full = os.path.join(base_path, line)
                elif os.path.isabs(os.path.expanduser(line)):
                    full = os.path.expanduser(line)
                else:
                    full = os.path.join(yaml_dir, line)
                found.append(ExtraPath(str(section), canonical_kind(str(kind)),
                                       Path(os.path.normpath(full)), is_default))
    return found


def _lines(value: Any, source: str, section: Any, kind: Any) -> list[str]:
    if isinstance(value, str):
        items = value.split("\n")
    elif isinstance(value, list) and all(isinstance(v, str) for v in value):
        items = value
    else:
        raise StorageError("invalid_extra_model_paths",
                           f"{source}: {section}.{kind} must be a path, several paths one per line, or a list",
                           f"found {type(value).__name__}", {"path": source, "section": section, "kind": kind})
    return [item.strip() for item in items if item.strip()]


def read_extra_paths(yaml_path: Path | str) -> list[ExtraPath]:
    """Parse one yaml file. Raises StorageError (with the path) when it is unreadable or invalid."""
    yaml_path = Path(yaml_path)
    try:
        text = yaml_path.read_text(encoding="utf-8")
        config = yaml.safe_load(text)
    except OSError as exc:
        raise StorageError("invalid_extra_model_paths", f"cannot read {yaml_path}", str(exc),
                           {"path": str(yaml_path)}) from exc
    except yaml.YAMLError as exc:
        raise StorageError("invalid_extra_model_paths", f"{yaml_path} is not valid YAML", str(exc),
                           {"path": str(yaml_path)}) from exc
    return parse_extra_paths(config, yaml_path.parent, str(yaml_path))


def apply_extra_paths(folders: Folders, yaml_path: Path | str) -> list[ExtraPath]:
    """Add every folder of ``yaml_path`` to ``folders`` and return them (for the start-up log)."""
    entries = read_extra_paths(yaml_path)
    for entry in entries:
        folders.add_path(entry.kind, entry.path, is_default=entry.is_default)
    return entries
