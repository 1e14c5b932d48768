"""bench/fidelity_cases/flux.py's prompts (the ones compared with ComfyUI at full width) are valid and run
through the real Engine on tiny FLUX-layout files saved under the same names, each saving one image."""
from __future__ import annotations

import importlib
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from model_management import MemorySettings
from models.testing import (
    flux_vae_config,
    tiny_flux_config,
    tiny_sd3_spec,
    write_random_flux,
    write_random_text_encoder,
    write_random_vae,
)
from nodes import services
from tests.nodes.engine_harness import Harness

BENCH = Path(__file__).resolve().parents[2] / "bench"


def flux_cases():
    sys.path.insert(0, str(BENCH))
    try:
        return importlib.import_module("fidelity_cases.flux")
    finally:
        sys.path.remove(str(BENCH))


@pytest.fixture(scope="module")
def harness(tmp_path_factory):
    from safetensors.torch import save_file
    module = flux_cases()
    h = Harness(tmp_path_factory.mktemp("base"))
    h.services = services.NodeServices(h.folders, settings=MemorySettings(force_fp32=True))
    folder = lambda name: h.folders.paths(name)[0]          # noqa: E731
    for name in ("diffusion_models", "text_encoders", "vae", "loras"):
        folder(name).mkdir(parents=True, exist_ok=True)
    write_random_flux(folder("diffusion_models") / module.DEV, tiny_flux_config(), dtype=torch.bfloat16)
    write_random_flux(folder("diffusion_models") / module.SCHNELL, tiny_flux_config(guidance=False), scaled_fp8=True)
    write_random_flux(folder("diffusion_models") / module.FILL, tiny_flux_config(in_channels=384))
    write_random_flux(folder("diffusion_models") / module.DEPTH, tiny_flux_config(in_channels=128))
    texts = tiny_sd3_spec(text=("clip_l", "t5xxl")).text_configs
    write_random_text_encoder(folder("text_encoders") / module.T5, "t5xxl", texts["t5xxl"], torch.float8_e4m3fn)
    write_random_text_encoder(folder("text_encoders") / module.CLIP_L, "clip_l", texts["clip_l"], torch.float16)
    write_random_vae(folder("vae") / module.VAE, flux_vae_config())
    g = torch.Generator().manual_seed(0)
    save_file({"lora_unet_double_blocks_0_img_attn_qkv.lora_down.weight": torch.randn(4, 64, generator=g),
               "lora_unet_double_blocks_0_img_attn_qkv.lora_up.weight": torch.randn(192, 4, generator=g)},
              str(folder("loras") / module.LORA))
    h.folders.input.mkdir(parents=True, exist_ok=True)
    for case in module.cases():
        for name, data in case.inputs.items():
            (h.folders.input / name).write_bytes(data)
    services.install(h.services)
    yield h
    services.install(None)
    h.close()


@pytest.mark.parametrize("index", range(15))
def test_flux_fidelity_case_runs(harness, index):
    cases = flux_cases().cases()
    assert len(cases) == 15
    case = cases[index]
    classes = {n["class_type"] for n in case.prompt.values()}
    assert {"UNETLoader", "DualCLIPLoader", "SaveImage"} <= classes
    result = harness.run(case.prompt)
    assert result.status == "success", (case.name, result.error.get("exception_message"))
    save = next(k for k, n in case.prompt.items() if n["class_type"] == "SaveImage")
    item = result.outputs[save]["images"][0]
    image = np.asarray(Image.open(harness.folders.output / item["subfolder"] / item["filename"]))
    assert image.shape == (64, 64, 3) and image.std() > 0
