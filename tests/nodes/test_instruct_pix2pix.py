"""InstructPixToPixConditioning and 8-channel InstructPix2Pix UNets: the source image's latent reaches the
UNet as its extra input channels (unscaled, resized and batched as ComfyUI's SD1.5 IP2P does), through the
Engine on a tiny SD1-layout checkpoint with in_channels 8."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from diffusion.ksampler import _ip2p_concat
from imaging.resize import upscale
from model_management import MemorySettings
from nodes import services
from tests.diffusion.helpers import install_checkpoint, write_tiny
from tests.nodes.engine_harness import Capture, Harness

IP2P = "tiny-ip2p.safetensors"


def test_the_concat_is_the_latent_resized_and_batched() -> None:
    x = torch.randn(3, 4, 8, 8)
    assert torch.equal(_ip2p_concat(x, {}), torch.zeros_like(x))
    latent = torch.randn(1, 4, 8, 8)
    assert torch.equal(_ip2p_concat(x, {"concat_latent_image": latent}), latent.repeat(3, 1, 1, 1))
    small = torch.randn(1, 4, 4, 6)
    expected = upscale(small, 8, 8, "bilinear", "center").repeat(3, 1, 1, 1)
    torch.testing.assert_close(_ip2p_concat(x, {"concat_latent_image": small}), expected)


@pytest.fixture(scope="module")
def harness(tmp_path_factory):
    h = Harness(tmp_path_factory.mktemp("ip2p"))
    h.services = services.NodeServices(h.folders, settings=MemorySettings(force_fp32=True))
    services.install(h.services)
    install_checkpoint(write_tiny(tmp_path_factory.mktemp("c") / IP2P, in_channels=8),
                       h.folders.paths("checkpoints")[0], IP2P)
    h.registry.register("TestCapture", Capture)
    yield h
    h.close()


def _prompt(color: int, width: int = 68) -> dict:
    return {
        "4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": IP2P}},
        "1": {"class_type": "EmptyImage", "inputs": {"width": width, "height": 64, "batch_size": 1, "color": color}},
        "6": {"class_type": "CLIPTextEncode", "inputs": {"text": "make it red", "clip": ["4", 1]}},
        "7": {"class_type": "CLIPTextEncode", "inputs": {"text": "", "clip": ["4", 1]}},
        "10": {"class_type": "InstructPixToPixConditioning", "inputs": {
            "positive": ["6", 0], "negative": ["7", 0], "vae": ["4", 2], "pixels": ["1", 0]}},
        "3": {"class_type": "KSampler", "inputs": {"seed": 3, "steps": 2, "cfg": 4.0, "sampler_name": "euler",
                                                   "scheduler": "normal", "denoise": 1.0, "model": ["4", 0],
                                                   "positive": ["10", 0], "negative": ["10", 1],
                                                   "latent_image": ["10", 2]}},
        "99": {"class_type": "TestCapture", "inputs": {"value": ["3", 0]}},
        "98": {"class_type": "TestCapture", "inputs": {"value": ["10", 0]}},
    }


def _run(h: Harness, prompt: dict):
    Capture.seen = []
    h.engine.clear_cache()
    result = h.run(prompt)
    assert result.status == "success", result.error
    return Capture.seen


def test_ip2p_samples_from_the_source_image(harness) -> None:
    seen = _run(harness, _prompt(0x2040A0))
    samples = next(v["samples"] for v in seen if isinstance(v, dict))
    conditioning = next(v for v in seen if isinstance(v, list))
    # 68 px wide: cropped to 64 (2 columns off each side), so an 8 x 8 latent; the LATENT output is zeros
    concat = conditioning[0][1]["concat_latent_image"]
    assert concat.shape == (1, 4, 8, 8) and samples.shape == (1, 4, 8, 8)
    other = next(v["samples"] for v in _run(harness, _prompt(0xF0E020)) if isinstance(v, dict))
    assert torch.isfinite(samples).all() and not torch.allclose(samples, other)   # the source image matters
