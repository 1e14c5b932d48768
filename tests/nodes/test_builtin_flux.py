"""FLUX.1 through the real Engine with tiny random-weight files in the real layouts: the transformer
alone (UNETLoader, BFL keys; [dev] and [schnell]), CLIP-L + T5 files (DualCLIPLoader type flux), the
16-channel VAE (VAELoader), CLIPTextEncodeFlux, FluxGuidance, ModelSamplingFlux, EmptySD3LatentImage."""
from __future__ import annotations

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
from tests.nodes.engine_harness import Capture, Harness


@pytest.fixture(scope="module")
def harness_flux(tmp_path_factory):
    h = Harness(tmp_path_factory.mktemp("base"))
    h.services = services.NodeServices(h.folders, settings=MemorySettings(force_fp32=True))
    unets = h.folders.paths("diffusion_models")[0]
    unets.mkdir(parents=True, exist_ok=True)
    write_random_flux(unets / "flux-dev.safetensors", tiny_flux_config(), dtype=torch.bfloat16)
    write_random_flux(unets / "flux-schnell-fp8.safetensors", tiny_flux_config(guidance=False), scaled_fp8=True, seed=1)
    encoders = h.folders.paths("text_encoders")[0]
    encoders.mkdir(parents=True, exist_ok=True)
    for kind, config in tiny_sd3_spec(text=("clip_l", "t5xxl")).text_configs.items():
        write_random_text_encoder(encoders / f"{kind}.safetensors", kind, config,
                                  torch.float8_e4m3fn if kind == "t5xxl" else torch.float16)
    vaes = h.folders.paths("vae")[0]
    vaes.mkdir(parents=True, exist_ok=True)
    write_random_vae(vaes / "ae.safetensors", flux_vae_config())
    h.registry.register("TestCapture", Capture)
    yield h
    h.close()


@pytest.fixture
def harness(harness_flux):
    h = harness_flux
    services.install(h.services)
    h.engine.clear_cache()
    Capture.seen = []
    yield h
    services.install(None)


def txt2img(unet="flux-dev.safetensors", seed=7, steps=3, guidance=3.5, scheduler="simple"):
    return {
        "1": {"class_type": "UNETLoader", "inputs": {"unet_name": unet, "weight_dtype": "default"}},
        "2": {"class_type": "DualCLIPLoader", "inputs": {"clip_name1": "t5xxl.safetensors",
                                                         "clip_name2": "clip_l.safetensors", "type": "flux"}},
        "3": {"class_type": "VAELoader", "inputs": {"vae_name": "ae.safetensors"}},
        "4": {"class_type": "CLIPTextEncode", "inputs": {"text": "a red cat", "clip": ["2", 0]}},
        "5": {"class_type": "FluxGuidance", "inputs": {"conditioning": ["4", 0], "guidance": guidance}},
        "6": {"class_type": "EmptySD3LatentImage", "inputs": {"width": 64, "height": 48, "batch_size": 1}},
        "7": {"class_type": "ModelSamplingFlux", "inputs": {"model": ["1", 0], "max_shift": 1.15, "base_shift": 0.5,
                                                            "width": 64, "height": 48}},
        "8": {"class_type": "KSampler", "inputs": {"seed": seed, "steps": steps, "cfg": 1.0, "sampler_name": "euler",
                                                   "scheduler": scheduler, "denoise": 1.0, "model": ["7", 0],
                                                   "positive": ["5", 0], "negative": ["4", 0],
                                                   "latent_image": ["6", 0]}},
        "9": {"class_type": "VAEDecode", "inputs": {"samples": ["8", 0], "vae": ["3", 0]}},
        "10": {"class_type": "SaveImage", "inputs": {"filename_prefix": "flux", "images": ["9", 0]}},
    }


def pixels(h: Harness, prompt: dict) -> np.ndarray:
    result = h.run(prompt)
    assert result.status == "success", (result.error.get("exception_message"), result.error.get("traceback"))
    item = result.outputs["10"]["images"][0]
    return np.asarray(Image.open(h.folders.output / item["subfolder"] / item["filename"])).astype(np.int16)


def test_dev_txt2img_same_seed_same_pixels_and_guidance_matters(harness):
    a = pixels(harness, txt2img())
    harness.engine.clear_cache()
    b = pixels(harness, txt2img())
    assert a.shape == (48, 64, 3) and np.array_equal(a, b) and a.std() > 0
    assert not np.array_equal(a, pixels(harness, txt2img(seed=8)))
    assert not np.array_equal(a, pixels(harness, txt2img(guidance=1.0)))


def test_schnell_scaled_fp8_txt2img(harness):
    prompt = txt2img("flux-schnell-fp8.safetensors", steps=2, scheduler="beta")
    prompt["8"]["inputs"]["model"] = ["1", 0]                   # schnell: its own shift 1.0
    a = pixels(harness, prompt)
    assert a.shape == (48, 64, 3) and a.std() > 0


def test_conditioning_is_flux_shaped(harness):
    prompt = txt2img()
    prompt["11"] = {"class_type": "CLIPTextEncodeFlux", "inputs": {"clip": ["2", 0], "clip_l": "a cat",
                                                                   "t5xxl": "a red cat", "guidance": 2.5}}
    prompt["99"] = {"class_type": "TestCapture", "inputs": {"value": ["11", 0]}}
    result = harness.run(prompt)
    assert result.status == "success", result.error
    tensor, options = Capture.seen[-1][0]
    assert tensor.shape == (1, 256, 64) and options["pooled_output"].shape == (1, 32)
    assert options["guidance"] == 2.5


def test_disable_guidance_changes_dev_output(harness):
    base = pixels(harness, txt2img())
    prompt = txt2img()
    prompt["12"] = {"class_type": "FluxDisableGuidance", "inputs": {"conditioning": ["4", 0]}}
    prompt["8"]["inputs"]["positive"] = ["12", 0]
    assert not np.array_equal(base, pixels(harness, prompt))


def test_kohya_flux_lora_changes_the_image_and_comes_off(harness):
    from safetensors.torch import save_file
    loras = harness.folders.paths("loras")[0]
    loras.mkdir(parents=True, exist_ok=True)
    g = torch.Generator().manual_seed(0)
    save_file({"lora_unet_double_blocks_0_img_attn_qkv.lora_down.weight": torch.randn(4, 64, generator=g),
               "lora_unet_double_blocks_0_img_attn_qkv.lora_up.weight": torch.randn(192, 4, generator=g),
               "lora_unet_double_blocks_0_img_attn_qkv.alpha": torch.tensor(4.0),
               "lora_unet_single_blocks_0_linear2.lora_down.weight": torch.randn(4, 320, generator=g),
               "lora_unet_single_blocks_0_linear2.lora_up.weight": torch.randn(64, 4, generator=g)},
              str(loras / "flux-lora.safetensors"))
    base = pixels(harness, txt2img())
    prompt = txt2img()
    prompt["13"] = {"class_type": "LoraLoaderModelOnly",
                    "inputs": {"model": ["1", 0], "lora_name": "flux-lora.safetensors", "strength_model": 1.0}}
    prompt["7"]["inputs"]["model"] = ["13", 0]
    patched = pixels(harness, prompt)
    assert not np.array_equal(base, patched)
    assert np.array_equal(pixels(harness, prompt), patched)
    harness.engine.clear_cache()
    assert np.array_equal(pixels(harness, txt2img()), base)              # the patch comes off exactly
