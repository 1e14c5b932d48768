"""bench/fidelity_cases/redux_flux.py's prompts (compared with ComfyUI at full size) are valid and run through the
real Engine on tiny files saved under the same names (a tiny SigLIP tower and Redux MLP at the tiny FLUX's
context width), each saving one image that the Redux tokens change."""
from __future__ import annotations

import importlib
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from model_management import MemorySettings
from models.style_model import StyleModelConfig
from models.testing import (flux_vae_config, tiny_flux_config, tiny_sd3_spec, write_random_flux,
                            write_random_text_encoder, write_random_vae)
from models.testing_vision import tiny_clip_vision_config, write_random_clip_vision, write_random_style_model
from nodes import services
from tests.nodes.engine_harness import Harness

BENCH = Path(__file__).resolve().parents[2] / "bench"


def cases_module():
    sys.path.insert(0, str(BENCH))
    try:
        return importlib.import_module("fidelity_cases.redux_flux")
    finally:
        sys.path.remove(str(BENCH))


@pytest.fixture(scope="module")
def harness(tmp_path_factory):
    module = cases_module()
    h = Harness(tmp_path_factory.mktemp("base"))
    h.services = services.NodeServices(h.folders, settings=MemorySettings(force_fp32=True))
    folder = lambda name: h.folders.paths(name)[0]          # noqa: E731
    for name in ("diffusion_models", "text_encoders", "vae", "clip_vision", "style_models"):
        folder(name).mkdir(parents=True, exist_ok=True)
    write_random_flux(folder("diffusion_models") / module.base.DEV, tiny_flux_config(), dtype=torch.bfloat16)
    texts = tiny_sd3_spec(text=("clip_l", "t5xxl")).text_configs
    write_random_text_encoder(folder("text_encoders") / module.base.T5, "t5xxl", texts["t5xxl"], torch.float8_e4m3fn)
    write_random_text_encoder(folder("text_encoders") / module.base.CLIP_L, "clip_l", texts["clip_l"], torch.float16)
    write_random_vae(folder("vae") / module.base.VAE, flux_vae_config())
    write_random_clip_vision(folder("clip_vision") / module.SIGLIP, tiny_clip_vision_config(is_siglip=True), seed=4)
    write_random_style_model(folder("style_models") / module.REDUX, StyleModelConfig("redux", 128, 64), seed=1)
    h.folders.input.mkdir(parents=True, exist_ok=True)
    for case in module.cases():
        for name, data in case.inputs.items():
            (h.folders.input / name).write_bytes(data)
    services.install(h.services)
    yield h
    services.install(None)
    h.close()


def saved_image(harness, prompt) -> np.ndarray:
    result = harness.run(prompt)
    assert result.status == "success", result.error.get("exception_message")
    save = next(k for k, n in prompt.items() if n["class_type"] == "SaveImage")
    item = result.outputs[save]["images"][0]
    return np.asarray(Image.open(harness.folders.output / item["subfolder"] / item["filename"])).astype(np.int16)


@pytest.mark.parametrize("index", range(2))
def test_redux_flux_fidelity_case_runs_and_is_styled(harness, index):
    cases = cases_module().cases()
    assert len(cases) == 2
    prompt = cases[index].prompt
    assert {"CLIPVisionLoader", "StyleModelApply", "SaveImage"} <= {n["class_type"] for n in prompt.values()}
    image = saved_image(harness, prompt)
    assert image.shape == (64, 64, 3) and image.std() > 0
    apply = next(k for k, n in prompt.items() if n["class_type"] == "StyleModelApply")
    sampler = next(n for n in prompt.values() if n["class_type"] == "KSampler")
    plain = {k: ({**n, "inputs": {**n["inputs"], "positive": prompt[apply]["inputs"]["conditioning"]}}
                 if n is sampler else n) for k, n in prompt.items()}
    assert np.abs(saved_image(harness, plain) - image).max() > 0
