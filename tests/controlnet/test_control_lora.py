"""Stability control-LoRA files (`lora_controlnet`): detected from tensors, loaded by ControlNetLoader, built on
the sampled MODEL's UNet (its weights + up @ down), through the engine on tiny SD1.x and SDXL checkpoints.

Reference: the same network written as an ordinary full ControlNet file by the test itself (the checkpoint's
UNet tensors read from the file, plus each layer's up @ down), loaded by the ordinary ControlNet path."""
from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file

from models.detection import detect_control_model
from models.files import load_state_dict
from models.testing import (CheckpointSpec, tiny_sdxl_text_configs, tiny_sdxl_unet_config, tiny_vae_config,
                            write_random_checkpoint, write_random_control_lora, write_sdxl_checkpoint)
from nodes import services
from tests.controlnet.test_controlnet_engine import prompt, sampled
from tests.controlnet.test_unet_control import two_res_block_unet
from tests.diffusion.helpers import TINY_VAE
from tests.nodes.engine_harness import fp32_harness, serving, write_reference_image

UNET_PREFIX = "model.diffusion_model."


def merged_controlnet(control_lora_path, checkpoint_path, out_path):
    """The control-LoRA as a full ControlNet file in the bare original layout, computed here from the files."""
    with load_state_dict(checkpoint_path) as ckpt:
        base = {k[len(UNET_PREFIX):]: ckpt[k].clone() for k in ckpt.shapes() if k.startswith(UNET_PREFIX)}
    with load_state_dict(control_lora_path) as source:
        tensors = {k: source[k].clone() for k in source.shapes()}
    state = {}
    for key, value in tensors.items():
        if key == "lora_controlnet":
            continue
        if key.endswith(".up"):
            module = key[:-3]
            down = tensors[module + ".down"]
            weight = base[module + ".weight"]
            state[module + ".weight"] = weight + (value.flatten(1) @ down.flatten(1)).reshape(weight.shape)
        elif not key.endswith(".down"):
            state[key] = value
    for key, value in base.items():                      # weights the file leaves to the base model
        if key.startswith(("input_blocks.", "middle_block.", "time_embed.", "label_emb.")) and key not in state:
            state[key] = value
    save_file(state, out_path)


@pytest.fixture(scope="module")
def sd1(tmp_path_factory):
    h = fp32_harness(tmp_path_factory.mktemp("control-lora"), ("checkpoints", "controlnet"))
    ckpt = write_random_checkpoint(h.folders.paths("checkpoints")[0] / "tiny.safetensors",
                                   CheckpointSpec("sd1", two_res_block_unet(), TINY_VAE))
    cn_dir = h.folders.paths("controlnet")[0]
    write_random_control_lora(cn_dir / "control-lora-canny-rank4.safetensors", two_res_block_unet(), rank=4, seed=1)
    merged_controlnet(cn_dir / "control-lora-canny-rank4.safetensors", ckpt, cn_dir / "merged.safetensors")
    write_reference_image(h, (64, 64), "hint.png", seed=0)
    yield from serving(h)


def test_detected_from_tensors(tmp_path):
    path = write_random_control_lora(tmp_path / "c.safetensors", tiny_sdxl_unet_config(), rank=8, hint_channels=3)
    with load_state_dict(path) as source:
        info = detect_control_model(source.shapes())
    assert (info.kind, info.config.hint_channels, info.config.rank, info.config.has_adm) == ("control_lora", 3, 8, True)
    path = write_random_control_lora(tmp_path / "d.safetensors", two_res_block_unet(), rank=2, hint_channels=1)
    with load_state_dict(path) as source:
        info = detect_control_model(source.shapes())
    assert (info.config.hint_channels, info.config.rank, info.config.has_adm) == (1, 2, False)


def test_control_lora_equals_its_merged_controlnet_through_the_engine(sd1):
    plain = sampled(sd1, prompt())
    lora = sampled(sd1, prompt(controls=[("control-lora-canny-rank4.safetensors", 0.9, 0.0, 1.0)]))
    merged = sampled(sd1, prompt(controls=[("merged.safetensors", 0.9, 0.0, 1.0)]))
    assert (lora - plain).abs().max() > 1e-3
    torch.testing.assert_close(lora, merged, atol=1e-5, rtol=0)
    assert torch.equal(sampled(sd1, prompt(controls=[("control-lora-canny-rank4.safetensors", 0.0, 0.0, 1.0)])),
                       plain)


def test_control_lora_follows_the_models_lora_patches(sd1, tmp_path):
    """Built on the MODEL as patched (ComfyUI reads the patched diffusion model's weights): a LoRA on the
    model changes the control-LoRA's net, and the unpatched model gets its own net back."""
    from diffusion import controlnet
    from diffusion.loading import load_checkpoint_file
    model, _clip, _vae = load_checkpoint_file(sd1.folders.find("checkpoints", "tiny.safetensors"),
                                              sd1.services.model_manager())
    net = controlnet.load_control_file(sd1.folders.find("controlnet", "control-lora-canny-rank4.safetensors"),
                                       sd1.services.model_manager())
    a = net.model_for(model)
    assert net.model_for(model) is a                                    # built once per base model
    patched = model.clone()
    key = "input_blocks.1.0.in_layers.2.weight"
    patched.add_patches({key: lambda w: w + 1.0})
    b = net.model_for(patched)
    assert b is not a
    diff = b.module.state_dict()[key] - a.module.state_dict()[key]
    torch.testing.assert_close(diff, torch.ones_like(diff))
    assert net.model_for(model) is not b                                 # rebuilt for the unpatched model


def test_control_lora_for_sdxl_on_an_sd1_model_is_a_clear_error(sd1):
    cn_dir = sd1.folders.paths("controlnet")[0]
    write_random_control_lora(cn_dir / "xl-control-lora.safetensors", tiny_sdxl_unet_config(), rank=4)
    result = sd1.run(prompt(controls=[("xl-control-lora.safetensors", 1.0, 0.0, 1.0)]))
    assert result.status == "error"
    assert "control-LoRA for SDXL" in str(result.error)


def test_sdxl_control_lora_through_the_engine(tmp_path_factory):
    from tests.nodes.test_sdxl_engine import sampled as xl_sampled, txt2img
    h = fp32_harness(tmp_path_factory.mktemp("xl-control-lora"), ("checkpoints", "controlnet"))
    write_sdxl_checkpoint(h.folders.paths("checkpoints")[0] / "xl.safetensors", tiny_sdxl_unet_config(),
                          text=tiny_sdxl_text_configs(), vae=tiny_vae_config())
    cn_dir = h.folders.paths("controlnet")[0]
    write_random_control_lora(cn_dir / "xl.safetensors", tiny_sdxl_unet_config(), rank=4, seed=2)
    merged_controlnet(cn_dir / "xl.safetensors", h.folders.paths("checkpoints")[0] / "xl.safetensors",
                      cn_dir / "xl_merged.safetensors")
    write_reference_image(h, (64, 64), "h.png", seed=1)
    services.install(h.services)
    try:
        def with_control(name: str, strength: float) -> dict:
            p = txt2img(ckpt="xl.safetensors")
            p["10"] = {"class_type": "LoadImage", "inputs": {"image": "h.png"}}
            p["11"] = {"class_type": "ControlNetLoader", "inputs": {"control_net_name": name}}
            p["12"] = {"class_type": "ControlNetApplyAdvanced", "inputs": {
                "positive": ["6", 0], "negative": ["7", 0], "control_net": ["11", 0], "image": ["10", 0],
                "strength": strength, "start_percent": 0.0, "end_percent": 1.0}}
            p["3"]["inputs"].update(positive=["12", 0], negative=["12", 1])
            return p
        plain = xl_sampled(h, txt2img(ckpt="xl.safetensors"))["samples"]
        assert torch.equal(xl_sampled(h, with_control("xl.safetensors", 0.0))["samples"], plain)
        lora = xl_sampled(h, with_control("xl.safetensors", 1.0))["samples"]
        merged = xl_sampled(h, with_control("xl_merged.safetensors", 1.0))["samples"]
        assert (lora - plain).abs().max() > 1e-3
        torch.testing.assert_close(lora, merged, atol=1e-5, rtol=0)
    finally:
        services.install(None)
        h.close()
