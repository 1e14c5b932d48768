"""A tiny SD1 / SD2 checkpoint written in the real LDM layout and loaded through the real loader, once."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from models.checkpoint import load_checkpoint
from models.testing import CheckpointSpec, tiny_unet_config, tiny_vae_config, write_random_checkpoint

MANIFESTS = Path(__file__).resolve().parent.parent / "data" / "manifests"


def manifest_shapes(name: str) -> dict[str, tuple[int, ...]]:
    tensors = json.loads((MANIFESTS / f"{name}.json").read_text())["tensors"]
    return {k: tuple(v[0]) for k, v in tensors.items()}


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory):
    """tiny_models(family) -> LoadedCheckpoint (unet, text_encoders, ...), cached per family."""
    root = tmp_path_factory.mktemp("lora_ckpt")
    made = {}

    def make(family: str = "sd1"):
        if family not in made:
            spec = CheckpointSpec(family, tiny_unet_config(family), tiny_vae_config())
            path = write_random_checkpoint(root / f"{family}.safetensors", spec)
            made[family] = load_checkpoint(path)
        return made[family]
    return make


@pytest.fixture(autouse=True)
def _deterministic():
    torch.manual_seed(0)
