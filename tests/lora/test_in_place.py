"""LoRAs merged in place into converted weights, and taken off by rebuilding the base from the file.

On the CPU a fp16 checkpoint loads as a bf16 UNet and VAE: the model owns those converted tensors, so the
manager merges patches into them in place (no patched copy beside the base) and rebuilds the base values
from the file when the patches come off. The text encoder keeps the file's fp16 tensors (views of the mapped
file, cast to fp32 per use: models/text/encoder.py), so its patched weights are fp32 copies beside them. These tests go through the real loader
(diffusion.loading) and the real manager, and compare with formulas and with a fresh load.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
import torch

from diffusion.loading import forget_cached, load_checkpoint_file
from model_management import MemorySettings, ModelManager, ModelPart
from models.lora import apply_lora
from models.testing import CheckpointSpec, tiny_unet_config, tiny_vae_config, write_random_checkpoint
from tests.lora import makers
from tests.lora.test_patching import TE_TARGETS, UNET_TARGETS, targets_of

STACK_TE_TARGETS = {name: "towers.clip_l." + key for name, key in TE_TARGETS.items()}


@pytest.fixture
def fp16_checkpoint(tmp_path) -> Path:
    spec = CheckpointSpec("sd1", tiny_unet_config("sd1"), tiny_vae_config(), dtype=torch.float16, seed=5)
    return write_random_checkpoint(tmp_path / "half.safetensors", spec)


def cpu_manager() -> ModelManager:
    return ModelManager(MemorySettings(device="cpu", bf16_unet=True))     # bf16 UNet on any CPU


def state(handle) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in handle.module.state_dict().items()}


def homes(handle) -> dict[str, int]:
    return {k: t.data_ptr() for k, t in handle.shared.weights.home.items()}


def test_converted_weights_are_owned_and_the_text_encoder_views_the_file(fp16_checkpoint) -> None:
    manager = cpu_manager()
    model, clip, vae = load_checkpoint_file(fp16_checkpoint, manager)
    assert next(model.module.parameters()).dtype == torch.bfloat16
    assert next(vae.module.parameters()).dtype == manager.dtype_choices()[ModelPart.VAE].dtype
    for handle in (model, vae):
        rebuilder = handle.shared.weights.rebuilder
        assert rebuilder is not None and rebuilder.keys
    # fp16 weights computed in fp32 (the manager's choice), cast per use: nothing converted, nothing owned
    assert {p.dtype for p in clip.module.parameters()} == {torch.float16}
    assert clip.module.towers["clip_l"].dtype == manager.dtype_choices()[ModelPart.TEXT_ENCODER].dtype
    assert not clip.shared.weights.rebuilder.keys                     # nothing to patch in place
    assert set(clip.shared.weights.cast_per_use) == set(clip.shared.weights.slots)
    manager.load_models_for([clip])                                   # loaded as stored: no fp32 copies
    assert all(clip.shared.weights.current(k).data_ptr() == t.data_ptr()
               for k, t in clip.shared.weights.home.items())


def test_lora_merges_in_place_and_comes_off_bit_identical(fp16_checkpoint) -> None:
    manager = cpu_manager()
    model, clip, _ = load_checkpoint_file(fp16_checkpoint, manager)
    base_unet, base_clip = state(model), state(clip)
    unet_targets = targets_of(model.module, UNET_TARGETS)
    te_targets = {n: tuple(clip.module.state_dict()[k].shape) for n, k in STACK_TE_TARGETS.items()}
    torch.manual_seed(0)
    lora = {**makers.kohya_lora(unet_targets, alpha=4.0), **makers.kohya_lora(te_targets)}
    patched_model, patched_clip, _ = apply_lora(model, clip, lora, 0.8, -1.2, "a.safetensors")

    before = homes(model) | {("te", k): v for k, v in homes(clip).items()}
    manager.load_models_for([patched_model, patched_clip])
    after = homes(model) | {("te", k): v for k, v in homes(clip).items()}
    assert after == before                                           # the same tensors: merged in place
    record = manager.record_of(model)
    assert record.patched_in_place == {UNET_TARGETS[n] for n in unet_targets}
    for name, shape in unet_targets.items():
        key = UNET_TARGETS[name]
        expected = base_unet[key].double() + 0.8 * makers.expected_delta_lora(lora, name, shape)
        slot = model.module.state_dict()[key]
        assert slot.data_ptr() == model.shared.weights.home[key].data_ptr()
        torch.testing.assert_close(slot.double(), expected, atol=0.02, rtol=2 ** -7)   # bf16 rounding
    for name, shape in te_targets.items():
        key = STACK_TE_TARGETS[name]
        expected = base_clip[key].double() - 1.2 * makers.expected_delta_lora(lora, name, shape)
        torch.testing.assert_close(clip.module.state_dict()[key].double(), expected, atol=1e-5, rtol=1e-5)

    manager.load_models_for([model, clip])                           # the plain handles: patches come off
    assert not record.patched_in_place
    for key, value in state(model).items():
        assert torch.equal(value, base_unet[key]), key
    for key, value in state(clip).items():
        assert torch.equal(value, base_clip[key]), key


def test_strength_changes_and_alternating_graphs_match_fresh_loads(fp16_checkpoint) -> None:
    manager = cpu_manager()
    model, _, _ = load_checkpoint_file(fp16_checkpoint, manager)
    targets = targets_of(model.module, UNET_TARGETS)
    torch.manual_seed(1)
    lora = makers.kohya_lora(targets, rank=2)
    handles = {s: apply_lora(model, None, lora, s, 0.0, "l")[0] for s in (0.5, 1.0, -0.7)}
    handles[0.0] = model

    def weights_of(manager_, handle):
        manager_.load_models_for([handle])
        return state(handle)

    expected = {}
    for strength in handles:                   # each alone, on a fresh load through another manager
        fresh_manager = cpu_manager()
        fresh, _, _ = load_checkpoint_file(fp16_checkpoint, fresh_manager)
        alone = apply_lora(fresh, None, lora, strength, 0.0, "l")[0] if strength else fresh
        expected[strength] = weights_of(fresh_manager, alone)
        fresh_manager.free()
    for strength in (0.5, 1.0, 0.0, -0.7, 0.5, 0.0):
        got = weights_of(manager, handles[strength])
        for key in expected[strength]:
            assert torch.equal(got[key], expected[strength][key]), (strength, key)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the file is pinned through /proc/self/fd")
def loaded_with_a_lora(path: Path) -> tuple[ModelManager, object, dict[str, torch.Tensor]]:
    """(manager, plain MODEL, its base weights) with a LoRA'd clone loaded: merged in place."""
    manager = cpu_manager()
    model, _, _ = load_checkpoint_file(path, manager)
    base = state(model)
    lora = makers.kohya_lora(targets_of(model.module, UNET_TARGETS))
    manager.load_models_for([apply_lora(model, None, lora, 1.0, 0.0, "l")[0]])
    assert manager.record_of(model).patched_in_place
    return manager, model, base


def test_restoring_reads_the_file_as_loaded_even_after_it_is_deleted(fp16_checkpoint) -> None:
    manager, model, base = loaded_with_a_lora(fp16_checkpoint)
    os.remove(fp16_checkpoint)
    fp16_checkpoint.write_bytes(b"not a checkpoint any more")
    manager.load_models_for([model])
    assert all(torch.equal(v, base[k]) for k, v in state(model).items())


def test_a_failed_restore_drops_the_model_and_the_next_load_reads_it_again(fp16_checkpoint) -> None:
    manager, model, base = loaded_with_a_lora(fp16_checkpoint)

    def broken(outs):
        raise OSError("disk went away")
    model.shared.weights.rebuilder.restore = broken
    with pytest.raises(OSError, match="disk went away"):
        manager.load_models_for([model])
    assert model.shared.__dict__.get("is_dropped")                  # never computes with half-patched weights
    again, _, _ = load_checkpoint_file(fp16_checkpoint, manager)    # the loader's cache sees it dropped
    assert again.shared is not model.shared
    manager.load_models_for([again])
    assert all(torch.equal(v, base[k]) for k, v in state(again).items())
    forget_cached(manager)


def test_sd2_text_encoder_rebuilds_through_the_open_clip_conversion(tmp_path) -> None:
    # an fp32 file run in fp16: the towers are converted copies (a wider dtype would keep the file's views)
    spec = CheckpointSpec("sd2", tiny_unet_config("sd2"), tiny_vae_config(), dtype=torch.float32, seed=2)
    path = write_random_checkpoint(tmp_path / "sd2.safetensors", spec)
    manager = ModelManager(MemorySettings(device="cpu", force_fp16=True))
    _, clip, _ = load_checkpoint_file(path, manager)
    assert {p.dtype for p in clip.module.parameters()} == {torch.float16}
    base = state(clip)
    rebuilder = clip.shared.weights.rebuilder
    q = next(k for k in rebuilder.keys if k.endswith("self_attn.q_proj.weight"))       # a slice of in_proj
    proj = next(k for k in rebuilder.keys if k.endswith("text_projection.weight"))     # a transpose
    home = clip.shared.weights.home
    for key in (q, proj):
        home[key].add_(1.0)
    rebuilder.restore({q: home[q], proj: home[proj]})
    assert torch.equal(home[q], base[q]) and torch.equal(home[proj], base[proj])
