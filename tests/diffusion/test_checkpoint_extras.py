"""CheckpointLoader (the deprecated loader with an LDM config), ImageOnlyCheckpointSave (MODEL + CLIP_VISION +
VAE in one file) and LatentApplyOperationCFG, through the real Engine on tiny random-weight files."""
from __future__ import annotations

import pytest
import torch

from execution.errors import PlexusError
from model_management import MemorySettings
from models.convert.clip_vision import hf_to_open_clip, open_clip_to_hf
from models.files import load_state_dict
from models.testing_vision import tiny_clip_vision_config, write_random_clip_vision, write_unclip_checkpoint
from nodes import services
from sampling.guidance import CfgArgs
from sampling.model_sampling import Eps, VPrediction
from storage.ldm_config import LdmSettings, read_ldm_config
from tests.diffusion.helpers import TINY_VAE, write_tiny
from tests.nodes.engine_harness import Capture, Harness, installed

TINY = "tiny-sd15.safetensors"
UNCLIP = "tiny-unclip.safetensors"
VISION = tiny_clip_vision_config()

V_CONFIG = """model:
  base_learning_rate: 1.0e-04
  target: ldm.models.diffusion.ddpm.LatentDiffusion
  params:
    parameterization: "v"
    linear_start: 0.00085
    cond_stage_config:
      target: ldm.modules.encoders.modules.FrozenOpenCLIPEmbedder
      params:
        freeze: True
        layer: "penultimate"
"""
CLIP_SKIP_CONFIG = """model:
  params:
    linear_start: 0.00085
    cond_stage_config:
      target: ldm.modules.encoders.modules.FrozenCLIPEmbedder
      params:
        layer_idx: -2
"""
PLAIN_CONFIG = "model:\n  params:\n    linear_start: 0.00085\n"


def _write(folder, name: str, text: str):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_text(text, encoding="utf-8")
    return folder / name


# -- the config reader ---------------------------------------------------------------------------------


def test_config_settings_are_the_two_comfyui_reads(tmp_path) -> None:
    assert read_ldm_config(_write(tmp_path, "v.yaml", V_CONFIG)) == LdmSettings(v_prediction=True, clip_layer=None)
    assert read_ldm_config(_write(tmp_path, "skip.yaml", CLIP_SKIP_CONFIG)) == LdmSettings(False, -2)
    assert read_ldm_config(_write(tmp_path, "plain.yaml", PLAIN_CONFIG)) == LdmSettings(False, None)
    eps = _write(tmp_path, "eps.yaml", PLAIN_CONFIG + '    parameterization: "eps"\n')
    assert read_ldm_config(eps) == LdmSettings(False, None)      # only "v" changes the model


@pytest.mark.parametrize("text, reason", [
    ("model: [unclosed", "not a readable YAML file"),
    ("just a string", "not an LDM inference config"),
    ("model:\n  target: x\n", "not an LDM inference config"),
    ("model:\n  params:\n    cond_stage_config:\n      params:\n        layer_idx: two\n", "layer_idx must be"),
    ("model:\n  params:\n    cond_stage_config:\n      params:\n        layer_idx: 3\n", "layer_idx must be"),
    ("!!python/object/apply:os.system ['true']", "not a readable YAML file"),    # safe_load: no code
])
def test_bad_configs_are_refused_naming_the_file(tmp_path, text, reason) -> None:
    with pytest.raises(PlexusError, match=reason) as caught:
        read_ldm_config(_write(tmp_path, "bad.yaml", text))
    assert "bad.yaml" in caught.value.message


# -- through the engine ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def harness_module(tmp_path_factory):
    h = Harness(tmp_path_factory.mktemp("base"))
    h.services = services.NodeServices(h.folders, settings=MemorySettings(force_fp32=True))
    checkpoints = h.folders.paths("checkpoints")[0]
    checkpoints.mkdir(parents=True, exist_ok=True)
    write_tiny(checkpoints / TINY)
    write_unclip_checkpoint(checkpoints / UNCLIP, VISION, TINY_VAE, seed=3)
    configs = h.folders.paths("configs")[0]
    _write(configs, "v2-inference-v.yaml", V_CONFIG)
    _write(configs, "v1-inference_clip_skip_2.yaml", CLIP_SKIP_CONFIG)
    _write(configs, "v1-inference.yaml", PLAIN_CONFIG)
    vision_dir = h.folders.paths("clip_vision")[0]
    vision_dir.mkdir(parents=True, exist_ok=True)
    write_random_clip_vision(vision_dir / "vit-hf.safetensors", VISION, layout="hf", seed=4)
    h.registry.register("TestCapture", Capture)
    yield h
    h.close()


@pytest.fixture
def harness(harness_module):
    yield from installed(harness_module)


def _captured(h, prompt: dict, node: str, slot: int = 0):
    prompt = {**prompt, "99": {"class_type": "TestCapture", "inputs": {"value": [node, slot]}}}
    result = h.run(prompt)
    assert result.status == "success", result.error
    return Capture.seen[-1]


def _loaded(h, config: str | None, slot: int):
    if config is None:
        loader = {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": TINY}}
    else:
        loader = {"class_type": "CheckpointLoader", "inputs": {"config_name": config, "ckpt_name": TINY}}
    return _captured(h, {"1": loader}, "1", slot)


def test_checkpoint_loader_applies_the_config_to_the_tensors_model(harness) -> None:
    simple_model, simple_clip = _loaded(harness, None, 0), _loaded(harness, None, 1)
    assert isinstance(simple_model.model_sampling.prediction, Eps)
    v_model = _loaded(harness, "v2-inference-v.yaml", 0)
    assert isinstance(v_model.model_sampling.prediction, VPrediction)
    assert v_model.shared is simple_model.shared                       # the same weights, a patched clone
    torch.testing.assert_close(v_model.model_sampling.sigmas, simple_model.model_sampling.sigmas)
    skip_clip = _loaded(harness, "v1-inference_clip_skip_2.yaml", 1)
    assert skip_clip.clip_skip == -2 and getattr(simple_clip, "clip_skip", None) != -2
    plain_model, plain_clip = _loaded(harness, "v1-inference.yaml", 0), _loaded(harness, "v1-inference.yaml", 1)
    assert isinstance(plain_model.model_sampling.prediction, Eps)
    assert plain_clip.clip_skip == simple_clip.clip_skip


def test_checkpoint_loader_clip_skip_encodes_like_clip_set_last_layer(harness) -> None:
    def encode(clip_source):
        prompt = {"1": {"class_type": "CheckpointLoader", "inputs": {"config_name": "v1-inference_clip_skip_2.yaml",
                                                                     "ckpt_name": TINY}},
                  "2": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": TINY}},
                  "3": {"class_type": "CLIPSetLastLayer", "inputs": {"clip": ["2", 1], "stop_at_clip_layer": -2}},
                  "4": {"class_type": "CLIPTextEncode", "inputs": {"text": "a red fox", "clip": clip_source}}}
        return _captured(harness, prompt, "4")[0][0]
    with_config, with_node = encode(["1", 1]), encode(["3", 0])
    assert torch.equal(with_config, with_node)
    plain = _captured(harness, {"2": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": TINY}},
                                "4": {"class_type": "CLIPTextEncode", "inputs": {"text": "a red fox",
                                                                                 "clip": ["2", 1]}}}, "4")[0][0]
    assert (plain - with_config).abs().max() > 1e-4


def test_image_only_checkpoint_save_writes_unet_vae_and_the_vision_tower(harness) -> None:
    prompt = {"1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": TINY}},
              "2": {"class_type": "CLIPVisionLoader", "inputs": {"clip_name": "vit-hf.safetensors"}},
              "3": {"class_type": "ImageOnlyCheckpointSave", "inputs": {
                  "model": ["1", 0], "clip_vision": ["2", 0], "vae": ["1", 2], "filename_prefix": "checkpoints/io"}}}
    result = harness.run(prompt)
    assert result.status == "success", result.error
    [saved] = list((harness.folders.output / "checkpoints").glob("io_*.safetensors"))
    source = harness.folders.paths("checkpoints")[0] / TINY
    vision_file = harness.folders.paths("clip_vision")[0] / "vit-hf.safetensors"
    with load_state_dict(saved) as out, load_state_dict(source) as original, load_state_dict(vision_file) as tower:
        keys = set(out.keys())
        unet_vae = {k for k in original.keys() if k.startswith(("model.diffusion_model.", "first_stage_model."))}
        vision = {k for k in tower.keys() if not k.endswith("position_ids")}
        assert keys == unet_vae | vision                                 # no text encoder; tower at the top level
        assert all(torch.equal(out[k], original[k]) for k in unet_vae)
        assert all(torch.equal(out[k], tower[k]) for k in vision)
        assert "prompt" in out.metadata


def test_image_only_checkpoint_save_of_unclip_keeps_the_openclip_tower_layout(harness) -> None:
    prompt = {"1": {"class_type": "unCLIPCheckpointLoader", "inputs": {"ckpt_name": UNCLIP}},
              "3": {"class_type": "ImageOnlyCheckpointSave", "inputs": {
                  "model": ["1", 0], "clip_vision": ["1", 3], "vae": ["1", 2], "filename_prefix": "checkpoints/un"}}}
    result = harness.run(prompt)
    assert result.status == "success", result.error
    [saved] = list((harness.folders.output / "checkpoints").glob("un_*.safetensors"))
    source = harness.folders.paths("checkpoints")[0] / UNCLIP
    with load_state_dict(saved) as out, load_state_dict(source) as original:
        tower = {k for k in original.keys() if k.startswith("embedder.model.visual.")}
        assert tower and tower <= set(out.keys())
        assert all(torch.equal(out[k], original[k]) for k in tower)     # the original unCLIP layout, exactly
        assert not any(k.startswith("cond_stage_model.") for k in out.keys())


def test_hf_to_open_clip_inverts_open_clip_to_hf() -> None:
    from models.testing_vision import random_clip_vision_state
    hf = random_clip_vision_state(VISION, 7)
    hf = {k: v for k, v in hf.items() if not k.endswith("position_ids")}
    back = open_clip_to_hf(hf_to_open_clip(hf, "visual."), "visual.")
    assert back.keys() == hf.keys() and all(torch.equal(back[k], hf[k]) for k in hf)
    with pytest.raises(Exception, match="no OpenCLIP name"):
        hf_to_open_clip({**hf, "vision_model.head.probe": torch.zeros(1)}, "visual.")


# -- LatentApplyOperationCFG ------------------------------------------------------------------------------


def test_latent_operation_cfg_moves_the_guidance_direction_through_the_operation() -> None:
    """ComfyUI's pre-CFG function: cond_x0 <- uncond_x0 + operation(cond_x0 - uncond_x0)."""
    from diffusion.guidance_patches import with_latent_operation_cfg
    from diffusion.patch_api import guidance_functions
    model = with_latent_operation_cfg(_FakeModel(), lambda latent, **_: latent * 3.0 + 1.0)
    _, _, pre = guidance_functions(model)
    g = torch.Generator().manual_seed(0)
    cond, uncond, x = (torch.randn(1, 4, 8, 8, generator=g) for _ in range(3))
    new_cond, new_uncond = pre[-1](CfgArgs(x, torch.ones(1), cond, uncond, 5.0))
    torch.testing.assert_close(new_cond, uncond + (cond - uncond) * 3.0 + 1.0)
    assert new_uncond is uncond


class _FakeModel:
    """The part of DiffusionModel the patch helpers touch: clone() and options."""

    def __init__(self, options=None):
        self.options = dict(options or {})

    def clone(self):
        return _FakeModel(self.options)

    def add_pre_cfg_function(self, fn) -> None:
        self.options["pre_cfg_functions"] = tuple(self.options.get("pre_cfg_functions", ())) + (fn,)


def test_latent_apply_operation_cfg_through_ksampler(harness) -> None:
    def sample(alpha: float | None):
        prompt = {"1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": TINY}},
                  "5": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}},
                  "6": {"class_type": "CLIPTextEncode", "inputs": {"text": "a cat", "clip": ["1", 1]}},
                  "7": {"class_type": "CLIPTextEncode", "inputs": {"text": "", "clip": ["1", 1]}}}
        model = ["1", 0]
        if alpha is not None:
            prompt["8"] = {"class_type": "LatentOperationSharpen",
                           "inputs": {"sharpen_radius": 3, "sigma": 1.0, "alpha": alpha}}
            prompt["9"] = {"class_type": "LatentApplyOperationCFG", "inputs": {"model": model, "operation": ["8", 0]}}
            model = ["9", 0]
        prompt["3"] = {"class_type": "KSampler", "inputs": {
            "seed": 4, "steps": 2, "cfg": 4.0, "sampler_name": "euler", "scheduler": "normal", "denoise": 1.0,
            "model": model, "positive": ["6", 0], "negative": ["7", 0], "latent_image": ["5", 0]}}
        return _captured(harness, prompt, "3")["samples"]
    plain = sample(None)
    torch.testing.assert_close(sample(0.0), plain, atol=1e-5, rtol=0)   # sharpen with alpha 0 is the identity
    assert (sample(2.0) - plain).abs().max() > 1e-3


def test_image_only_checkpoint_loader_reads_back_what_image_only_checkpoint_save_wrote(harness) -> None:
    """unCLIP checkpoint -> ImageOnlyCheckpointSave -> ImageOnlyCheckpointLoader gives the same UNet, VAE and
    vision tower weights as unCLIPCheckpointLoader of the original (and the loader needs no text encoder)."""
    prompt = {"1": {"class_type": "unCLIPCheckpointLoader", "inputs": {"ckpt_name": UNCLIP}},
              "3": {"class_type": "ImageOnlyCheckpointSave", "inputs": {
                  "model": ["1", 0], "clip_vision": ["1", 3], "vae": ["1", 2], "filename_prefix": "checkpoints/rt"}}}
    result = harness.run(prompt)
    assert result.status == "success", result.error
    [saved] = list((harness.folders.output / "checkpoints").glob("rt_*.safetensors"))
    target = harness.folders.paths("checkpoints")[0] / "rt-read-back.safetensors"
    target.write_bytes(saved.read_bytes())
    loaded = {"1": {"class_type": "ImageOnlyCheckpointLoader", "inputs": {"ckpt_name": target.name}}}
    original = {"1": {"class_type": "unCLIPCheckpointLoader", "inputs": {"ckpt_name": UNCLIP}}}
    for slot, original_slot in ((0, 0), (1, 3), (2, 2)):
        read_back = _captured(harness, loaded, "1", slot)
        reference = _captured(harness, original, "1", original_slot)
        assert read_back is not None and type(read_back) is type(reference)
        mine, theirs = _module_state(read_back), _module_state(reference)
        assert mine.keys() == theirs.keys() and mine
        assert all(torch.equal(mine[k], theirs[k]) for k in mine)


def _module_state(handle) -> dict:
    module = getattr(handle, "module", None)
    if module is None:
        module = handle.shared.module
    return {k: v.detach() for k, v in module.state_dict().items()}
