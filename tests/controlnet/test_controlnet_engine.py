"""ControlNet and T2I-Adapter workflows through the real Engine: tiny SD1.x checkpoint and tiny control files in
their real layouts (models.testing), loaded by the real loaders from models/controlnet."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

from model_management import MemorySettings
from models.checkpoint import load_checkpoint
from models.controlnet import ControlNet
from models.files import load_state_dict
from models.testing import (CheckpointSpec, controlnet_file_keys, tiny_t2i_config, write_random_checkpoint,
                            write_random_controlnet, write_random_t2i_adapter)
from nodes import services
from tests.controlnet.test_unet_control import two_res_block_unet
from tests.diffusion.helpers import TINY_VAE
from tests.nodes.engine_harness import Capture, Harness

CKPT = "tiny.safetensors"
STEPS = 4


def cn_config():
    from models.controlnet import ControlNetConfig
    return ControlNetConfig(unet=two_res_block_unet())


@pytest.fixture(scope="module")
def harness_module(tmp_path_factory):
    h = Harness(tmp_path_factory.mktemp("base"))
    h.services = services.NodeServices(h.folders, settings=MemorySettings(force_fp32=True))
    ckpt = write_random_checkpoint(h.folders.paths("checkpoints")[0] / CKPT,
                                   CheckpointSpec("sd1", two_res_block_unet(), TINY_VAE))
    cn_dir = h.folders.paths("controlnet")[0]
    cn_dir.mkdir(parents=True, exist_ok=True)
    write_random_controlnet(cn_dir / "cn.safetensors", cn_config(), layout="control_model", seed=1)
    write_random_controlnet(cn_dir / "cn_diffusers.safetensors", cn_config(), layout="diffusers", seed=1)
    write_random_controlnet(cn_dir / "cn_bare.safetensors", cn_config(), layout="bare", seed=2)
    write_random_t2i_adapter(cn_dir / "t2i.safetensors", tiny_t2i_config("full"), seed=3)
    _write_diff_controlnet(cn_dir / "cn_diff.safetensors", ckpt, cn_dir / "cn.safetensors")
    rgb = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    h.folders.input.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rgb).save(h.folders.input / "hint.png")
    h.registry.register("TestCapture", Capture)
    yield h
    h.close()


def _write_diff_controlnet(path, checkpoint, full_path):
    """The full ControlNet as a diff file: weights minus the base UNet's same-named weights + `difference`."""
    unet = load_checkpoint(checkpoint).unet.state_dict()
    with load_state_dict(full_path) as source:
        state = {k: source[k].clone() for k in source.shapes()}
    for key, value in state.items():
        name = key.removeprefix("control_model.")
        if name in unet and unet[name].shape == value.shape:
            state[key] = value - unet[name]
    state["difference"] = torch.zeros(())
    save_file(state, path)


@pytest.fixture
def harness(harness_module):
    h = harness_module
    services.install(h.services)
    h.engine.clear_cache()
    Capture.seen = []
    yield h
    services.install(None)


def prompt(*, controls=(), cfg=7.0, old_apply=False, sampler_node=None):
    """controls: (file, strength, start, end) applied in order (stacked)."""
    p = {
        "4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": CKPT}},
        "5": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}},
        "6": {"class_type": "CLIPTextEncode", "inputs": {"text": "a cat", "clip": ["4", 1]}},
        "7": {"class_type": "CLIPTextEncode", "inputs": {"text": "blurry", "clip": ["4", 1]}},
        "10": {"class_type": "LoadImage", "inputs": {"image": "hint.png"}},
    }
    positive, negative = ["6", 0], ["7", 0]
    for n, (name, strength, start, end) in enumerate(controls):
        loader, apply = f"2{n}", f"3{n}"
        p[loader] = {"class_type": "ControlNetLoader", "inputs": {"control_net_name": name}}
        if name.startswith("cn_diff"):
            p[loader] = {"class_type": "DiffControlNetLoader", "inputs": {"model": ["4", 0], "control_net_name": name}}
        if old_apply:
            p[apply] = {"class_type": "ControlNetApply", "inputs": {"conditioning": positive, "control_net": [loader, 0],
                                                                    "image": ["10", 0], "strength": strength}}
            positive = [apply, 0]
        else:
            p[apply] = {"class_type": "ControlNetApplyAdvanced",
                        "inputs": {"positive": positive, "negative": negative, "control_net": [loader, 0],
                                   "image": ["10", 0], "strength": strength, "start_percent": start,
                                   "end_percent": end}}
            positive, negative = [apply, 0], [apply, 1]
    p["3"] = sampler_node or {"class_type": "KSampler", "inputs": {
        "seed": 5, "steps": STEPS, "cfg": cfg, "sampler_name": "euler", "scheduler": "normal", "denoise": 1.0,
        "model": ["4", 0], "latent_image": ["5", 0]}}
    p["3"]["inputs"].update(positive=positive, negative=negative)
    p["99"] = {"class_type": "TestCapture", "inputs": {"value": ["3", 0]}}
    return p


def sampled(h: Harness, p: dict) -> torch.Tensor:
    Capture.seen = []
    result = h.run(p)
    assert result.status == "success", result.error
    return Capture.seen[-1]["samples"]


@pytest.fixture
def control_calls(monkeypatch):
    """The batch size of every ControlNet forward."""
    calls: list[int] = []
    original = ControlNet.forward

    def counting(self, x, *args, **kwargs):
        calls.append(x.shape[0])
        return original(self, x, *args, **kwargs)
    monkeypatch.setattr(ControlNet, "forward", counting)
    return calls


def test_strength_zero_is_exactly_no_controlnet_and_strength_one_changes_the_image(harness):
    plain = sampled(harness, prompt())
    assert torch.equal(sampled(harness, prompt(controls=[("cn.safetensors", 0.0, 0.0, 1.0)])), plain)
    controlled = sampled(harness, prompt(controls=[("cn.safetensors", 1.0, 0.0, 1.0)]))
    assert (controlled - plain).abs().max() > 1e-3


def test_original_and_diffusers_layouts_give_the_same_latent(harness):
    a = sampled(harness, prompt(controls=[("cn.safetensors", 0.8, 0.0, 1.0)]))
    b = sampled(harness, prompt(controls=[("cn_diffusers.safetensors", 0.8, 0.0, 1.0)]))
    torch.testing.assert_close(a, b, atol=1e-5, rtol=0)


def test_diff_controlnet_adds_the_base_model_weights(harness):
    p = prompt(controls=[("cn_diff.safetensors", 1.0, 0.0, 1.0)])
    p["98"] = {"class_type": "TestCapture", "inputs": {"value": ["20", 0]}}
    p["97"] = {"class_type": "ControlNetLoader", "inputs": {"control_net_name": "cn.safetensors"}}
    p["96"] = {"class_type": "TestCapture", "inputs": {"value": ["97", 0]}}
    result = harness.run(p)
    assert result.status == "success", result.error
    diff, full = [v for v in Capture.seen if not isinstance(v, dict)]
    if diff.model.info.is_diff is False:
        diff, full = full, diff
    assert diff.model.info.is_diff and not full.model.info.is_diff
    got, expected = diff.model.module.state_dict(), full.model.module.state_dict()
    assert got.keys() == expected.keys()
    assert max((got[k] - expected[k]).abs().max().item() for k in got) < 1e-6      # (w - base) + base


def test_a_diff_controlnet_without_a_model_is_refused(harness):
    result = harness.run(prompt(controls=[("cn.safetensors", 1.0, 0.0, 1.0)]) | {
        "20": {"class_type": "ControlNetLoader", "inputs": {"control_net_name": "cn_diff.safetensors"}}})
    assert result.status == "error" and "DiffControlNetLoader" in str(result.error)


def test_the_cfg_pair_runs_through_the_controlnet_in_one_batch(harness, control_calls):
    sampled(harness, prompt(controls=[("cn.safetensors", 1.0, 0.0, 1.0)]))
    assert control_calls == [2] * STEPS


def test_old_apply_node_copies_the_control_onto_the_negative(harness, control_calls):
    old = sampled(harness, prompt(controls=[("cn.safetensors", 0.7, 0.0, 1.0)], old_apply=True))
    assert control_calls == [2] * STEPS                 # positive and negative share it, batched
    new = sampled(harness, prompt(controls=[("cn.safetensors", 0.7, 0.0, 1.0)]))
    torch.testing.assert_close(old, new, atol=1e-6, rtol=0)


def test_a_window_runs_the_controlnet_only_on_its_steps(harness, control_calls):
    from diffusion.loading import model_sampling_for
    from sampling.schedules import calculate_sigmas
    from models.detection import detect
    with load_state_dict(harness.folders.paths("checkpoints")[0] / CKPT) as source:
        ms = model_sampling_for(detect(source.shapes()))
    sigmas = calculate_sigmas(ms, "normal", STEPS)[:-1]
    start, end = ms.percent_to_sigma(0.5), ms.percent_to_sigma(1.0)
    active = [bool(end <= float(s) <= start) for s in sigmas]
    assert 0 < sum(active) < STEPS
    sampled(harness, prompt(controls=[("cn.safetensors", 1.0, 0.5, 1.0)]))
    assert len(control_calls) == sum(active)
    # the steps before the window are those of the plain run
    first = active.index(True)
    advanced = {"class_type": "KSamplerAdvanced", "inputs": {
        "add_noise": "enable", "noise_seed": 5, "steps": STEPS, "cfg": 7.0, "sampler_name": "euler",
        "scheduler": "normal", "model": ["4", 0], "latent_image": ["5", 0], "start_at_step": 0,
        "end_at_step": first, "return_with_leftover_noise": "enable"}}
    windowed = sampled(harness, prompt(controls=[("cn.safetensors", 1.0, 0.5, 1.0)], sampler_node=advanced))
    plain = sampled(harness, prompt(sampler_node={**advanced, "inputs": dict(advanced["inputs"])}))
    assert torch.equal(windowed, plain)
    whole = sampled(harness, prompt(controls=[("cn.safetensors", 1.0, 0.5, 1.0)]))
    assert (whole - sampled(harness, prompt())).abs().max() > 1e-3


def test_two_stacked_controlnets_and_a_t2i_adapter(harness, control_calls):
    plain = sampled(harness, prompt())
    one = sampled(harness, prompt(controls=[("cn.safetensors", 1.0, 0.0, 1.0)]))
    two = sampled(harness, prompt(controls=[("cn.safetensors", 1.0, 0.0, 1.0), ("cn_bare.safetensors", 1.0, 0.0, 1.0)]))
    assert len(control_calls) == 3 * STEPS
    assert (two - one).abs().max() > 1e-3
    t2i = sampled(harness, prompt(controls=[("t2i.safetensors", 1.0, 0.0, 1.0)]))
    assert (t2i - plain).abs().max() > 1e-3


def test_the_control_model_is_held_by_the_model_manager(harness):
    p = prompt(controls=[("cn.safetensors", 1.0, 0.0, 1.0)])
    p["98"] = {"class_type": "TestCapture", "inputs": {"value": ["20", 0]}}
    result = harness.run(p)
    assert result.status == "success", result.error
    (net,) = [v for v in Capture.seen if not isinstance(v, dict)]
    manager = services.current().model_manager()
    record = manager.record_of(net.model)
    assert record is not None and record.source_key.endswith("cn.safetensors")


def test_a_file_that_is_no_control_model_is_a_structured_error(harness):
    import shutil
    cn_dir = harness.folders.paths("controlnet")[0]
    shutil.copyfile(harness.folders.paths("checkpoints")[0] / CKPT, cn_dir / "not_a_controlnet.safetensors")
    result = harness.run(prompt(controls=[("not_a_controlnet.safetensors", 1.0, 0.0, 1.0)]))
    assert result.status == "error"
    assert result.error["node_type"] == "ControlNetLoader"
    assert "Not a ControlNet or T2I-Adapter" in result.error["exception_message"]


def test_canny_hint_workflow_runs_with_builtin_nodes_only(harness):
    """LoadImage -> Canny -> ControlNetApplyAdvanced -> KSampler: the edge map is the hint."""
    p = prompt(controls=[("cn.safetensors", 1.0, 0.0, 1.0)])
    p["13"] = {"class_type": "Canny", "inputs": {"image": ["10", 0], "low_threshold": 0.2, "high_threshold": 0.5}}
    p["30"]["inputs"]["image"] = ["13", 0]
    edges = sampled(harness, p)
    assert not torch.equal(edges, sampled(harness, prompt(controls=[("cn.safetensors", 1.0, 0.0, 1.0)])))



def _custom(p: dict, guider: dict) -> dict:
    """prompt() `p` sampled by SamplerCustomAdvanced (RandomNoise 5, euler, normal, STEPS) with `guider`."""
    p = {k: v for k, v in p.items() if k != "3"}
    p["41"] = guider
    p["40"] = {"class_type": "RandomNoise", "inputs": {"noise_seed": 5}}
    p["42"] = {"class_type": "KSamplerSelect", "inputs": {"sampler_name": "euler"}}
    p["43"] = {"class_type": "BasicScheduler", "inputs": {"model": ["4", 0], "scheduler": "normal", "steps": STEPS,
                                                         "denoise": 1.0}}
    p["3"] = {"class_type": "SamplerCustomAdvanced", "inputs": {"noise": ["40", 0], "guider": ["41", 0],
                                                               "sampler": ["42", 0], "sigmas": ["43", 0],
                                                               "latent_image": ["5", 0]}}
    return p


@pytest.mark.parametrize("guider", ["DualCFGGuider", "PerpNegGuider"])
def test_controlnet_through_guiders_with_their_own_denoiser(harness, guider, control_calls):
    """DualCFGGuider at cfg 1 / 1 (uncond + (middle - uncond) + (cond - middle) = cond) and PerpNegGuider at cfg 1
    with neg_scale 0 give the controlled positive alone: KSampler at cfg 1 with the same ControlNet."""
    controls = [("cn.safetensors", 0.9, 0.0, 1.0)]
    expected = sampled(harness, prompt(controls=controls, cfg=1.0))
    if guider == "DualCFGGuider":
        node = {"class_type": "DualCFGGuider", "inputs": {"model": ["4", 0], "cond1": ["30", 0], "cond2": ["7", 0],
                                                         "negative": ["30", 1], "cfg_conds": 1.0,
                                                         "cfg_cond2_negative": 1.0, "style": "regular"}}
    else:
        node = {"class_type": "PerpNegGuider", "inputs": {"model": ["4", 0], "positive": ["30", 0],
                                                         "negative": ["30", 1], "empty_conditioning": ["7", 0],
                                                         "cfg": 1.0, "neg_scale": 0.0}}
    control_calls.clear()
    got = sampled(harness, _custom(prompt(controls=controls), node))
    assert control_calls, "the ControlNet never ran"
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=1e-4)
    assert (got - sampled(harness, prompt(cfg=1.0))).abs().max() > 1e-3
