"""imaging.masks against NumPy: composite operators, the feather ramp, colour keys, alpha split/join,
and Porter-Duff compositing against the textbook over/in/out formulas."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from imaging import masks


def _mask(seed=0, b=1, h=5, w=6) -> torch.Tensor:
    return torch.rand((b, h, w), generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("operation", masks.MASK_OPERATIONS)
def test_composite_operators_inside_the_overlap(operation: str) -> None:
    dst, src = _mask(0), _mask(1, h=3, w=10)
    out = masks.composite(dst, src, 2, 1, operation).numpy()
    d, s = dst.numpy()[:, 1:4, 2:], src.numpy()[:, :, :4]
    logic = {"and": np.logical_and, "or": np.logical_or, "xor": np.logical_xor}
    if operation in logic:
        expected = logic[operation](np.round(d) > 0, np.round(s) > 0).astype(np.float32)
    else:
        expected = {"multiply": d * s, "add": d + s, "subtract": d - s}[operation]
    np.testing.assert_allclose(out[:, 1:4, 2:], np.clip(expected, 0, 1), atol=1e-6)
    np.testing.assert_array_equal(out[:, 0], dst.numpy()[:, 0])
    assert np.array_equal(masks.composite(dst, src, 50, 50, operation).numpy(), dst.numpy())


def test_feather_ramps_each_side_linearly_to_one_over_n() -> None:
    mask = torch.ones(1, 6, 8)
    out = masks.feather(mask, 2, 3, 4, 0)[0].numpy()
    np.testing.assert_allclose(out[5, :], [0.5, 1, 1, 1, 1, 0.75, 0.5, 0.25])
    np.testing.assert_allclose(out[:, 3], [1 / 3, 2 / 3, 1, 1, 1, 1])
    assert torch.equal(masks.feather(mask, 0, 0, 0, 0), mask)


def test_threshold_crop_and_color_key() -> None:
    mask = _mask(2)
    assert torch.equal(masks.threshold(mask, 0.5), (mask > 0.5).float())
    assert torch.equal(masks.crop(mask, 1, 2, 3, 10), mask[:, 2:, 1:4])
    image = torch.zeros(1, 2, 2, 3)
    image[0, 0, 1] = torch.tensor([0x12, 0x34, 0x56]) / 255
    assert masks.color_to_mask(image, 0x123456).tolist() == [[[0.0, 1.0], [0.0, 0.0]]]


def test_split_and_join_alpha_invert_the_mask() -> None:
    rgba = torch.rand(2, 4, 4, 4)
    rgb, mask = masks.split_alpha(rgba)
    assert torch.equal(rgb, rgba[..., :3]) and torch.allclose(mask, 1 - rgba[..., 3])
    assert torch.allclose(masks.join_alpha(rgb, mask), rgba)
    assert torch.equal(masks.split_alpha(rgb)[1], torch.zeros(2, 4, 4))


def _over(cs, a_s, cd, a_d):
    alpha = a_s + a_d * (1 - a_s)
    color = np.where(alpha > 1e-5, (cs * a_s + cd * a_d * (1 - a_s)) / np.maximum(alpha, 1e-12), 0)
    return np.clip(color, 0, 1), alpha


@pytest.mark.parametrize("mode", ["SRC_OVER", "SRC_IN", "DST_OUT", "XOR", "SCREEN", "MULTIPLY", "CLEAR", "DST"])
def test_porter_duff_against_the_formulas(mode: str) -> None:
    g = torch.Generator().manual_seed(3)
    src, dst = torch.rand(1, 3, 3, 3, generator=g), torch.rand(1, 3, 3, 3, generator=g)
    src_mask, dst_mask = torch.rand(1, 3, 3, generator=g), torch.rand(1, 3, 3, generator=g)
    image, mask = masks.porter_duff_composite(src, src_mask, dst, dst_mask, mode)
    cs, cd = src[0].numpy(), dst[0].numpy()
    a_s, a_d = 1 - src_mask[0].numpy()[..., None], 1 - dst_mask[0].numpy()[..., None]
    if mode == "SRC_OVER":
        color, alpha = _over(cs, a_s, cd, a_d)
    elif mode == "SRC_IN":
        color, alpha = cs, a_s * a_d
    elif mode == "DST_OUT":
        color, alpha = cd, a_d * (1 - a_s)
    elif mode == "XOR":
        alpha = a_s * (1 - a_d) + a_d * (1 - a_s)
        color = (cs * a_s * (1 - a_d) + cd * a_d * (1 - a_s)) / alpha
    elif mode == "SCREEN":
        ps, pd = cs * a_s, cd * a_d
        alpha = a_s + a_d - a_s * a_d
        color = (ps + pd - ps * pd) / alpha
    elif mode == "MULTIPLY":
        alpha = a_s * a_d
        color = cs * a_s * cd * a_d / alpha
    elif mode == "CLEAR":
        color, alpha = np.zeros_like(cs), np.zeros_like(a_s)
    else:
        color, alpha = cd, a_d
    np.testing.assert_allclose(image[0].numpy(), np.clip(color, 0, 1), atol=1e-5)
    np.testing.assert_allclose(mask[0].numpy(), 1 - alpha[..., 0], atol=1e-6)


def test_porter_duff_resizes_the_source_to_the_destination() -> None:
    image, mask = masks.porter_duff_composite(torch.rand(1, 2, 2, 3), torch.zeros(1, 2, 2), torch.rand(2, 4, 6, 3),
                                              torch.zeros(2, 4, 6), "SRC")
    assert image.shape == (1, 4, 6, 3) and mask.shape == (1, 4, 6)
    with pytest.raises(ValueError, match="channels"):
        masks.porter_duff_composite(torch.rand(1, 2, 2, 4), torch.zeros(1, 2, 2), torch.rand(1, 2, 2, 3),
                                    torch.zeros(1, 2, 2), "SRC")
