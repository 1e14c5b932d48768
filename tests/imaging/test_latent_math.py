"""imaging.latent_math against NumPy formulas: sums, the norm-preserving interpolation, concat/cut
bounds, batch indices, rebatching, and the two latent operations."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from imaging import latent_math


def _latent(seed: int, shape=(2, 4, 6, 5), **extra) -> dict:
    return {"samples": torch.randn(shape, generator=torch.Generator().manual_seed(seed)), **extra}


def test_add_subtract_multiply_and_the_input_is_untouched() -> None:
    a, b = _latent(0, noise_mask=torch.ones(1, 1, 8, 8)), _latent(1)
    before = a["samples"].clone()
    assert torch.equal(latent_math.add(a, b)["samples"], a["samples"] + b["samples"])
    assert torch.equal(latent_math.subtract(a, b)["samples"], a["samples"] - b["samples"])
    assert torch.equal(latent_math.multiply(a, -1.5)["samples"], a["samples"] * -1.5)
    assert "noise_mask" in latent_math.add(a, b) and torch.equal(a["samples"], before)


def test_add_resizes_and_repeats_the_second_latent() -> None:
    a, b = _latent(0), _latent(1, shape=(1, 4, 3, 5))
    out = latent_math.add(a, b)["samples"]
    assert out.shape == a["samples"].shape
    assert torch.allclose(out[0] - a["samples"][0], out[1] - a["samples"][1])


def test_interpolate_blends_directions_and_lengths_separately() -> None:
    a, b = _latent(2), _latent(3)
    ratio = 0.3
    x, y = a["samples"].numpy(), b["samples"].numpy()
    nx, ny = np.linalg.norm(x, axis=1, keepdims=True), np.linalg.norm(y, axis=1, keepdims=True)
    mixed = x / nx * ratio + y / ny * (1 - ratio)
    expected = mixed / np.linalg.norm(mixed, axis=1, keepdims=True) * (nx * ratio + ny * (1 - ratio))
    np.testing.assert_allclose(latent_math.interpolate(a, b, ratio)["samples"].numpy(), expected, rtol=1e-5, atol=1e-6)
    assert torch.allclose(latent_math.interpolate(a, b, 1.0)["samples"], a["samples"], atol=1e-6)


@pytest.mark.parametrize("dim,axis,first", [("x", -1, True), ("-x", -1, False), ("y", -2, True), ("-y", -2, False)])
def test_concat(dim: str, axis: int, first: bool) -> None:
    a, b = _latent(4), _latent(5, shape=(1, 4, 6, 5))
    out = latent_math.concat(a, b, dim)["samples"]
    parts = (a["samples"], b["samples"].repeat(2, 1, 1, 1))
    assert torch.equal(out, torch.cat(parts if first else parts[::-1], dim=axis))


@pytest.mark.parametrize("index,amount,expected", [(0, 2, slice(0, 2)), (3, 10, slice(3, 5)), (9, 1, slice(4, 5)),
                                                   (-2, 5, slice(3, 5)), (-9, 2, slice(0, 2))])
def test_cut_clamps_to_the_size(index: int, amount: int, expected: slice) -> None:
    a = _latent(6)
    assert torch.equal(latent_math.cut(a, "x", index, amount)["samples"], a["samples"][..., expected])
    assert latent_math.cut(a, "y", 0, 1)["samples"].shape == (2, 4, 1, 5)


def test_batch_and_seed_behavior() -> None:
    a, b = _latent(7, batch_index=[4, 5]), _latent(8, shape=(3, 4, 3, 3))
    out = latent_math.batch(a, b)
    assert out["samples"].shape == (5, 4, 6, 5) and out["batch_index"] == [4, 5, 0, 1, 2]
    assert latent_math.set_seed_behavior(out, "fixed")["batch_index"] == [4] * 5
    assert "batch_index" not in latent_math.set_seed_behavior(out, "random")
    assert "batch_index" in out


def test_rebatch_groups_items_of_one_size_and_keeps_indices_and_masks() -> None:
    masked = _latent(9, shape=(3, 4, 2, 2), noise_mask=torch.zeros(1, 1, 16, 16))
    plain = _latent(10, shape=(2, 4, 2, 2))
    other = _latent(11, shape=(1, 4, 3, 3))
    out = latent_math.rebatch([masked, plain, other], 2)
    assert [o["samples"].shape[0] for o in out] == [2, 2, 1, 1]
    assert [o["batch_index"] for o in out] == [[0, 1], [2, 3], [4], [0 + 5]]
    assert torch.equal(torch.cat([o["samples"] for o in out[:3]]), torch.cat((masked["samples"], plain["samples"])))
    assert "noise_mask" in out[0] and "noise_mask" in out[1] and "noise_mask" not in out[2]
    assert out[1]["noise_mask"][0].mean() == 0 and out[1]["noise_mask"][1].mean() == 1


def test_sharpen_operation_without_strength_is_the_identity_and_keeps_lengths() -> None:
    latent = _latent(12)["samples"]
    assert torch.allclose(latent_math.sharpen_operation(2, 1.0, 0.0)(latent=latent), latent, atol=1e-5)
    sharpened = latent_math.sharpen_operation(2, 1.0, 0.5)(latent=latent)
    assert sharpened.shape == latent.shape and not torch.allclose(sharpened, latent)


def test_tonemap_reinhard_maps_lengths_through_l_over_one_plus_l() -> None:
    x = _latent(13)["samples"].numpy().astype(np.float64)
    length = np.linalg.norm(x, axis=1, keepdims=True) + 1e-10
    top = (length.std(axis=(1, 2, 3), ddof=1, keepdims=True) * 5 + length.mean(axis=(1, 2, 3), keepdims=True)) * 2.0
    expected = x / length * (length / top / (1 + length / top)) * top
    out = latent_math.tonemap_reinhard_operation(2.0)(latent=torch.from_numpy(x).float())
    np.testing.assert_allclose(out.numpy(), expected, rtol=1e-4, atol=1e-6)
    applied = latent_math.apply_operation({"samples": torch.from_numpy(x).float()}, latent_math.tonemap_reinhard_operation(2.0))
    assert torch.allclose(applied["samples"], out)
