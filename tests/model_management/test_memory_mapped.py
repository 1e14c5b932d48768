"""Weights memory-mapped from .safetensors stay mapped through load, partial load and unload."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from model_management import MemorySettings, ModelHandle, ModelManager, VramMode
from tests.model_management.toys import ToyUNet, make

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/maps")


def mapped_from(tensor: torch.Tensor, path: Path) -> bool:
    """Whether `tensor`'s memory lies in a mapping of the file at `path` (so it is not a private copy)."""
    ptr = tensor.data_ptr()
    for line in Path("/proc/self/maps").read_text().splitlines():
        parts = line.split()
        low, high = (int(x, 16) for x in parts[0].split("-"))
        if low <= ptr < high:
            return len(parts) >= 6 and parts[5] == str(path)
    return False


def load_mapped(path: Path) -> ToyUNet:
    with torch.device("meta"):
        unet = ToyUNet()
    with safe_open(str(path), framework="pt") as f:
        unet.load_state_dict({k: f.get_tensor(k) for k in f.keys()}, assign=True)
    return unet.eval()


@pytest.mark.parametrize("settings", [
    MemorySettings(device="cpu"),
    MemorySettings(device="cpu", vram_budget_bytes=200_000),
    MemorySettings(device="cpu", vram_mode=VramMode.NO, vram_budget_bytes=10**6),
])
def test_weights_stay_in_the_file_mapping(tmp_path: Path, settings: MemorySettings) -> None:
    path = (tmp_path / "toy.safetensors").resolve()
    save_file({k: v.contiguous() for k, v in make(ToyUNet, 0).state_dict().items()}, str(path))
    unet = load_mapped(path)
    assert all(mapped_from(t, path) for t in unet.state_dict().values())
    manager = ModelManager(settings)
    x, sigma, context = torch.randn(1, 4, 8, 8), torch.full((1,), 2.0), torch.randn(1, 4, 16)
    with torch.no_grad():
        manager.load_models_for([ModelHandle(unet)])
        unet(x, sigma, context)
        resident_keys = manager.record_of(ModelHandle(unet)).resident_keys
        resident = [t for k, t in unet.state_dict().items() if k in resident_keys]
        assert all(mapped_from(t, path) for t in resident)      # the CPU "device" uses the mapping itself
    manager.free()
    assert all(mapped_from(t, path) for t in unet.state_dict().values())
