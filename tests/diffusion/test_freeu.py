"""FreeU (Si et al. 2023): backbone scaling and skip spectral scaling, checked with NumPy's FFT."""
from __future__ import annotations

import numpy as np
import torch

from diffusion.freeu import freeu_patch, spectral_scale


def test_spectral_scale_matches_numpy() -> None:
    x = torch.randn(1, 2, 6, 6)
    f = np.fft.fftshift(np.fft.fft2(x.numpy()), axes=(-2, -1))
    f[..., 2:4, 2:4] *= 0.3                                # threshold 1 around the centre (3, 3)
    expected = np.fft.ifft2(np.fft.ifftshift(f, axes=(-2, -1))).real
    np.testing.assert_allclose(spectral_scale(x, 1, 0.3).numpy(), expected, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(spectral_scale(x, 1, 1.0), x, rtol=1e-5, atol=1e-5)


def test_v1_scales_half_the_backbone_channels_of_matching_stages_only() -> None:
    patch = freeu_patch(8, 1.5, 2.0, 1.0, 1.0)
    h, skip = torch.randn(1, 32, 4, 4), torch.randn(1, 32, 4, 4)
    out_h, out_skip = patch(h, skip, {})
    torch.testing.assert_close(out_h[:, :16], h[:, :16] * 1.5)
    torch.testing.assert_close(out_h[:, 16:], h[:, 16:])
    torch.testing.assert_close(out_skip, skip, rtol=1e-5, atol=1e-5)
    other = torch.randn(1, 24, 4, 4)
    assert patch(other, skip, {})[0] is other


def test_v2_factor_is_one_plus_b_minus_one_times_normalised_mean() -> None:
    patch = freeu_patch(8, 1.5, 1.0, 1.0, 1.0, version=2)
    h = torch.randn(2, 32, 4, 4)
    mean = h.mean(1, keepdim=True)
    lo = mean.amin(dim=(2, 3), keepdim=True)
    hi = mean.amax(dim=(2, 3), keepdim=True)
    expected = h[:, :16] * (0.5 * (mean - lo) / (hi - lo) + 1.0)
    torch.testing.assert_close(patch(h, torch.zeros_like(h), {})[0][:, :16], expected)
