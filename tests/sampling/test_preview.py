"""Latent -> RGB previews and latent formats."""
from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from sampling.latent_format import SD3, SD15
from sampling.preview import latent_to_rgb

NO_FACTORS = replace(SD3, rgb_factors=None, rgb_bias=None)


def test_linear_preview_projects_with_the_sd15_factors() -> None:
    latent = torch.zeros(2, 4, 16, 24)
    latent[0, 0] = 1.0                                    # only channel 0 set: rgb = factors[0]
    rgb = latent_to_rgb(latent, SD15)
    assert rgb.shape == (16, 24, 3) and rgb.dtype == torch.uint8
    expected = ((torch.tensor(SD15.rgb_factors[0]) + 1) / 2 * 255).to(torch.uint8)
    assert torch.equal(rgb[5, 7], expected)


def test_preview_is_downscaled_to_max_size() -> None:
    assert latent_to_rgb(torch.randn(1, 4, 128, 64), SD15, max_size=64).shape == (64, 32, 3)


def test_formats_without_factors_say_so() -> None:
    with pytest.raises(ValueError, match="TAESD"):
        latent_to_rgb(torch.randn(1, 16, 8, 8), NO_FACTORS)


def test_sd3_preview_uses_its_factors() -> None:
    z = torch.randn(1, 16, 8, 8)
    z[:, 0] = 1.0
    z[:, 1:] = 0.0
    rgb = latent_to_rgb(z, SD3)                         # one channel set: rgb = factors[0] + bias
    expected = (((torch.tensor(SD3.rgb_factors[0]) + torch.tensor(SD3.rgb_bias)) + 1) / 2 * 255).to(torch.uint8)
    assert rgb.shape == (8, 8, 3) and (rgb[3, 3].int() - expected.int()).abs().max() <= 1


def test_latent_format_round_trip() -> None:
    z = torch.randn(1, 16, 4, 4)
    torch.testing.assert_close(SD3.process_out(SD3.process_in(z)), z)
    torch.testing.assert_close(SD15.process_in(z[:, :4]), z[:, :4] * 0.18215)
