from __future__ import annotations

import pytest

from tests.diffusion.helpers import write_tiny


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory):
    """A tiny random SD1.5 checkpoint in the real key layout."""
    return write_tiny(tmp_path_factory.mktemp("faces-ckpt") / "tiny.safetensors")
