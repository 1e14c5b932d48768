"""The Canny node: equal to kornia.filters.canny (what ComfyUI's node calls) pixel for pixel, and close to
OpenCV's Canny on the same images (both test-only references)."""
from __future__ import annotations

import cv2
import kornia
import numpy as np
import pytest
import torch

from execution.errors import PlexusError
from imaging.canny import canny, canny_edges
from tests.imaging.canny_images import synthetic_image

THRESHOLDS = [(0.4, 0.8), (0.1, 0.2), (0.05, 0.6)]


def _image(seed: int, height: int = 192, width: int = 256) -> torch.Tensor:   # IMAGE [1, H, W, 3] in 0..1
    return torch.from_numpy(synthetic_image(seed, height, width).astype(np.float32) / 255)[None]


@pytest.mark.parametrize("low,high", THRESHOLDS)
@pytest.mark.parametrize("seed", [0, 1])
def test_equals_kornia_canny(seed, low, high):
    image = _image(seed, 80, 112)                              # small: kornia's hysteresis grows 1 px a round
    ours = canny_edges(image.movedim(-1, 1), low, high)
    _, theirs = kornia.filters.canny(image.movedim(-1, 1), low, high)
    assert ours.sum() > 20                                    # the images have edges at these thresholds
    assert torch.equal(ours, theirs)


def test_equals_kornia_on_noise_batch_and_grey():
    g = torch.Generator().manual_seed(3)
    x = torch.rand(3, 3, 40, 56, generator=g)
    assert torch.equal(canny_edges(x, 0.4, 0.8), kornia.filters.canny(x, 0.4, 0.8)[1])
    grey = x[:, :1]
    assert torch.equal(canny_edges(grey, 0.3, 0.6), kornia.filters.canny(grey, 0.3, 0.6)[1])


def _edge_iou(a: np.ndarray, b: np.ndarray) -> float:
    return (a & b).sum() / (a | b).sum()


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_agrees_with_opencv_canny(seed):
    """OpenCV's own pipeline on the uint8 image (BT.601 grey, 5x5 sigma-1 blur, L2 Canny at the thresholds
    x 255): >= 0.75 of the edge pixels in either map are in both (the uint8 rounding of grey and blur moves
    edge pixels by one; bench/canny_agreement.py measured 0.76-0.91 on these images, 0.93-0.97 on a photo);
    fed our float blur's Sobel gradients (int16, x 512), >= 0.95 (measured 0.96-0.98, photo 0.99-1.0)."""
    rgb = synthetic_image(seed)
    ours = canny_edges(torch.from_numpy(rgb.astype(np.float32) / 255).movedim(-1, 0)[None], 0.2, 0.5)[0, 0].numpy() > 0
    blurred = cv2.GaussianBlur(cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY), (5, 5), 1, borderType=cv2.BORDER_REFLECT_101)
    opencv = cv2.Canny(blurred, 0.2 * 255, 0.5 * 255, L2gradient=True) > 0
    assert _edge_iou(ours, opencv) >= 0.75
    assert (ours == opencv).mean() >= 0.99

    grey = cv2.cvtColor(rgb.astype(np.float32) / 255, cv2.COLOR_RGB2GRAY)
    blurred = cv2.GaussianBlur(grey, (5, 5), 1, borderType=cv2.BORDER_REFLECT_101)
    scale = 512.0
    dx, dy = (np.round(cv2.Sobel(blurred, cv2.CV_32F, *d, ksize=3, borderType=cv2.BORDER_REPLICATE) * scale)
              .astype(np.int16) for d in ((1, 0), (0, 1)))
    opencv_nms = cv2.Canny(dx, dy, 0.2 * scale, 0.5 * scale, L2gradient=True) > 0
    assert _edge_iou(ours, opencv_nms) >= 0.95
    assert (ours == opencv_nms).mean() >= 0.998


def test_node_output_is_a_three_channel_binary_image():
    image = _image(0).repeat(2, 1, 1, 1)
    out = canny(image, 0.4, 0.8)
    assert out.shape == (2, *image.shape[1:3], 3)
    assert set(out.unique().tolist()) == {0.0, 1.0}
    assert torch.equal(out[..., 0], out[..., 2])
    rgba = torch.cat([image, torch.rand_like(image[..., :1])], -1)
    assert torch.equal(canny(rgba, 0.4, 0.8), out)             # the alpha channel is ignored


def test_hysteresis_keeps_only_weak_pixels_connected_to_strong_ones():
    x = torch.zeros(1, 1, 32, 64)
    x[..., :, 16:] = 0.08                                      # a faint step: weak edge only
    x[..., :, 48:] = 1.0                                       # a strong step
    edges = canny_edges(x, 0.1, 0.8)
    assert edges[..., 15:17].sum() == 0                        # weak and unconnected: dropped
    assert edges[..., 46:50].sum() > 0


def test_bad_thresholds_are_a_plexus_error():
    with pytest.raises(PlexusError, match="low_threshold"):
        canny(_image(0), 0.8, 0.4)
