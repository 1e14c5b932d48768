"""Input files a prompt names (``LoadImage``'s ``image``, ``"name [output]"`` annotations ...), shipped
to the worker as bytes with the prompt record (through Ray's object store), so a worker on another
machine needs no shared disk. The worker writes them into its own scratch folders before it runs."""
from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

INPUTS_KEY = "plexus_input_files"
ANNOTATION = re.compile(r"(.*?) ?\[(input|output|temp)\]")
MAX_NAME_CHARS = 1024


def input_files(prompt: Mapping[str, Any], folders: Any) -> list[list[Any]]:
    """``[[type, relative path, bytes], ...]`` for every string input of ``prompt`` that names an
    existing file of the front end's input folder (or an annotated output/temp file)."""
    found: dict[tuple[str, str], bytes] = {}
    for node in prompt.values() if isinstance(prompt, Mapping) else ():
        inputs = node.get("inputs") if isinstance(node, Mapping) else None
        for value in (inputs or {}).values():
            if not isinstance(value, str) or not value or len(value) > MAX_NAME_CHARS or "\n" in value:
                continue
            match = ANNOTATION.fullmatch(value)
            kind = match.group(2) if match else "input"
            try:
                path = folders.annotated_path(value)
                root = Path(os.path.realpath(folders.directory(kind)))
            except Exception:   # not a file name (a prompt text, a path leaving the folder)
                continue
            if not path.is_file() or root not in path.parents:
                continue
            relative = str(path.relative_to(root)).replace(os.sep, "/")
            if (kind, relative) not in found:
                found[(kind, relative)] = path.read_bytes()
    return [[kind, relative, data] for (kind, relative), data in found.items()]


def write_input_files(files: list[list[Any]], directory: Any) -> list[Path]:
    """On the worker: each shipped file under its folder type, never outside it; returns the paths
    (removed again once the prompt has run)."""
    written: list[Path] = []
    for kind, relative, data in files or ():
        root = directory(kind)
        if root is None:
            continue
        root_real = Path(os.path.realpath(root))
        target = Path(os.path.realpath(root_real / relative))
        if root_real not in target.parents:
            raise ValueError(f"input file {relative!r} leaves the {kind} folder")
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_name(f".{target.name}.{os.getpid()}.partial")
        partial.write_bytes(data)
        os.replace(partial, target)
        written.append(target)
    return written
