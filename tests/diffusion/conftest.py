from __future__ import annotations

import pytest
import torch

from tests.diffusion.helpers import write_tiny


@pytest.fixture(scope="session")
def tiny_sd15(tmp_path_factory):
    return write_tiny(tmp_path_factory.mktemp("ckpt") / "tiny.safetensors")


@pytest.fixture(scope="session")
def tiny_sd15_inpaint(tmp_path_factory):
    return write_tiny(tmp_path_factory.mktemp("ckpt") / "tiny-inpaint.safetensors", in_channels=9)


@pytest.fixture(autouse=True)
def _deterministic():
    torch.manual_seed(0)
