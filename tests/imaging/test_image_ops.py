import torch

from imaging import image_ops


def image(b=1, h=16, w=16, seed=0):
    return torch.rand(b, h, w, 3, generator=torch.Generator().manual_seed(seed))


def test_resize_and_scale():
    img = image(h=10, w=20)
    assert image_ops.resize_to(img, 0, 5, "bilinear", "disabled").shape == (1, 5, 10, 3)
    assert image_ops.rescale(img, 2.0, "nearest-exact").shape == (1, 20, 40, 3)
    out = image_ops.rescale_to_total_pixels(img, 800 / image_ops.MEGAPIXEL, "area")
    assert out.shape == (1, 20, 40, 3)
    out = image_ops.rescale_to_total_pixels(img, 800 / image_ops.MEGAPIXEL, "area", resolution_steps=16)
    assert out.shape == (1, 16, 32, 3)          # 20x40 rounded to multiples of 16
    lanczos = image_ops.resize_to(img, 40, 20, "lanczos", "disabled")
    assert lanczos.shape == (1, 20, 40, 3) and 0 <= lanczos.min() and lanczos.max() <= 1


def test_invert_batch_crop():
    a, b = image(seed=1), image(h=8, w=8, seed=2)
    torch.testing.assert_close(image_ops.invert(a), 1 - a)
    assert image_ops.batch(a, b).shape == (2, 16, 16, 3)
    assert torch.equal(image_ops.crop(a, 4, 3, 2, 1), a[:, 1:4, 2:6])


def test_solid_color():
    img = image_ops.solid_color(4, 2, 3, 0xFF8000)
    assert img.shape == (3, 2, 4, 3)
    torch.testing.assert_close(img[0, 0, 0], torch.tensor([1.0, 128 / 255, 0.0]))


def test_pad_for_outpaint_mask_and_feather():
    img = image(h=20, w=20)
    padded, mask = image_ops.pad_for_outpaint(img, 8, 0, 0, 0, 4)
    assert padded.shape == (1, 20, 28, 3) and mask.shape == (20, 28)
    assert torch.equal(padded[:, :, 8:], img)
    assert (padded[:, :, :8] == 0.5).all() and (mask[:, :8] == 1).all()
    # distance to the extended (left) side j: value ((4 - j) / 4)^2 for j < 4, else 0
    for j in range(6):
        expected = ((4 - j) / 4) ** 2 if j < 4 else 0.0
        assert mask[10, 8 + j].item() == expected


def test_composite_masked_with_offsets_and_mask():
    dest = torch.zeros(1, 10, 10, 3)
    src = torch.ones(1, 4, 4, 3)
    out = image_ops.composite_images(dest, src, 8, 8, None, False)
    assert out[0, 8:, 8:].sum() == 2 * 2 * 3 and out.sum() == 12
    out = image_ops.composite_images(dest, src, -2, 0, None, False)
    assert out[0, :4, :2].sum() == 4 * 2 * 3 and out.sum() == 24
    half = torch.full((4, 4), 0.5)
    out = image_ops.composite_images(dest, src, 0, 0, half, False)
    assert torch.allclose(out[0, :4, :4], torch.full((4, 4, 3), 0.5))


def test_masks():
    m = image_ops.solid_mask(0.25, 3, 2)
    assert m.shape == (1, 2, 3) and (m == 0.25).all()
    img = image_ops.mask_to_image(m)
    assert img.shape == (1, 2, 3, 3)
    assert torch.equal(image_ops.image_to_mask(img, "green"), m)


def test_grow_mask_square_and_tapered_and_shrink():
    m = torch.zeros(1, 7, 7)
    m[0, 3, 3] = 1
    square = image_ops.grow(m, 1, tapered_corners=False)
    assert square.sum() == 9
    cross = image_ops.grow(m, 1, tapered_corners=True)
    assert cross.sum() == 5 and cross[0, 2, 2] == 0
    assert torch.equal(image_ops.grow(square, -1, False), m)
    assert image_ops.grow(m, 2, tapered_corners=True).sum() == 13
