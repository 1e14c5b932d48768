"""Workflow cases for `bench/fidelity.py`, one module per model family.

A family module defines `FAMILY = Family(name, models, cases)`:
- `models`: the random-weight files its cases need (`ModelFile(folder, name, write)`); `bench/fidelity.py`
  writes each once into the shared models folder (`<models-dir>/<folder>/<name>`, atomically), so file
  names must be unique across families and must change when the writer changes;
- `cases()`: a list of `Case(name, prompt, inputs, note)`. `prompt` is an API-format prompt whose
  SaveImage nodes are compared image by image; `inputs` are files (name -> bytes) placed in both
  servers' `input/` folder; `note` says where Plexus deliberately differs from ComfyUI (the case is then
  reported, not counted against the agreement bar).

To add a family: write `bench/fidelity_cases/<family>.py` and append its module name to `FAMILY_MODULES`.
`graph.py` has a small prompt builder and the shared input images.
"""
from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

FAMILY_MODULES: tuple[str, ...] = (
    "sd15",
    "sd21",
    "controlnet",
    "sdxl",
    "flux",
    "controlnet_sdxl",
    "controlnet_flux",
    "redux_flux",
)


@dataclass(frozen=True)
class ModelFile:
    folder: str                              # checkpoints | loras | embeddings | vae | ...
    name: str                                # unique across families; change it when `write` changes
    write: Callable[[Path], None]            # writes the file at the given (temporary) path


@dataclass(frozen=True)
class Case:
    name: str                                # "<family>/<group>/<detail>"
    prompt: dict[str, Any]
    inputs: dict[str, bytes] = field(default_factory=dict)
    note: str = ""                           # a deliberate difference from ComfyUI, with the reason


@dataclass(frozen=True)
class Family:
    name: str
    models: tuple[ModelFile, ...]
    cases: Callable[[], list[Case]]


def families() -> dict[str, Family]:
    """Every registered family, by name (importing its module)."""
    found = {}
    for module_name in FAMILY_MODULES:
        family = importlib.import_module(f"{__name__}.{module_name}").FAMILY
        found[family.name] = family
    return found
