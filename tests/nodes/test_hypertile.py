"""HyperTile: the query tiling against einops' rearrangement (ComfyUI's pattern), its inverse, the choice of
tile counts, and the patched tiny SD1 UNet through the Engine (tiles on: another image; tiles too large to
cut: the unpatched image)."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from einops import rearrange

from diffusion.hypertile import HyperTilePatch, from_tiles, tile_count, to_tiles
from tests.nodes.test_builtin_diffusion import base_prompt, checkpoints, harness, run_ok, saved_pixels  # noqa: F401
from tests.nodes.test_builtin_diffusion import shared_harness  # noqa: F401 - fixture


@pytest.mark.parametrize("h,w,nh,nw", [(8, 8, 2, 2), (6, 10, 3, 2), (4, 12, 1, 4)])
def test_tiles_are_einops_pattern_and_invert(h, w, nh, nw) -> None:
    x = torch.randn(2, h * w, 5)
    tiled = to_tiles(x, h, w, nh, nw)
    torch.testing.assert_close(tiled, rearrange(x, "b (nh h nw w) c -> (b nh nw) (h w) c",
                                                h=h // nh, w=w // nw, nh=nh, nw=nw))
    torch.testing.assert_close(from_tiles(tiled, h, w, nh, nw), x)


def test_tile_counts_come_from_the_divisors_above_the_minimum_tile() -> None:
    g = torch.Generator().manual_seed(0)
    assert tile_count(64, 16, 1, g) == 4                      # divisors >= 16: 16, 32, 64 -> 4, 2, 1 tiles
    # ComfyUI draws randint(0, len - 1), whose upper end is exclusive: the last choice is never taken
    assert {tile_count(64, 16, 2, g) for _ in range(40)} == {4}
    assert {tile_count(64, 16, 3, g) for _ in range(40)} == {4, 2}
    assert tile_count(12, 32, 3, g) == 1                      # smaller than a tile: min(32, 12) = 12 -> 1
    assert tile_count(10, 3, 1, g) == 2                       # 10 = 2 x 5


def test_the_patch_tiles_only_blocks_at_the_chosen_depths_and_undoes_it() -> None:
    patch = HyperTilePatch(tile_size=32, swap_size=1, max_depth=0, scale_depth=False)
    options = {"original_shape": [1, 4, 16, 16]}
    q = torch.randn(1, 256, 8)
    tq, k, v = patch.tile_in(q, q, q, options)
    assert tq.shape == (16, 16, 8) and k is q and v is q      # 16 rows = 4 tiles of 32 // 8 = 4: 4 x 4 tiles
    torch.testing.assert_close(patch.tile_out(tq, options), q)
    deeper = torch.randn(1, 64, 8)                             # a half-resolution block: depth 1 > max_depth 0
    assert patch.tile_in(deeper, deeper, deeper, options)[0] is deeper
    assert patch.tile_out(deeper, options) is deeper


def test_hypertile_on_the_tiny_unet(harness):  # noqa: F811
    base = saved_pixels(harness, run_ok(harness, base_prompt(steps=2, width=64, height=64)))[0]
    prompt = base_prompt(steps=2, width=64, height=64)
    prompt["30"] = {"class_type": "HyperTile", "inputs": {"model": ["4", 0], "tile_size": 32, "swap_size": 1,
                                                         "max_depth": 1, "scale_depth": False}}
    prompt["3"]["inputs"]["model"] = ["30", 0]
    tiled = saved_pixels(harness, run_ok(harness, prompt))[0]
    assert tiled.shape == base.shape and not np.array_equal(tiled, base)
    prompt["30"]["inputs"]["tile_size"] = 2048                 # tiles bigger than the latent: nothing is cut
    harness.engine.clear_cache()
    assert np.array_equal(saved_pixels(harness, run_ok(harness, prompt))[0], base)
