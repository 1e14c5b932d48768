"""bench/fidelity_cases/controlnet_flux.py's prompts (compared with ComfyUI at full width) are valid and run through
the real Engine on tiny FLUX-layout files saved under the same names, each saving one image that the ControlNet
changes."""
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
    tiny_flux_controlnet_config,
    tiny_sd3_spec,
    write_random_flux,
    write_random_flux_controlnet,
    write_random_text_encoder,
    write_random_vae,
)
from nodes import services
from tests.nodes.engine_harness import Harness

BENCH = Path(__file__).resolve().parents[2] / "bench"


def cases_module():
    sys.path.insert(0, str(BENCH))
    try:
        return importlib.import_module("fidelity_cases.controlnet_flux")
    finally:
        sys.path.remove(str(BENCH))


@pytest.fixture(scope="module")
def harness(tmp_path_factory):
    module = cases_module()
    h = Harness(tmp_path_factory.mktemp("base"))
    h.services = services.NodeServices(h.folders, settings=MemorySettings(force_fp32=True))
    folder = lambda name: h.folders.paths(name)[0]          # noqa: E731
    for name in ("diffusion_models", "text_encoders", "vae", "controlnet"):
        folder(name).mkdir(parents=True, exist_ok=True)
    write_random_flux(folder("diffusion_models") / module.base.DEV, tiny_flux_config(), dtype=torch.bfloat16)
    texts = tiny_sd3_spec(text=("clip_l", "t5xxl")).text_configs
    write_random_text_encoder(folder("text_encoders") / module.base.T5, "t5xxl", texts["t5xxl"], torch.float8_e4m3fn)
    write_random_text_encoder(folder("text_encoders") / module.base.CLIP_L, "clip_l", texts["clip_l"], torch.float16)
    write_random_vae(folder("vae") / module.base.VAE, flux_vae_config())
    for name, layout, extra in ((module.INSTANTX, "diffusers", {}), (module.UNION, "diffusers", {"union_modes": 10}),
                                (module.INPAINT, "diffusers", {"hint_channels": 17}),
                                (module.XLABS, "xlabs", {"single": 0})):
        write_random_flux_controlnet(folder("controlnet") / name, tiny_flux_controlnet_config(layout=layout, **extra),
                                     layout=layout, dtype=torch.bfloat16, seed=1)
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


@pytest.mark.parametrize("index", range(5))
def test_controlnet_flux_fidelity_case_runs_and_is_controlled(harness, index):
    module = cases_module()
    cases = module.cases()
    assert len(cases) == 5
    case = cases[index]
    assert {"UNETLoader", "ControlNetLoader", "SaveImage"} <= {n["class_type"] for n in case.prompt.values()}
    image = saved_image(harness, case.prompt)
    assert image.shape == (64, 64, 3) and image.std() > 0
    plain = {k: n for k, n in case.prompt.items()}
    plain = {k: ({**n, "inputs": {**n["inputs"], "strength": 0.0}} if "strength" in n["inputs"] else n)
             for k, n in plain.items()}
    assert np.abs(saved_image(harness, plain) - image).max() > 0          # the ControlNet changes the image
