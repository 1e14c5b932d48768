"""imaging.transform: flips and turns against NumPy, stitching and padding geometry, batch slicing."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from imaging import transform


def _image(seed=0, b=2, h=4, w=6, c=3) -> torch.Tensor:
    return torch.rand((b, h, w, c), generator=torch.Generator().manual_seed(seed))


def test_flip_and_rotate_match_numpy() -> None:
    image = _image()
    x = image.numpy()
    assert np.array_equal(transform.flip(image, "x-axis: vertically").numpy(), x[:, ::-1])
    assert np.array_equal(transform.flip(image, "y-axis: horizontally").numpy(), x[:, :, ::-1])
    for turns, name in enumerate(transform.ROTATIONS):
        expected = np.rot90(x, k=-turns, axes=(1, 2))    # clockwise
        assert np.array_equal(transform.rotate(image, name).numpy(), expected)


def test_stitch_right_with_matched_height_and_spacing() -> None:
    a, b = _image(1, b=2, h=4, w=6), _image(2, b=1, h=8, w=4)
    out = transform.stitch(a, b, "right", True, 3, "red")
    assert out.shape == (2, 4, 6 + 4 + 2, 3)          # b scaled to height 4 -> width 2, spacing 3 -> 4
    assert torch.equal(out[:, :, :6], a)
    assert torch.equal(out[:, :, 6:10], torch.tensor([1.0, 0.0, 0.0]).expand(2, 4, 4, 3))
    assert torch.equal(out[1, :, 10:], out[0, :, 10:])  # the shorter batch repeats its last image


def test_stitch_up_without_matching_pads_centred() -> None:
    a, b = _image(3, b=1, h=2, w=6), _image(4, b=1, h=3, w=2, c=4)
    out = transform.stitch(a, b, "up", False, 0, "white")
    assert out.shape == (1, 5, 6, 4)
    assert torch.equal(out[0, :3, 2:4], b[0]) and torch.all(out[0, :3, :2] == 1.0)
    assert torch.equal(out[0, 3:, :, :3], a[0]) and torch.all(out[0, 3:, :, 3] == 1.0)
    assert torch.equal(transform.stitch(a, None, "up", False, 0, "white"), a)


def test_resize_and_pad_centres_the_scaled_image() -> None:
    image = _image(5, b=1, h=4, w=8)
    out = transform.resize_and_pad(image, 8, 8, "black", "nearest-exact")
    assert out.shape == (1, 8, 8, 3)
    assert torch.all(out[:, :2] == 0) and torch.all(out[:, 6:] == 0)
    assert torch.equal(out[:, 2:6], image)


@pytest.mark.parametrize("h,w,size,expected", [(4, 8, 16, (8, 16)), (9, 3, 6, (6, 2)), (5, 5, 7, (7, 7))])
def test_scale_to_max_dimension(h: int, w: int, size: int, expected: tuple[int, int]) -> None:
    assert transform.scale_to_max_dimension(_image(6, b=1, h=h, w=w), "bilinear", size).shape[1:3] == expected


def test_batches() -> None:
    image = _image(7, b=3)
    assert torch.equal(transform.from_batch(image, 5, 4), image[2:])
    assert transform.repeat(image, 2).shape[0] == 6
    assert transform.image_size(image) == (6, 4, 3)
    out = transform.rebatch([image, image[:1]], 3)
    assert [o.shape[0] for o in out] == [3, 1] and torch.equal(out[1], image[:1])
    with pytest.raises(ValueError, match="one size"):
        transform.rebatch([image, _image(8, b=1, h=5)], 4)
