"""Merge, save and guidance nodes through the real Engine on the tiny SD1.x checkpoint: block-merge nodes
whose input names are key prefixes ("input_blocks.4.") run, identity merges give KSampler's image, and the
savers write ComfyUI-named files into output/."""
from __future__ import annotations

import torch

from tests.nodes.engine_harness import Capture
from tests.nodes.test_builtin_diffusion import (  # noqa: F401 - fixtures
    base_prompt,
    capture,
    checkpoints,
    harness,
    run_ok,
    shared_harness,
)


def _latent(h, prompt: dict) -> torch.Tensor:
    run_ok(h, capture(prompt, ["3", 0]))
    return Capture.seen[-1]["samples"]


def test_block_merge_nodes_with_prefix_inputs_run_and_identity_merges_change_nothing(harness):
    plain = _latent(harness, base_prompt())
    info = harness.registry.object_info("ModelMergeSD1")
    names = info["input_order"]["required"]
    assert names[:4] == ["model1", "model2", "time_embed.", "label_emb."] and names[-1] == "out."
    for class_type, extra in (("ModelMergeSD1", {n: 1.0 for n in names[2:]}),
                              ("ModelMergeSimple", {"ratio": 0.5}),
                              ("ModelMergeBlocks", {"input": 0.0, "middle": 0.3, "out": 1.0})):
        prompt = base_prompt()
        prompt["40"] = {"class_type": class_type, "inputs": {"model1": ["4", 0], "model2": ["4", 0], **extra}}
        prompt["3"]["inputs"]["model"] = ["40", 0]
        torch.testing.assert_close(_latent(harness, prompt), plain, rtol=1e-5, atol=1e-5)   # a model with itself


def test_subtract_of_a_model_from_itself_zeroes_the_weights(harness):
    prompt = base_prompt()
    prompt["40"] = {"class_type": "ModelMergeSubtract", "inputs": {"model1": ["4", 0], "model2": ["4", 0],
                                                                   "multiplier": 1.0}}
    prompt["3"]["inputs"]["model"] = ["40", 0]
    prompt["3"]["inputs"]["cfg"] = 1.0
    out = _latent(harness, prompt)
    # every weight and bias 0: the UNet predicts eps = 0, so Euler leaves the noise as it is (x0 = x)
    from sampling.model_sampling import DiscreteSampling
    from sampling.noise import prepare_noise
    sigma_max = float(DiscreteSampling().sigma_max)
    expected = prepare_noise(torch.zeros(1, 4, 8, 8), 42) * (1 + sigma_max ** 2) ** 0.5 / 0.18215
    torch.testing.assert_close(out, expected, rtol=1e-4, atol=1e-4)


def test_savers_write_comfyui_named_files(harness):
    prompt = {
        "4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "tiny.safetensors"}},
        "40": {"class_type": "CLIPMergeSimple", "inputs": {"clip1": ["4", 1], "clip2": ["4", 1], "ratio": 0.5}},
        "41": {"class_type": "ModelSave", "inputs": {"model": ["4", 0], "filename_prefix": "diffusion_models/t"}},
        "42": {"class_type": "CLIPSave", "inputs": {"clip": ["40", 0], "filename_prefix": "clip/t"}},
        "43": {"class_type": "VAESave", "inputs": {"vae": ["4", 2], "filename_prefix": "vae/t"}},
        "44": {"class_type": "ModelMergeSubtract", "inputs": {"model1": ["4", 0], "model2": ["4", 0], "multiplier": 1.0}},
        "45": {"class_type": "LoraSave", "inputs": {"filename_prefix": "loras/x", "rank": 4, "lora_type": "standard",
                                                  "bias_diff": True, "model_diff": ["44", 0]}},
    }
    run_ok(harness, prompt)
    out = harness.folders.output
    assert (out / "diffusion_models" / "t_00001_.safetensors").is_file()
    assert (out / "clip" / "t_clip_l_00001_.safetensors").is_file()
    assert (out / "vae" / "t_00001_.safetensors").is_file()
    assert (out / "loras" / "x_00001_.safetensors").is_file()


def test_guidance_nodes_run_in_a_graph(harness):
    plain = _latent(harness, base_prompt())
    for class_type, extra in (("CFGZeroStar", {}), ("CFGNorm", {"strength": 0.9}), ("TCFG", {}),
                              ("CFGNorm", {"strength": 1.0, "pre_cfg": True}),
                              ("FreSca", {"scale_low": 1.0, "scale_high": 1.25, "freq_cutoff": 2}),
                              ("RenormCFG", {"cfg_trunc": 100.0, "renorm_cfg": 1.0}),
                              ("APG", {"eta": 0.5, "norm_threshold": 2.0, "momentum": 0.2}),
                              ("Epsilon Scaling", {"scaling_factor": 1.02}), ("Mahiro", {}),
                              ("PerturbedAttentionGuidance", {"scale": 2.0}),
                              ("SelfAttentionGuidance", {"scale": 0.8, "blur_sigma": 2.0}),
                              ("UNetSelfAttentionMultiply", {"q": 1.2, "k": 1.0, "v": 1.0, "out": 1.0}),
                              ("UNetCrossAttentionMultiply", {"q": 1.0, "k": 1.0, "v": 0.8, "out": 1.0}),
                              ("ModelSamplingContinuousEDM", {"sampling": "v_prediction", "sigma_max": 120.0,
                                                              "sigma_min": 0.002}),
                              ("PatchModelAddDownscale", {"block_number": 3, "downscale_factor": 2.0,
                                                          "start_percent": 0.0, "end_percent": 1.0,
                                                          "downscale_after_skip": True,
                                                          "downscale_method": "bicubic", "upscale_method": "bicubic"})):
        prompt = base_prompt()
        prompt["40"] = {"class_type": class_type, "inputs": {"model": ["4", 0], **extra}}
        prompt["3"]["inputs"]["model"] = ["40", 0]
        out = _latent(harness, prompt)
        assert torch.isfinite(out).all() and not torch.allclose(out, plain, atol=1e-4), class_type
