"""bench/fidelity_cases/sdxl.py's prompts (the ones compared with ComfyUI at full size) are valid and run through
the real Engine on a tiny SDXL-layout checkpoint, each saving one image of the size its latent asks for."""
from __future__ import annotations

import importlib
import sys
from pathlib import Path

import pytest

from model_management import MemorySettings
from models.testing import tiny_sdxl_text_configs, tiny_sdxl_unet_config, tiny_vae_config, write_sdxl_checkpoint
from nodes import services
from tests.diffusion.helpers import install_checkpoint
from tests.nodes.engine_harness import Harness

BENCH = Path(__file__).resolve().parents[2] / "bench"


def sdxl_cases():
    sys.path.insert(0, str(BENCH))
    try:
        return importlib.import_module("fidelity_cases.sdxl")
    finally:
        sys.path.remove(str(BENCH))


@pytest.fixture(scope="module")
def harness(tmp_path_factory):
    module = sdxl_cases()
    root = tmp_path_factory.mktemp("xl-cases")
    path = write_sdxl_checkpoint(root / "tiny.safetensors", tiny_sdxl_unet_config(), text=tiny_sdxl_text_configs(),
                                 vae=tiny_vae_config())
    h = Harness(tmp_path_factory.mktemp("base"))
    h.services = services.NodeServices(h.folders, settings=MemorySettings(force_fp32=True))
    install_checkpoint(path, h.folders.paths("checkpoints")[0], module.CHECKPOINT)
    services.install(h.services)
    yield h
    services.install(None)
    h.close()


@pytest.mark.parametrize("index", range(6))
def test_sdxl_fidelity_case_runs(harness, index):
    module = sdxl_cases()
    cases = module.cases()
    assert len(cases) == 6
    case = cases[index]
    classes = {n["class_type"] for n in case.prompt.values()}
    assert "CheckpointLoaderSimple" in classes and "SaveImage" in classes
    checked = harness.engine.validate(case.prompt)
    assert checked.ok, (checked.error, checked.node_errors)
    result = harness.run(case.prompt)
    assert result.status == "success", result.error
