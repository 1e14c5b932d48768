"""A FLUX LoRA on a ComfyUI `scaled_fp8` FLUX file, through the real Engine (UNETLoader, LoraLoaderModelOnly,
KSampler), against the same LoRA on the file's dequantised values saved in float32.

The scaled file stores each Linear weight as fp8 e4m3fn with a float32 `scale_weight` (true value = weight *
scale, ComfyUI comfy/ops.py scaled_fp8_ops; fact, not code). A patched weight must be the true value plus the
LoRA's delta, merged in float32 and used as the layer's weight without its scale again. The reference file
holds exactly those true values (and the Linear biases rounded to fp8, as the fp8 model holds them), so the
patched weights are bit-identical on both sides; the unpatched scaled Linears compute (x * scale) @ w^T against
x @ (w * scale)^T, which differ by fp32 rounding only (a few 1e-7 relative per layer, over 3 steps of a 3-block
model): hence rtol 1e-4 / atol 1e-5 in --force-fp32, far below the LoRA's own effect (asserted)."""
from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file

from model_management import MemorySettings
from models.files import load_state_dict
from models.testing import tiny_flux_config, tiny_sd3_spec, write_random_flux, write_random_text_encoder
from nodes import services
from tests.nodes.engine_harness import Capture, Harness, installed

FP8 = torch.float8_e4m3fn
LORA_LAYERS = {"double_blocks_0_img_attn_qkv": (192, 64), "single_blocks_0_linear2": (64, 320), "img_in": (64, 64)}


def write_dequantised(scaled_path, out_path) -> None:
    """The scaled file's true values in float32: weight * scale_weight; the Linear biases rounded to fp8 (the
    fp8 model's Linears hold them so); the scales and the `scaled_fp8` marker left out."""
    with load_state_dict(scaled_path) as source:
        tensors = {k: source[k].clone() for k in source}
    out = {}
    for key, tensor in tensors.items():
        if key.endswith(".scale_weight") or key == "scaled_fp8":
            continue
        layer = key.rpartition(".")[0]
        if f"{layer}.scale_weight" in tensors:
            out[key] = tensor.float() * tensors[f"{layer}.scale_weight"] if key.endswith(".weight") \
                else tensor.to(FP8).float()
        else:
            out[key] = tensor.float()
    save_file(out, str(out_path))


@pytest.fixture(scope="module")
def harness_scaled(tmp_path_factory):
    h = Harness(tmp_path_factory.mktemp("base"))
    h.services = services.NodeServices(h.folders, settings=MemorySettings(force_fp32=True))
    unets = h.folders.paths("diffusion_models")[0]
    unets.mkdir(parents=True, exist_ok=True)
    scaled = write_random_flux(unets / "flux-dev-scaled-fp8.safetensors", tiny_flux_config(), scaled_fp8=True, seed=2)
    write_dequantised(scaled, unets / "flux-dev-dequantised.safetensors")
    encoders = h.folders.paths("text_encoders")[0]
    encoders.mkdir(parents=True, exist_ok=True)
    for kind, config in tiny_sd3_spec(text=("clip_l", "t5xxl")).text_configs.items():
        write_random_text_encoder(encoders / f"{kind}.safetensors", kind, config, torch.float16)
    loras = h.folders.paths("loras")[0]
    loras.mkdir(parents=True, exist_ok=True)
    g = torch.Generator().manual_seed(0)
    lora = {}
    for name, (rows, cols) in LORA_LAYERS.items():
        lora[f"lora_unet_{name}.lora_down.weight"] = torch.randn(4, cols, generator=g) * 0.3
        lora[f"lora_unet_{name}.lora_up.weight"] = torch.randn(rows, 4, generator=g) * 0.3
        lora[f"lora_unet_{name}.alpha"] = torch.tensor(4.0)
    save_file(lora, str(loras / "flux-lora.safetensors"))
    h.registry.register("TestCapture", Capture)
    yield h
    h.close()


@pytest.fixture
def harness(harness_scaled):
    yield from installed(harness_scaled)


def latent(h: Harness, unet: str, lora: bool, merge_with: str | None = None) -> torch.Tensor:
    """KSampler's latent on `unet` (with the LoRA; or ModelMergeSimple of it with `merge_with` at ratio 0.5)."""
    prompt = {
        "1": {"class_type": "UNETLoader", "inputs": {"unet_name": unet, "weight_dtype": "default"}},
        "2": {"class_type": "DualCLIPLoader", "inputs": {"clip_name1": "t5xxl.safetensors",
                                                         "clip_name2": "clip_l.safetensors", "type": "flux"}},
        "4": {"class_type": "CLIPTextEncode", "inputs": {"text": "a red cat", "clip": ["2", 0]}},
        "5": {"class_type": "FluxGuidance", "inputs": {"conditioning": ["4", 0], "guidance": 3.5}},
        "6": {"class_type": "EmptySD3LatentImage", "inputs": {"width": 64, "height": 48, "batch_size": 1}},
        "8": {"class_type": "KSampler", "inputs": {"seed": 7, "steps": 3, "cfg": 1.0, "sampler_name": "euler",
                                                   "scheduler": "simple", "denoise": 1.0, "model": ["1", 0],
                                                   "positive": ["5", 0], "negative": ["4", 0],
                                                   "latent_image": ["6", 0]}},
        "99": {"class_type": "TestCapture", "inputs": {"value": ["8", 0]}},
    }
    if lora:
        prompt["13"] = {"class_type": "LoraLoaderModelOnly",
                        "inputs": {"model": ["1", 0], "lora_name": "flux-lora.safetensors", "strength_model": 1.0}}
        prompt["8"]["inputs"]["model"] = ["13", 0]
    if merge_with is not None:
        prompt["14"] = {"class_type": "UNETLoader", "inputs": {"unet_name": merge_with, "weight_dtype": "default"}}
        prompt["15"] = {"class_type": "ModelMergeSimple", "inputs": {"model1": ["1", 0], "model2": ["14", 0],
                                                                     "ratio": 0.5}}
        prompt["8"]["inputs"]["model"] = ["15", 0]
    result = h.run(prompt)
    assert result.status == "success", (result.error.get("exception_message"), result.error.get("traceback"))
    return Capture.seen[-1]["samples"]


def test_a_lora_on_a_scaled_fp8_file_matches_it_on_the_dequantised_file(harness):
    plain = latent(harness, "flux-dev-scaled-fp8.safetensors", lora=False)
    patched = latent(harness, "flux-dev-scaled-fp8.safetensors", lora=True)
    reference = latent(harness, "flux-dev-dequantised.safetensors", lora=True)
    torch.testing.assert_close(latent(harness, "flux-dev-dequantised.safetensors", lora=False), plain,
                               rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(patched, reference, rtol=1e-4, atol=1e-5)
    assert (patched - plain).abs().max() > 1e-2                 # the LoRA matters, far beyond the tolerance
    harness.engine.clear_cache()
    assert torch.equal(latent(harness, "flux-dev-scaled-fp8.safetensors", lora=False), plain)   # it comes off


def test_a_merge_with_a_scaled_fp8_model_uses_its_true_weights(harness):
    """ModelMergeSimple 0.5 of the scaled file and its dequantised twin is the same model (both ways round): the
    scaled side's weights enter the merge as weight * scale_weight, as the second model as well as the first."""
    plain = latent(harness, "flux-dev-dequantised.safetensors", lora=False)
    for first, second in (("flux-dev-scaled-fp8.safetensors", "flux-dev-dequantised.safetensors"),
                          ("flux-dev-dequantised.safetensors", "flux-dev-scaled-fp8.safetensors")):
        torch.testing.assert_close(latent(harness, first, lora=False, merge_with=second), plain, rtol=1e-4, atol=1e-5)


def saved_model(h: Harness, lora: bool, name: str):
    """ModelSave's writer on the UNETLoader model of the scaled file (with the LoRA), into diffusion_models/."""
    from diffusion import saving_parts
    prompt = {"1": {"class_type": "UNETLoader", "inputs": {"unet_name": "flux-dev-scaled-fp8.safetensors",
                                                           "weight_dtype": "default"}},
              "99": {"class_type": "TestCapture", "inputs": {"value": ["1", 0]}}}
    if lora:
        prompt["13"] = {"class_type": "LoraLoaderModelOnly",
                        "inputs": {"model": ["1", 0], "lora_name": "flux-lora.safetensors", "strength_model": 1.0}}
        prompt["99"]["inputs"]["value"] = ["13", 0]
    result = h.run(prompt)
    assert result.status == "success", result.error
    model = Capture.seen[-1]
    path = saving_parts.save_model(h.folders.paths("diffusion_models")[0] / name, model)
    return model, path


def test_a_saved_scaled_fp8_model_keeps_its_scales_and_marker(harness):
    """Saved without patches, the file holds the same fp8 weights, scales and `scaled_fp8` marker (under the
    checkpoint prefix ModelSave writes), so it samples bit for bit as the source file. (Before, the marker was
    dropped and a reload read the fp8 weights without their scales.)"""
    _, path = saved_model(harness, lora=False, name="saved-scaled.safetensors")
    with load_state_dict(path) as saved, \
            load_state_dict(harness.folders.paths("diffusion_models")[0] / "flux-dev-scaled-fp8.safetensors") as src:
        marker = "model.diffusion_model.scaled_fp8"
        assert marker in saved and saved[marker].dtype == FP8 and saved[marker].numel() == 0
        for key in src:
            if key != "scaled_fp8":    # the biases of scaled Linears as the model holds them: rounded to fp8
                kept = saved["model.diffusion_model." + key]
                assert torch.equal(kept.float(), src[key].to(kept.dtype).float()), key
    plain = latent(harness, "flux-dev-scaled-fp8.safetensors", lora=False)
    assert torch.equal(latent(harness, "saved-scaled.safetensors", lora=False), plain)


def test_a_saved_lora_patched_scaled_fp8_model_stores_the_patched_true_values(harness):
    """With a LoRA merged, each patched weight is stored as fp8 of its own scale: saved * scale is the patched
    true value within e4m3fn's rounding (half a step: 2^-4 relative, or half the smallest subnormal step)."""
    model, path = saved_model(harness, lora=True, name="saved-scaled-lora.safetensors")
    weights = model.shared.weights
    patched = [k for k in model.patches if model.patches[k] and k in weights.scales]
    assert len(patched) == len(LORA_LAYERS)
    from model_management import apply_patches
    with load_state_dict(path) as saved:
        for key in patched:
            true = apply_patches(weights.true_value(key, weights.home[key]), model.patches[key], key,
                                 out_dtype=torch.float32)
            scale = saved["model.diffusion_model." + weights.scales[key]].float()
            stored = saved["model.diffusion_model." + key]
            assert stored.dtype == FP8
            error = (stored.float() * scale - true).abs()
            assert (error <= true.abs() * 2 ** -4 + scale * 2 ** -10).all(), key
    reloaded = latent(harness, "saved-scaled-lora.safetensors", lora=False)
    patched_latent = latent(harness, "flux-dev-scaled-fp8.safetensors", lora=True)
    plain = latent(harness, "flux-dev-scaled-fp8.safetensors", lora=False)
    # fp8 rounding of the patched weights moves the latent far less than the LoRA does
    assert (reloaded - patched_latent).abs().max() < 0.25 * (patched_latent - plain).abs().max()
