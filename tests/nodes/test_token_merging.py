"""TomePatchModel (token merging): the random 2-D partition, merge / unmerge against a brute-force
reference written here (best cosine match per source, the r most similar merged by averaging), and the
patched tiny SD1 UNet through the Engine."""
from __future__ import annotations

import numpy as np
import torch

from diffusion.token_merging import TokenMergingPatch, bipartite_merge, random_partition
from tests.nodes.test_builtin_diffusion import base_prompt, checkpoints, harness, run_ok, saved_pixels  # noqa: F401
from tests.nodes.test_builtin_diffusion import shared_harness  # noqa: F401 - fixture


def test_one_destination_per_two_by_two_cell() -> None:
    src, dst = random_partition(6, 5, torch.Generator().manual_seed(1))
    assert len(dst) == 3 * 2 and len(src) == 30 - 6
    assert sorted(torch.cat([src, dst]).tolist()) == list(range(30))
    cells = {(int(i) // 5 // 2, int(i) % 5 // 2) for i in dst}
    assert cells == {(r, c) for r in range(3) for c in range(2)}               # column 4 has no whole cell


def _reference(x: torch.Tensor, src: list[int], dst: list[int], r: int) -> torch.Tensor:
    """merge then unmerge, one sample, by loops: what every grid position holds afterwards."""
    unit = x / x.norm(dim=-1, keepdim=True)
    best = {s: max(dst, key=lambda d: float(unit[s] @ unit[d])) for s in src}
    similarity = {s: float(unit[s] @ unit[best[s]]) for s in src}
    merged = sorted(src, key=lambda s: -similarity[s])[:r]
    out = x.clone()
    for d in dst:
        group = [d] + [s for s in merged if best[s] == d]
        out[d] = x[group].mean(dim=0)
    for s in merged:
        out[s] = out[best[s]]
    return out


def test_merge_then_unmerge_matches_the_brute_force_reference() -> None:
    torch.manual_seed(0)
    x = torch.randn(2, 8 * 6, 5)
    merge = bipartite_merge(x, 8, 6, r=10, generator=torch.Generator().manual_seed(4))
    merged = merge.merge(x)
    assert merged.shape == (2, 48 - 10, 5)
    restored = merge.unmerge(merged)
    src, dst = merge.src.tolist(), merge.dst.tolist()
    for b in range(2):
        torch.testing.assert_close(restored[b], _reference(x[b], src, dst, 10))


def test_the_patch_merges_queries_only_at_full_resolution() -> None:
    patch = TokenMergingPatch(0.5)
    options = {"original_shape": [1, 4, 8, 8]}
    q = torch.randn(1, 64, 4)
    mq, k, v = patch.merge_queries(q, q, q, options)
    assert mq.shape == (1, 32, 4) and k is q and v is q
    assert patch.unmerge_output(mq, options).shape == (1, 64, 4)
    low = torch.randn(1, 16, 4)                                   # a 4 x 4 block: downsample 2, untouched
    assert patch.merge_queries(low, low, low, options)[0] is low and patch.unmerge_output(low, options) is low
    assert TokenMergingPatch(0.0).merge_queries(q, q, q, options)[0] is q


def test_token_merging_on_the_tiny_unet(harness):  # noqa: F811
    base = saved_pixels(harness, run_ok(harness, base_prompt(steps=2, width=64, height=64)))[0]
    prompt = base_prompt(steps=2, width=64, height=64)
    prompt["30"] = {"class_type": "TomePatchModel", "inputs": {"model": ["4", 0], "ratio": 0.5}}
    prompt["3"]["inputs"]["model"] = ["30", 0]
    merged = saved_pixels(harness, run_ok(harness, prompt))[0]
    assert merged.shape == base.shape and not np.array_equal(merged, base)
    prompt["30"]["inputs"]["ratio"] = 0.0
    harness.engine.clear_cache()
    assert np.array_equal(saved_pixels(harness, run_ok(harness, prompt))[0], base)
