"""The per-architecture block merges of the transformer families (ModelMergeFlux1 here, on two tiny FLUX
files through the real loader): each key takes the ratio of its longest matching block prefix."""
from __future__ import annotations

import pytest
import torch

from diffusion import flux
from model_management import MemorySettings, ModelManager, apply_patches
from models.testing import tiny_flux_config, write_random_flux
from nodes.builtin import merging as merge_nodes


@pytest.fixture(scope="module")
def two(tmp_path_factory):
    root = tmp_path_factory.mktemp("flux-merge")
    config = tiny_flux_config()
    paths = [write_random_flux(root / f"f{seed}.safetensors", config, seed=seed) for seed in (1, 2)]
    manager = ModelManager(MemorySettings(force_fp32=True))
    return [flux.load_diffusion_model_file(p, manager) for p in paths]


def _home(handle, key):
    return handle.shared.weights.home[key].float()


def _merged(handle, key):
    w = handle.shared.weights.home[key]
    return apply_patches(w, handle.patches[key], key) if key in handle.patches else w.float()


def _inputs(node_class) -> list[str]:
    return [name for name in node_class.INPUT_TYPES()["required"] if name not in ("model1", "model2")]


def test_flux1_block_names_are_the_module_key_prefixes(two):
    m1, _ = two
    keys = list(m1.shared.weights.slots)
    prefixes = _inputs(merge_nodes.ModelMergeFlux1)
    present = [p for p in prefixes if any(k.startswith(p) for k in keys)]
    # the tiny FLUX has 1 double and 2 single blocks; every one of its keys has a prefix
    assert {"img_in.", "time_in.", "guidance_in", "vector_in.", "txt_in.", "double_blocks.0.",
            "single_blocks.0.", "single_blocks.1.", "final_layer."} == set(present)
    assert all(any(k.startswith(p) for p in prefixes) for k in keys)


def test_flux1_merge_blends_each_block_with_its_own_ratio(two):
    m1, m2 = two
    ratios = {name: 1.0 for name in _inputs(merge_nodes.ModelMergeFlux1)}
    ratios.update({"double_blocks.0.": 0.25, "single_blocks.1.": 0.0, "img_in.": 0.6})
    (merged,) = merge_nodes.ModelMergeFlux1().run(m1, m2, **ratios)
    keys = list(m1.shared.weights.slots)
    checked = 0
    for key in keys:
        ratio = next((r for p, r in sorted(ratios.items(), key=lambda kv: -len(kv[0])) if key.startswith(p)), 1.0)
        expected = ratio * _home(m1, key) + (1 - ratio) * _home(m2, key)
        torch.testing.assert_close(_merged(merged, key), expected)
        checked += ratio != 1.0
    assert checked > 10
    # ratio 1 keys are not patched at all: model1's weights as they are
    assert all(not k.startswith(("single_blocks.0.", "final_layer.")) for k in merged.patched_keys())
    # "single_blocks.1." must not catch "single_blocks.10." etc.: prefixes end in a dot
    assert all(p.endswith(".") or p in ("guidance_in",) for p in _inputs(merge_nodes.ModelMergeFlux1))
