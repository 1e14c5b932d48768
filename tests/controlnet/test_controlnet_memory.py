"""A ControlNet under the model manager: loaded beside the UNet under the same device budget (whole, partly
loaded or streamed), giving the same latent as without a budget, and moved off the device when a later
prompt without it needs the room. The device is the CPU with a simulated budget (`vram_budget_bytes`); the
tiny UNet is 8.7 MB and the ControlNet 5.4 MB in fp32."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from model_management import MemorySettings, VramMode
from model_management.registry import Placement
from models.testing import CheckpointSpec, write_random_checkpoint, write_random_control_lora, write_random_controlnet
from nodes import services
from tests.controlnet.test_controlnet_engine import cn_config, sampled
from tests.controlnet.test_controlnet_engine import prompt as engine_prompt
from tests.controlnet.test_unet_control import two_res_block_unet
from tests.diffusion.helpers import TINY_VAE
from tests.nodes.engine_harness import Capture, Harness

CONTROL = [("cn.safetensors", 1.0, 0.0, 1.0)]


def harness(root, **settings) -> Harness:
    h = Harness(root)
    h.services = services.NodeServices(h.folders, settings=MemorySettings(force_fp32=True, device="cpu", **settings))
    write_random_checkpoint(h.folders.paths("checkpoints")[0] / "tiny.safetensors",
                            CheckpointSpec("sd1", two_res_block_unet(), TINY_VAE))
    cn_dir = h.folders.paths("controlnet")[0]
    cn_dir.mkdir(parents=True, exist_ok=True)
    write_random_controlnet(cn_dir / "cn.safetensors", cn_config(), seed=1)
    write_random_control_lora(cn_dir / "control-lora.safetensors", two_res_block_unet(), rank=4, seed=1)
    h.folders.input.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(
        h.folders.input / "hint.png")
    h.registry.register("TestCapture", Capture)
    return h


def prompt(controls=()) -> dict:
    """The engine tests' txt2img with 2 steps."""
    return engine_prompt(controls=controls, sampler_node={"class_type": "KSampler", "inputs": {
        "seed": 5, "steps": 2, "cfg": 7.0, "sampler_name": "euler", "scheduler": "normal", "denoise": 1.0,
        "model": ["4", 0], "latent_image": ["5", 0]}})


def records(h: Harness) -> dict[str, object]:
    """'unet' / 'controlnet' -> the manager's record."""
    out = {}
    for record in h.services.model_manager()._records.values():
        if record.name.endswith("(UNet)"):
            out["unet"] = record
        elif record.name.endswith("(controlnet)"):
            out["controlnet"] = record
    return out


def run(h: Harness, p: dict) -> torch.Tensor:
    services.install(h.services)
    try:
        return sampled(h, p)
    finally:
        services.install(None)


@pytest.fixture(scope="module")
def unbudgeted(tmp_path_factory):
    """Reference latents with no device budget, with and without convolution prepacking (which applies to
    fully loaded models only, so it changes the last bits of a streamed UNet's result)."""
    out = {}
    for prepack in (True, False):
        h = harness(tmp_path_factory.mktemp(f"ref{prepack}"), prepack_weights=prepack)
        out[prepack] = run(h, prompt(controls=CONTROL))
        placed = records(h)
        assert placed["unet"].placement is Placement.FULL and placed["controlnet"].placement is Placement.FULL
        h.close()
    return out


@pytest.mark.parametrize("mode,budget,prepack,unet_placement,control_placement", [
    (VramMode.NORMAL, 12_000_000, True, Placement.FULL, Placement.PARTIAL),     # the ControlNet is partly loaded
    (VramMode.LOW, 12_000_000, False, Placement.PARTIAL, Placement.PARTIAL),    # both partly loaded
    (VramMode.NO, 8_000_000, False, Placement.PARTIAL, Placement.PARTIAL),      # both streamed (nothing resident)
])
def test_controlnet_shares_the_device_budget(tmp_path, unbudgeted, mode, budget, prepack, unet_placement,
                                             control_placement):
    h = harness(tmp_path, vram_mode=mode, vram_budget_bytes=budget, prepack_weights=prepack)
    manager = h.services.model_manager()
    on_device: list[int] = []
    manager.ledger.watch(on_device.append)
    latent = run(h, prompt(controls=CONTROL))
    placed = records(h)
    assert (placed["unet"].placement, placed["controlnet"].placement) == (unet_placement, control_placement)
    assert placed["controlnet"].resident_bytes < placed["controlnet"].weights.total_bytes()
    if mode is VramMode.NO:
        assert placed["unet"].resident_bytes == 0 and placed["controlnet"].resident_bytes == 0
    assert max(on_device) <= budget and manager.ledger.peak_bytes <= budget
    assert torch.equal(latent, unbudgeted[prepack])          # streaming changes where weights live, not results
    h.close()


def test_controlnet_leaves_the_device_when_a_later_prompt_needs_the_room(tmp_path):
    h = harness(tmp_path, vram_mode=VramMode.LOW, vram_budget_bytes=12_000_000, prepack_weights=False)
    run(h, prompt(controls=CONTROL))
    assert records(h)["controlnet"].is_on_device
    run(h, prompt())                                          # no ControlNet: its room goes to the UNet
    placed = records(h)
    assert placed["controlnet"].placement is Placement.RAM and placed["controlnet"].resident_bytes == 0
    assert placed["unet"].is_on_device
    h.close()


def test_free_unloads_the_controlnet(tmp_path):
    h = harness(tmp_path)
    run(h, prompt(controls=CONTROL))
    assert records(h)["controlnet"].placement is Placement.FULL
    h.services.model_manager().free()
    assert records(h)["controlnet"].placement is Placement.RAM
    h.close()


def test_control_lora_built_on_a_streamed_unet(tmp_path):
    """The control-LoRA's net is built from the UNet's base tensors and patches, not from its slots, which
    hold placeholders while the UNet is streamed: the same latent with the UNet streamed (--novram budget)."""
    controls = [("control-lora.safetensors", 1.0, 0.0, 1.0)]
    free = harness(tmp_path / "free", prepack_weights=False)
    expected = run(free, prompt(controls=controls))
    free.close()
    h = harness(tmp_path / "streamed", vram_mode=VramMode.NO, vram_budget_bytes=8_000_000, prepack_weights=False)
    latent = run(h, prompt(controls=controls))
    assert records(h)["unet"].resident_bytes == 0
    assert torch.equal(latent, expected)
    h.close()
