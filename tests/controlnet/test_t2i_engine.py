"""T2I-Adapters through the real Engine beyond the SD1 full adapter of test_controlnet_engine: the SDXL full
adapter (16 x 16 unshuffle, TencentARC and diffusers layouts) on a tiny SDXL checkpoint with SDXL's two res
blocks per level, and the light adapter on SD1. Strength 0 is exactly the plain image, strength 1 changes it,
both file layouts give the same latent, a start/end window changes the image but less than the whole schedule."""
from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch
from PIL import Image

from model_management import MemorySettings
from models.t2i_adapter import T2IAdapterConfig
from models.testing import (
    tiny_sdxl_text_configs,
    tiny_sdxl_unet_config,
    tiny_t2i_config,
    tiny_vae_config,
    write_random_t2i_adapter,
    write_sdxl_checkpoint,
)
from nodes import services
from tests.controlnet.test_controlnet_engine import harness, harness_module  # noqa: F401  (SD1 fixtures)
from tests.controlnet.test_controlnet_engine import prompt as sd1_prompt
from tests.controlnet.test_controlnet_engine import sampled as sd1_sampled
from tests.nodes.engine_harness import Capture, Harness
from tests.nodes.test_sdxl_engine import sampled, txt2img

XL_UNET = replace(tiny_sdxl_unet_config(), num_res_blocks=(2, 2, 2), transformer_depth=(0, 0, 1, 1, 2, 2),
                  transformer_depth_output=(2, 2, 2, 1, 1, 1, 0, 0, 0))
XL_T2I = T2IAdapterConfig(kind="full", in_channels=3 * 256, channels=(32, 64, 64, 64), is_xl=True)


@pytest.fixture(scope="module")
def xl_module(tmp_path_factory):
    h = Harness(tmp_path_factory.mktemp("xl-t2i"))
    h.services = services.NodeServices(h.folders, settings=MemorySettings(force_fp32=True))
    write_sdxl_checkpoint(h.folders.paths("checkpoints")[0] / "xl.safetensors", XL_UNET,
                          text=tiny_sdxl_text_configs(), vae=tiny_vae_config())
    cn_dir = h.folders.paths("controlnet")[0]
    cn_dir.mkdir(parents=True, exist_ok=True)
    for layout in ("original", "diffusers"):
        write_random_t2i_adapter(cn_dir / f"t2i_xl_{layout}.safetensors", XL_T2I, layout=layout, seed=6)
    h.folders.input.mkdir(parents=True, exist_ok=True)
    rgb = np.random.default_rng(2).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(h.folders.input / "h.png")
    h.registry.register("TestCapture", Capture)
    yield h
    h.close()


@pytest.fixture
def xl(xl_module):
    services.install(xl_module.services)
    yield xl_module
    services.install(None)


def _xl_control(name: str, strength: float, start: float = 0.0, end: float = 1.0) -> dict:
    p = txt2img(ckpt="xl.safetensors")
    p["10"] = {"class_type": "LoadImage", "inputs": {"image": "h.png"}}
    p["11"] = {"class_type": "ControlNetLoader", "inputs": {"control_net_name": name}}
    p["12"] = {"class_type": "ControlNetApplyAdvanced", "inputs": {
        "positive": ["6", 0], "negative": ["7", 0], "control_net": ["11", 0], "image": ["10", 0],
        "strength": strength, "start_percent": start, "end_percent": end}}
    p["3"]["inputs"].update(positive=["12", 0], negative=["12", 1])
    return p


def test_sdxl_t2i_adapter_through_the_engine(xl):
    plain = sampled(xl, txt2img(ckpt="xl.safetensors"))["samples"]
    assert torch.equal(sampled(xl, _xl_control("t2i_xl_original.safetensors", 0.0))["samples"], plain)
    full = sampled(xl, _xl_control("t2i_xl_original.safetensors", 1.0))["samples"]
    assert (full - plain).abs().max() > 1e-3
    diffusers = sampled(xl, _xl_control("t2i_xl_diffusers.safetensors", 1.0))["samples"]
    torch.testing.assert_close(diffusers, full, atol=1e-5, rtol=0)
    window = sampled(xl, _xl_control("t2i_xl_original.safetensors", 1.0, 0.5, 1.0))["samples"]
    assert 1e-4 < (window - plain).abs().max() and (window - full).abs().max() > 1e-4


@pytest.fixture
def sd1_light(harness):  # noqa: F811
    path = harness.folders.paths("controlnet")[0] / "t2i_light.safetensors"
    if not path.exists():
        write_random_t2i_adapter(path, tiny_t2i_config("light"), seed=8)
    return harness


def test_light_t2i_adapter_through_the_engine(sd1_light):
    plain = sd1_sampled(sd1_light, sd1_prompt())
    assert torch.equal(sd1_sampled(sd1_light, sd1_prompt(controls=[("t2i_light.safetensors", 0.0, 0.0, 1.0)])),
                       plain)
    light = sd1_sampled(sd1_light, sd1_prompt(controls=[("t2i_light.safetensors", 1.0, 0.0, 1.0)]))
    assert (light - plain).abs().max() > 1e-3
