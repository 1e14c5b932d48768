"""Model / CLIP merges as copy-on-write patches, and the part savers, on two tiny random-weight SD1.5
checkpoints (different seeds) in the real layout: per-key formulas, the manager's load (weights merged,
base tensors untouched), sampling at the end ratios, and files that load back."""
from __future__ import annotations

import pytest
import torch
from safetensors import safe_open

from diffusion import conditioning, ksampler, loading, merging, saving, saving_parts
from model_management import MemorySettings, ModelManager
from models.testing import CheckpointSpec, tiny_unet_config, write_random_checkpoint
from tests.diffusion.helpers import TINY_VAE


@pytest.fixture(scope="module")
def two(tmp_path_factory):
    root = tmp_path_factory.mktemp("merge")
    paths = [write_random_checkpoint(root / f"m{seed}.safetensors",
                                     CheckpointSpec("sd1", tiny_unet_config("sd1"), TINY_VAE, seed=seed))
             for seed in (1, 2)]
    manager = ModelManager(MemorySettings(force_fp32=True))
    return manager, [loading.load_checkpoint_file(p, manager) for p in paths]


def _home(handle, key):
    return handle.shared.weights.home[key].float()


def _merged_weight(handle, key):
    from model_management import apply_patches
    w = handle.shared.weights.home[key]
    return apply_patches(w, handle.patches[key], key) if key in handle.patches else w


KEYS = ["input_blocks.1.1.transformer_blocks.0.attn1.to_q.weight", "middle_block.0.in_layers.2.weight",
        "out.2.weight", "time_embed.0.weight", "output_blocks.3.0.skip_connection.weight"]


def test_weighted_merge_is_a_per_key_blend(two):
    _, ((m1, _, _), (m2, _, _)) = two
    merged = merging.merge_weighted(m1, m2, 0.3)
    assert not m1.patched_keys() and len(merged.patched_keys()) == len(m1.shared.weights.slots)
    for key in KEYS:
        torch.testing.assert_close(_merged_weight(merged, key), 0.3 * _home(m1, key) + 0.7 * _home(m2, key))
    assert not merging.merge_weighted(m1, m2, 1.0).patched_keys()       # all of model1: nothing to patch


def test_merge_patches_hold_no_weights(two):
    _, ((m1, _, _), (m2, _, _)) = two
    merged = merging.merge_weighted(m1, m2, 0.5)
    for patches in merged.patches.values():
        assert not any(isinstance(v, torch.Tensor) for v in vars(patches[-1].fn).values())


def test_block_merge_takes_the_longest_matching_prefix(two):
    _, ((m1, _, _), (m2, _, _)) = two
    ratios = {"input": 0.2, "middle": 0.5, "out": 0.9, "output_blocks.3.": 0.0}
    merged = merging.merge_by_blocks(m1, m2, ratios)
    expected = {KEYS[0]: 0.2, KEYS[1]: 0.5, KEYS[2]: 0.9, KEYS[3]: 0.2, KEYS[4]: 0.0}   # time_embed: the first
    for key, r in expected.items():
        torch.testing.assert_close(_merged_weight(merged, key), r * _home(m1, key) + (1 - r) * _home(m2, key))


def test_add_and_subtract(two):
    _, ((m1, _, _), (m2, _, _)) = two
    added, diff = merging.merge_add(m1, m2), merging.merge_subtract(m1, m2, 0.7)
    for key in KEYS[:3]:
        torch.testing.assert_close(_merged_weight(added, key), _home(m1, key) + _home(m2, key))
        torch.testing.assert_close(_merged_weight(diff, key), 0.7 * (_home(m1, key) - _home(m2, key)))


def test_the_second_models_own_patches_are_part_of_its_weights(two):
    _, ((m1, _, _), (m2, _, _)) = two
    key = KEYS[0]
    doubled = m2.clone()
    doubled.add_patches({key: lambda w: w * 2.0})
    merged = merging.merge_weighted(m1, doubled, 0.5)
    torch.testing.assert_close(_merged_weight(merged, key), 0.5 * _home(m1, key) + _home(m2, key))


def test_manager_loads_the_merge_and_leaves_both_bases_untouched(two):
    manager, ((m1, _, _), (m2, _, _)) = two
    key = KEYS[1]
    before1, before2 = _home(m1, key).clone(), _home(m2, key).clone()
    merged = merging.merge_weighted(m1, m2, 0.25)
    manager.load_models_for([merged])
    torch.testing.assert_close(merged.shared.weights.current(key).float(), 0.25 * before1 + 0.75 * before2)
    manager.unload(merged)
    assert torch.equal(_home(m1, key), before1) and torch.equal(_home(m2, key), before2)


def _sample(model, clip):
    pos, neg = conditioning.encode_text(clip, "a cat"), conditioning.encode_text(clip, "a dog")
    return ksampler.ksample(model, {"samples": torch.zeros(1, 4, 8, 8)}, pos, neg, seed=4, steps=2, cfg=4.0,
                            sampler_name="euler", scheduler="normal")["samples"]


def test_sampling_a_merge_at_the_end_ratios_gives_each_models_image(two):
    _, ((m1, c1, _), (m2, _, _)) = two
    torch.testing.assert_close(_sample(merging.merge_weighted(m1, m2, 0.0), c1), _sample(m2, c1), rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(_sample(merging.merge_weighted(m1, m2, 1.0), c1), _sample(m1, c1))
    half = _sample(merging.merge_weighted(m1, m2, 0.5), c1)
    assert not torch.allclose(half, _sample(m1, c1), atol=1e-3)


def test_clip_merge(two):
    _, ((_, c1, _), (_, c2, _)) = two
    enc = lambda clip: conditioning.encode_text(clip, "a red cat")[0][0]
    torch.testing.assert_close(enc(merging.merge_weighted(c1, c2, 0.0, is_clip=True)), enc(c2), rtol=1e-4, atol=1e-4)
    key = next(iter(c1.shared.weights.slots))
    merged = merging.merge_add(c1, c2, is_clip=True)
    torch.testing.assert_close(_merged_weight(merged, key), _home(c1, key) + _home(c2, key))


# --- saving -----------------------------------------------------------------------------------------------

def test_model_save_writes_the_merged_unet_that_unet_loader_reads(two, tmp_path):
    manager, ((m1, _, _), (m2, _, _)) = two
    merged = merging.merge_weighted(m1, m2, 0.4)
    path = saving_parts.save_model(tmp_path / "unet.safetensors", merged, prompt={"1": {}})
    with safe_open(str(path), "pt") as f:
        keys = list(f.keys())
        assert f.metadata()["prompt"] == '{"1": {}}'
    assert keys and all(k.startswith("model.diffusion_model.") for k in keys)
    loaded = loading.load_unet_file(path, manager)
    for key in KEYS:
        torch.testing.assert_close(_home(loaded, key), 0.4 * _home(m1, key) + 0.6 * _home(m2, key))


def test_vae_save_round_trip(two, tmp_path):
    manager, ((_, _, v1), _) = two
    path = saving_parts.save_vae(tmp_path / "vae.safetensors", v1)
    with safe_open(str(path), "pt") as f:
        assert "decoder.conv_in.weight" in f.keys() and not any(k.startswith("first_stage_model.") for k in f.keys())
    loaded = loading.load_vae_file(path, manager)
    for key in list(v1.shared.weights.slots)[:5]:
        torch.testing.assert_close(_home(loaded, key), _home(v1, key))


def test_clip_save_writes_each_tower_in_the_hf_layout(two, tmp_path):
    manager, ((_, c1, _), (_, c2, _)) = two
    merged = merging.merge_weighted(c1, c2, 0.5, is_clip=True)
    paths = saving_parts.save_clip(lambda tower: tmp_path / f"clip_{tower}.safetensors", merged)
    assert [p.name for p in paths] == ["clip_clip_l.safetensors"]
    with safe_open(str(paths[0]), "pt") as f:
        assert all(k.startswith("text_model.") for k in f.keys())
    loaded = loading.load_text_encoder_file(paths[0], manager)
    enc = lambda clip: conditioning.encode_text(clip, "a red cat")[0][0]
    torch.testing.assert_close(enc(loaded), enc(merged), rtol=1e-4, atol=1e-4)


def test_checkpoint_save_of_a_merge_loads_back_and_samples_the_same(two, tmp_path):
    manager, ((m1, c1, v1), (m2, _, _)) = two
    merged = merging.merge_weighted(m1, m2, 0.6)
    path = saving.save_checkpoint(tmp_path / "merged.safetensors", merged, c1, v1)
    m, c, _ = loading.load_checkpoint_file(path, manager)
    torch.testing.assert_close(_sample(m, c), _sample(merged, c1), rtol=1e-4, atol=1e-4)
