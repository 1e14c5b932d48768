"""FLUX.1 Fill, Depth / Canny and Kontext through the real Engine with tiny random-weight files in the BFL
layout: Fill (img_in 384 = (16 + 16 + 64) x 2 x 2) with InpaintModelConditioning, a control model
(img_in 128 = (16 + 16) x 2 x 2) with InstructPixToPixConditioning, and [dev] with ReferenceLatent /
FluxKontextMultiReferenceLatentMethod; plus what the Fill and control models are given beside the noisy
latent (diffusion.flux.concat_inputs), built here by hand from the published description (BFL's Fill:
masked-image latent, then the pixel mask folded 8 x 8 into 64 channels; diffusers' FluxFillPipeline
prepare_mask_latents folds it the same way)."""
from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

from diffusion import flux
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
from sampling.latent_format import FLUX
from tests.nodes.engine_harness import Capture, Harness

IMAGE = "flux-edit-input.png"


@pytest.fixture(scope="module")
def harness_edit(tmp_path_factory):
    h = Harness(tmp_path_factory.mktemp("base"))
    h.services = services.NodeServices(h.folders, settings=MemorySettings(force_fp32=True))
    unets = h.folders.paths("diffusion_models")[0]
    unets.mkdir(parents=True, exist_ok=True)
    write_random_flux(unets / "flux-dev.safetensors", tiny_flux_config())
    write_random_flux(unets / "flux-fill.safetensors", tiny_flux_config(in_channels=384), seed=2)
    write_random_flux(unets / "flux-depth.safetensors", tiny_flux_config(in_channels=128), seed=3)
    encoders = h.folders.paths("text_encoders")[0]
    encoders.mkdir(parents=True, exist_ok=True)
    for kind, config in tiny_sd3_spec(text=("clip_l", "t5xxl")).text_configs.items():
        write_random_text_encoder(encoders / f"{kind}.safetensors", kind, config)
    vaes = h.folders.paths("vae")[0]
    vaes.mkdir(parents=True, exist_ok=True)
    write_random_vae(vaes / "ae.safetensors", flux_vae_config())
    yy, xx = np.mgrid[0:48, 0:64]
    rgba = np.stack([xx * 4, yy * 5, (xx + yy) * 2, np.full_like(xx, 255)], axis=-1).astype(np.uint8)
    rgba[8:32, 16:40, 3] = 0                                    # LoadImage's MASK = 1 - alpha: this box
    h.folders.input.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rgba, "RGBA").save(h.folders.input / IMAGE)
    h.registry.register("TestCapture", Capture)
    yield h
    h.close()


@pytest.fixture
def harness(harness_edit):
    h = harness_edit
    services.install(h.services)
    h.engine.clear_cache()
    Capture.seen = []
    yield h
    services.install(None)


def base(unet: str, seed: int = 7, steps: int = 2) -> dict:
    return {
        "1": {"class_type": "UNETLoader", "inputs": {"unet_name": unet, "weight_dtype": "default"}},
        "2": {"class_type": "DualCLIPLoader", "inputs": {"clip_name1": "t5xxl.safetensors",
                                                         "clip_name2": "clip_l.safetensors", "type": "flux"}},
        "3": {"class_type": "VAELoader", "inputs": {"vae_name": "ae.safetensors"}},
        "4": {"class_type": "CLIPTextEncode", "inputs": {"text": "a red cat", "clip": ["2", 0]}},
        "5": {"class_type": "FluxGuidance", "inputs": {"conditioning": ["4", 0], "guidance": 30.0}},
        "6": {"class_type": "LoadImage", "inputs": {"image": IMAGE}},
        "8": {"class_type": "KSampler", "inputs": {"seed": seed, "steps": steps, "cfg": 1.0, "sampler_name": "euler",
                                                   "scheduler": "simple", "denoise": 1.0, "model": ["1", 0],
                                                   "positive": ["5", 0], "negative": ["4", 0],
                                                   "latent_image": None}},
        "9": {"class_type": "VAEDecode", "inputs": {"samples": ["8", 0], "vae": ["3", 0]}},
        "10": {"class_type": "SaveImage", "inputs": {"filename_prefix": "flux-edit", "images": ["9", 0]}},
    }


def pixels(h: Harness, prompt: dict) -> np.ndarray:
    result = h.run(prompt)
    assert result.status == "success", (result.error.get("exception_message"), result.error.get("traceback"))
    item = result.outputs["10"]["images"][0]
    return np.asarray(Image.open(h.folders.output / item["subfolder"] / item["filename"])).astype(np.int16)


def fill_prompt(seed: int = 7, noise_mask: bool = True) -> dict:
    prompt = base("flux-fill.safetensors", seed)
    prompt["7"] = {"class_type": "InpaintModelConditioning", "inputs": {
        "positive": ["5", 0], "negative": ["4", 0], "vae": ["3", 0], "pixels": ["6", 0], "mask": ["6", 1],
        "noise_mask": noise_mask}}
    prompt["8"]["inputs"].update(positive=["7", 0], negative=["7", 1], latent_image=["7", 2])
    return prompt


def test_fill_inpaints_through_inpaint_model_conditioning(harness):
    a = pixels(harness, fill_prompt())
    harness.engine.clear_cache()
    assert np.array_equal(a, pixels(harness, fill_prompt()))
    assert a.shape == (48, 64, 3) and a.std() > 0
    assert not np.array_equal(a, pixels(harness, fill_prompt(seed=8)))
    # without a noise mask the whole image is resampled: the unmasked area changes too
    b = pixels(harness, fill_prompt(noise_mask=False))
    assert np.abs(a[40:, :8] - b[40:, :8]).max() > 0


def test_fill_model_is_given_the_masked_latent_and_the_folded_mask(harness, monkeypatch):
    """The transformer sees 96 channels: the noisy latent (16), then what concat_inputs builds (16 + 64)."""
    from models.flux import Flux
    seen = []
    original = Flux.forward

    def recording(self, x, *args, **kwargs):
        seen.append(x.detach().clone())
        return original(self, x, *args, **kwargs)

    monkeypatch.setattr(Flux, "forward", recording)
    prompt = fill_prompt()
    prompt["11"] = {"class_type": "TestCapture", "inputs": {"value": ["7", 0]}}
    pixels(harness, prompt)
    assert seen and all(x.shape[1:] == (96, 6, 8) for x in seen)      # 16 + 16 + 64 at 48 x 64 px
    options = Capture.seen[-1][0][1]
    latent, mask = options["concat_latent_image"], options["concat_mask"]
    assert mask.shape == (1, 1, 48, 64) and set(mask.unique().tolist()) == {0.0, 1.0}
    want_image = (latent - FLUX.shift_factor) * FLUX.scale_factor
    assert torch.allclose(seen[0][:, 16:32], want_image, atol=1e-6)
    folded = seen[0][0, 32:]
    for dy, dx, i, j in [(0, 0, 1, 2), (3, 5, 2, 4), (7, 7, 3, 6), (1, 6, 0, 0)]:
        assert folded[dy * 8 + dx, i, j] == mask[0, 0, 8 * i + dy, 8 * j + dx]


def test_fill_without_concat_mask_takes_the_latent_noise_mask(harness, monkeypatch):
    """VAEEncode + SetLatentNoiseMask on a Fill model: the folded mask comes from the noise mask."""
    from models.flux import Flux
    seen = []
    original = Flux.forward

    def recording(self, x, *args, **kwargs):
        seen.append(x.detach().clone())
        return original(self, x, *args, **kwargs)

    monkeypatch.setattr(Flux, "forward", recording)
    prompt = base("flux-fill.safetensors")
    prompt["11"] = {"class_type": "VAEEncode", "inputs": {"pixels": ["6", 0], "vae": ["3", 0]}}
    prompt["12"] = {"class_type": "SetLatentNoiseMask", "inputs": {"samples": ["11", 0], "mask": ["6", 1]}}
    prompt["8"]["inputs"]["latent_image"] = ["12", 0]
    pixels(harness, prompt)
    folded = seen[0][0, 32:]                                   # [64, 6, 8]: the box is latent rows 1-3, cols 2-4
    assert torch.allclose(folded[:, 2, 3], torch.ones(64)) and torch.allclose(folded[:, 5, 7], torch.zeros(64))
    assert torch.allclose(seen[0][:, 16:32], torch.full((1, 16, 6, 8), (0 - FLUX.shift_factor) * FLUX.scale_factor))


def test_concat_without_inputs_is_a_processed_zero_latent_and_a_full_mask():
    model = SimpleNamespace(in_channels=96, latent_format=FLUX)
    x = torch.randn(2, 16, 3, 5)
    out = flux.concat_inputs(model, x, {})
    assert out.shape == (2, 80, 3, 5)
    assert torch.allclose(out[:, :16], torch.full_like(x, (0 - FLUX.shift_factor) * FLUX.scale_factor))
    assert torch.equal(out[:, 16:], torch.ones(2, 64, 3, 5))
    control = flux.concat_inputs(SimpleNamespace(in_channels=32, latent_format=FLUX), x,
                                 {"concat_latent_image": torch.ones(1, 16, 6, 10)})
    assert control.shape == (2, 16, 3, 5)                       # resized to x, repeated to the batch
    assert torch.allclose(control, torch.full_like(x, (1 - FLUX.shift_factor) * FLUX.scale_factor))


def depth_prompt(seed: int = 7) -> dict:
    prompt = base("flux-depth.safetensors", seed)
    prompt["7"] = {"class_type": "InstructPixToPixConditioning", "inputs": {
        "positive": ["5", 0], "negative": ["4", 0], "vae": ["3", 0], "pixels": ["6", 0]}}
    prompt["8"]["inputs"].update(positive=["7", 0], negative=["7", 1], latent_image=["7", 2])
    return prompt


def test_depth_control_model_through_instruct_pix2pix_conditioning(harness):
    prompt = depth_prompt()
    prompt["11"] = {"class_type": "TestCapture", "inputs": {"value": ["7", 2]}}
    a = pixels(harness, prompt)
    latent = Capture.seen[-1]["samples"]
    assert latent.shape == (1, 16, 6, 8) and torch.count_nonzero(latent) == 0
    harness.engine.clear_cache()
    assert np.array_equal(a, pixels(harness, depth_prompt()))
    # another control image gives another result
    other = depth_prompt()
    other["12"] = {"class_type": "ImageInvert", "inputs": {"image": ["6", 0]}}
    other["7"]["inputs"]["pixels"] = ["12", 0]
    assert not np.array_equal(a, pixels(harness, other))


def kontext_prompt(method: str | None = None, two: bool = False) -> dict:
    prompt = base("flux-dev.safetensors")
    prompt["11"] = {"class_type": "VAEEncode", "inputs": {"pixels": ["6", 0], "vae": ["3", 0]}}
    prompt["12"] = {"class_type": "ReferenceLatent", "inputs": {"conditioning": ["5", 0], "latent": ["11", 0]}}
    last = "12"
    if two:
        prompt["13"] = {"class_type": "ImageInvert", "inputs": {"image": ["6", 0]}}
        prompt["14"] = {"class_type": "VAEEncode", "inputs": {"pixels": ["13", 0], "vae": ["3", 0]}}
        prompt["15"] = {"class_type": "ReferenceLatent", "inputs": {"conditioning": ["12", 0], "latent": ["14", 0]}}
        last = "15"
    if method:
        prompt["16"] = {"class_type": "FluxKontextMultiReferenceLatentMethod",
                        "inputs": {"conditioning": [last, 0], "reference_latents_method": method}}
        last = "16"
    prompt["17"] = {"class_type": "EmptySD3LatentImage", "inputs": {"width": 64, "height": 48, "batch_size": 1}}
    prompt["8"]["inputs"].update(positive=[last, 0], latent_image=["17", 0])
    return prompt


def test_kontext_reference_latents(harness):
    plain = kontext_prompt()
    del plain["12"]
    plain["8"]["inputs"]["positive"] = ["5", 0]
    without = pixels(harness, plain)
    one = pixels(harness, kontext_prompt())
    harness.engine.clear_cache()
    assert np.array_equal(one, pixels(harness, kontext_prompt()))
    assert not np.array_equal(one, without)
    two = pixels(harness, kontext_prompt(two=True))
    assert not np.array_equal(one, two)
    assert not np.array_equal(two, pixels(harness, kontext_prompt("index", two=True)))
    prompt = kontext_prompt("uxo/uno", two=True)
    prompt["99"] = {"class_type": "TestCapture", "inputs": {"value": ["16", 0]}}
    pixels(harness, prompt)
    options = Capture.seen[-1][0][1]
    assert options["reference_latents_method"] == "uxo" and len(options["reference_latents"]) == 2


def test_reference_latent_without_latent_and_kontext_image_scale():
    conditioning = [[torch.zeros(1, 4, 8), {"pooled_output": torch.zeros(1, 8)}]]
    assert flux.with_reference_latent(conditioning, None) is conditioning
    image = torch.rand(1, 30, 50, 3)                           # aspect 5:3 -> 1328 x 800 (1.66)
    out = flux.kontext_image_scale(image)
    assert out.shape == (1, 800, 1328, 3)
    assert flux.kontext_image_size(1000, 1000) == (1024, 1024)
    assert flux.kontext_image_size(832, 1216) == (832, 1248)
