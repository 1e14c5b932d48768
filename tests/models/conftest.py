"""Tiny random-weight checkpoints in the real LDM layout, written once per session by models.testing."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from models.testing import CheckpointSpec, tiny_unet_config, tiny_vae_config, write_random_checkpoint

MANIFESTS = Path(__file__).resolve().parent.parent / "data" / "manifests"


def manifest_shapes(name: str) -> dict[str, tuple[int, ...]]:
    tensors = json.loads((MANIFESTS / f"{name}.json").read_text())["tensors"]
    return {k: tuple(v[0]) for k, v in tensors.items()}


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory):
    """tiny_checkpoint(family, suffix=".safetensors", **spec_fields) -> Path, cached per argument set."""
    root = tmp_path_factory.mktemp("tiny_ckpt")
    made: dict[tuple, Path] = {}

    def make(family: str = "sd1", suffix: str = ".safetensors", in_channels: int = 4, **fields) -> Path:
        key = (family, suffix, in_channels, tuple(sorted((k, str(v)) for k, v in fields.items())))
        if key not in made:
            spec = CheckpointSpec(family, tiny_unet_config(family, in_channels), tiny_vae_config(), **fields)
            made[key] = write_random_checkpoint(root / f"ckpt{len(made)}{suffix}", spec)
        return made[key]
    return make


@pytest.fixture(autouse=True)
def _deterministic():
    torch.manual_seed(0)
