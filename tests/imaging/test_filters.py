"""imaging.filters against independent references: SciPy's convolution and grey morphology, Pillow's
YCbCr and quantiser, the W3C blend formulas written in NumPy, the classic Bayer index matrices."""
from __future__ import annotations

import numpy as np
import pytest
import scipy.ndimage
import torch
from PIL import Image

from imaging import filters


def _image(seed: int = 0, b: int = 2, h: int = 9, w: int = 11, c: int = 3) -> torch.Tensor:
    return torch.rand((b, h, w, c), generator=torch.Generator().manual_seed(seed))


def _gaussian(size: int, sigma: float) -> np.ndarray:
    grid = np.linspace(-1, 1, size)
    yy, xx = np.meshgrid(grid, grid, indexing="ij")
    k = np.exp(-(xx ** 2 + yy ** 2) / (2 * sigma ** 2))
    return k / k.sum()


def _convolve(image: torch.Tensor, kernel: np.ndarray) -> np.ndarray:
    # torch's "reflect" padding is SciPy's "mirror" (the edge pixel is not repeated)
    x = image.numpy().astype(np.float64)
    return np.stack([np.stack([scipy.ndimage.correlate(x[b, ..., c], kernel, mode="mirror")
                               for c in range(x.shape[-1])], -1) for b in range(x.shape[0])])


@pytest.mark.parametrize("radius,sigma", [(1, 1.0), (3, 0.5), (2, 4.0)])
def test_blur_is_a_gaussian_convolution_with_mirrored_edges(radius: int, sigma: float) -> None:
    image = _image()
    expected = _convolve(image, _gaussian(2 * radius + 1, sigma))
    np.testing.assert_allclose(filters.blur(image, radius, sigma).numpy(), expected, atol=1e-5)


def test_sharpen_is_the_unsharp_mask_kernel_clamped() -> None:
    image, radius, sigma, alpha = _image(1), 2, 1.0, 0.7
    kernel = _gaussian(5, sigma) * -(alpha * 10)
    kernel[2, 2] += 1.0 - kernel.sum()
    expected = np.clip(_convolve(image, kernel), 0, 1)
    np.testing.assert_allclose(filters.sharpen(image, radius, sigma, alpha).numpy(), expected, atol=1e-5)
    assert torch.equal(filters.sharpen(image, 2, 1.0, 0.0), torch.clamp(image, 0, 1)) or \
        torch.allclose(filters.sharpen(image, 2, 1.0, 0.0), image, atol=1e-6)


def _w3c_blend(a: np.ndarray, b: np.ndarray, mode: str) -> np.ndarray:
    if mode == "normal":
        return b
    if mode == "multiply":
        return a * b
    if mode == "screen":
        return a + b - a * b
    if mode == "overlay":  # hard-light with the layers swapped
        return np.where(a <= 0.5, a * 2 * b, 1 - 2 * (1 - a) * (1 - b))
    if mode == "soft_light":
        d = np.where(a <= 0.25, ((16 * a - 12) * a + 4) * a, np.sqrt(a))
        return np.where(b <= 0.5, a - (1 - 2 * b) * a * (1 - a), a + (2 * b - 1) * (d - a))
    return a - b


@pytest.mark.parametrize("mode", filters.BLEND_MODES)
def test_blend_modes_follow_the_w3c_formulas(mode: str) -> None:
    a, b = _image(2), _image(3)
    expected = np.clip(a.numpy() * 0.3 + _w3c_blend(a.numpy(), b.numpy(), mode) * 0.7, 0, 1)
    np.testing.assert_allclose(filters.blend(a, b, 0.7, mode).numpy(), expected, atol=1e-6)


def test_blend_resizes_the_second_image_and_adds_alpha_where_needed() -> None:
    a, b = _image(4, b=1, c=4), _image(5, b=1, h=4, w=4)
    out = filters.blend(a, b, 1.0, "normal")
    assert out.shape == a.shape
    assert torch.allclose(out[..., 3], torch.ones(()), atol=1e-5)


@pytest.mark.parametrize("operation", filters.MORPHOLOGY_OPERATIONS)
@pytest.mark.parametrize("size", [3, 4])
def test_morphology_matches_scipy_grey_morphology(operation: str, size: int) -> None:
    image = _image(6, b=1, h=10, w=12, c=2)
    x = image[0].numpy()
    footprint = (size, size)

    def per_channel(fn):
        return np.stack([fn(x[..., c]) for c in range(x.shape[-1])], -1)

    # The window of size k spans k // 2 pixels before the centre, for erosion and dilation alike
    # (kornia's convention); SciPy's minimum/maximum filters place it the same way.
    def erode(a):
        return scipy.ndimage.minimum_filter(a, size=footprint, mode="nearest")

    def dilate(a):
        return scipy.ndimage.maximum_filter(a, size=footprint, mode="nearest")

    reference = {
        "erode": erode, "dilate": dilate,
        "open": lambda a: dilate(erode(a)), "close": lambda a: erode(dilate(a)),
        "gradient": lambda a: dilate(a) - erode(a),
        "top_hat": lambda a: a - dilate(erode(a)), "bottom_hat": lambda a: erode(dilate(a)) - a,
    }[operation]
    np.testing.assert_allclose(filters.morphology(image, operation, size)[0].numpy(), per_channel(reference),
                               atol=1e-6)
    if size == 3:  # odd flat windows are symmetric: SciPy's own grey operators agree
        assert np.allclose(per_channel(reference)[..., 0],
                           {"erode": scipy.ndimage.grey_erosion, "dilate": scipy.ndimage.grey_dilation,
                            "open": scipy.ndimage.grey_opening, "close": scipy.ndimage.grey_closing}.get(
                               operation, lambda a, **_: reference(a))(x[..., 0], size=footprint, mode="nearest"))


def test_yuv_matches_pillow_ycbcr_and_round_trips() -> None:
    image = _image(7, b=1)
    y, u, v = filters.rgb_to_yuv(image)
    pixels = (image[0].numpy() * 255).round().astype(np.uint8)
    ycbcr = np.asarray(Image.fromarray(pixels).convert("YCbCr"), dtype=np.float32) / 255
    ours = torch.stack((y[0, ..., 0], u[0, ..., 0], v[0, ..., 0]), -1).numpy()
    np.testing.assert_allclose(ours, ycbcr, atol=2.5 / 255)
    assert y.shape == image.shape and torch.equal(y[..., 0], y[..., 2])
    np.testing.assert_allclose(filters.yuv_to_rgb(y, u, v).numpy(), image.numpy(), atol=3e-3)


def _classic_bayer(order: int) -> np.ndarray:
    index = np.zeros((1, 1))
    while index.shape[0] < order:
        index = np.block([[4 * index, 4 * index + 2], [4 * index + 3, 4 * index + 1]])
    return (index + 0.5) / index.size - 0.5


@pytest.mark.parametrize("order", [2, 4, 8, 16])
def test_bayer_matrix_is_the_classic_index_matrix_centred(order: int) -> None:
    np.testing.assert_allclose(filters.bayer_matrix(order), _classic_bayer(order), atol=1e-12)


@pytest.mark.parametrize("dither", filters.DITHERS)
def test_quantize_uses_at_most_the_palette(dither: str) -> None:
    image = _image(8, b=2, h=16, w=16)
    out = filters.quantize(image, 5, dither)
    assert out.shape == image.shape
    for frame in out:
        assert len(torch.unique(frame.reshape(-1, 3), dim=0)) <= 5


def test_quantize_without_dither_is_pillows_median_cut() -> None:
    image = _image(9, b=1, h=12, w=12)
    pixels = (image[0] * 255).to(torch.uint8).numpy()
    pil = Image.fromarray(pixels)
    expected = np.asarray(pil.quantize(palette=pil.quantize(colors=8), dither=Image.Dither.NONE).convert("RGB"))
    np.testing.assert_allclose(filters.quantize(image, 8, "none")[0].numpy(), expected / 255, atol=1e-6)


def test_add_noise_is_seeded_gaussian_noise_clamped() -> None:
    image = _image(10)
    torch.manual_seed(1234)
    noise = torch.randn(image.shape)
    expected = torch.clamp(image + 0.25 * noise, 0, 1)
    assert torch.allclose(filters.add_noise(image, 1234, 0.25), expected)
    assert torch.equal(filters.add_noise(image, 0xFFFFFFFFFFFFFFFF, 0.5), filters.add_noise(image, 2 ** 64 - 1, 0.5))
