import math

import pytest
import torch

from imaging import latent_ops
from imaging.resize import bislerp, slerp, upscale


def latent(b=2, c=4, h=8, w=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    return {"samples": torch.randn(b, c, h, w, generator=g)}


def test_empty_latent_has_the_family_shape():
    out = latent_ops.empty(512, 256, 3)
    assert out["samples"].shape == (3, 4, 32, 64) and not out["samples"].any()
    assert latent_ops.empty(64, 64, 1, channels=16)["samples"].shape == (1, 16, 8, 8)


def test_from_batch_records_original_positions_and_clamps():
    src = latent(b=4)
    out = latent_ops.from_batch(src, 1, 2)
    assert torch.equal(out["samples"], src["samples"][1:3])
    assert out["batch_index"] == [1, 2]
    out = latent_ops.from_batch(src, 10, 5)          # clamped to the last item
    assert out["batch_index"] == [3] and out["samples"].shape[0] == 1
    again = latent_ops.from_batch(latent_ops.from_batch(src, 1, 3), 1, 1)
    assert again["batch_index"] == [2]


def test_repeat_batch_extends_batch_index():
    src = latent_ops.from_batch(latent(b=4), 1, 2)
    out = latent_ops.repeat_batch(src, 3)
    assert out["samples"].shape[0] == 6
    assert out["batch_index"] == [1, 2, 3, 4, 5, 6]
    assert torch.equal(out["samples"][4:], src["samples"])


def test_resize_keeps_aspect_when_one_side_is_zero():
    src = latent(h=8, w=16)
    out = latent_ops.resize_to(src, 0, 128, "nearest-exact", "disabled")
    assert out["samples"].shape[2:] == (16, 32)
    assert latent_ops.resize_to(src, 0, 0, "bilinear", "disabled") is src


def test_rescale_bilinear_matches_torch():
    src = latent()
    out = latent_ops.rescale(src, 1.5, "bilinear")
    ref = torch.nn.functional.interpolate(src["samples"], size=(12, 12), mode="bilinear")
    torch.testing.assert_close(out["samples"], ref)


def test_rotate_and_flip():
    src = latent()
    x = src["samples"]
    assert torch.equal(latent_ops.rotate(src, "180 degrees")["samples"], x.flip(2).flip(3))
    assert torch.equal(latent_ops.rotate(src, "none")["samples"], x)
    r90 = latent_ops.rotate(src, "90 degrees")["samples"]
    assert torch.equal(latent_ops.rotate({"samples": r90}, "270 degrees")["samples"], x)
    assert torch.equal(latent_ops.flip(src, "x-axis: vertically")["samples"], x.flip(2))
    assert torch.equal(latent_ops.flip(src, "y-axis: horizontally")["samples"], x.flip(3))


def test_crop_in_pixels():
    src = latent(h=16, w=16)
    out = latent_ops.crop(src, 64, 32, 16, 8)
    assert torch.equal(out["samples"], src["samples"][:, :, 1:5, 2:10])


def test_composite_without_feather_pastes_exactly():
    to, frm = latent(h=8, w=8, seed=1), latent(h=4, w=4, seed=2)
    out = latent_ops.composite(to, frm, 16, 8)["samples"]
    assert torch.equal(out[:, :, 1:5, 2:6], frm["samples"])
    outside = torch.ones(8, 8, dtype=torch.bool)
    outside[1:5, 2:6] = False
    assert torch.equal(out[:, :, outside], to["samples"][:, :, outside])


def test_composite_with_feather_blends_linearly_at_inner_edges():
    to, frm = {"samples": torch.zeros(1, 1, 8, 8)}, {"samples": torch.ones(1, 1, 4, 4)}
    out = latent_ops.composite(to, frm, 16, 16, feather=16)["samples"][0, 0]
    # feather of 2 cells: edge rows/cols get 1/2, the next 1 (all four sides are inner edges)
    assert out[2, 2].item() == pytest.approx(0.25)
    assert out[2, 3].item() == pytest.approx(0.5)
    assert out[3, 3].item() == pytest.approx(1.0)
    assert out[0, 0].item() == 0


def test_blend_formula_and_resize():
    a, b = latent(seed=3), latent(seed=4)
    out = latent_ops.blend(a, b, 0.3)["samples"]
    torch.testing.assert_close(out, a["samples"] * 0.3 + b["samples"] * 0.7)
    assert latent_ops.blend(a, latent(h=4, w=4), 0.5)["samples"].shape == a["samples"].shape


def test_noise_mask_shape():
    out = latent_ops.set_noise_mask(latent(), torch.ones(64, 64))
    assert out["noise_mask"].shape == (1, 1, 64, 64)


def test_slerp_keeps_norm_interpolation_and_direction_on_the_great_circle():
    a = torch.tensor([[1.0, 0.0]]).view(1, 2, 1)
    b = torch.tensor([[0.0, 3.0]]).view(1, 2, 1)
    mid = slerp(a, b, torch.tensor(0.5), dim=1).flatten()
    assert mid.norm().item() == pytest.approx(2.0)                     # (1 + 3) / 2
    assert mid[0].item() == pytest.approx(mid[1].item())               # 45 degrees
    assert torch.allclose(slerp(a, b, torch.tensor(0.0), dim=1), a)


def test_bislerp_identity_and_constant_field():
    x = latent()["samples"]
    torch.testing.assert_close(bislerp(x, 8, 8), x, atol=1e-5, rtol=1e-5)
    const = torch.ones(1, 4, 4, 4)
    torch.testing.assert_close(bislerp(const, 9, 7), torch.ones(1, 4, 7, 9), atol=1e-5, rtol=1e-5)


def test_center_crop_upscale():
    x = torch.arange(2 * 8, dtype=torch.float32).view(1, 1, 2, 8)
    out = upscale(x, 2, 2, "nearest-exact", "center")
    assert out.shape == (1, 1, 2, 2)
    assert torch.equal(out, x[..., :, 3:5])
