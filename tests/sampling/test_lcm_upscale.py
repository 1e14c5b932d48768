"""SamplerLCMUpscale's sampler: LCM steps whose x0 grows to scale_ratio times the start size over the first
steps, against a loop written out here with torch's interpolation, and equal to plain LCM at ratio 1;
then through the Engine (SamplerCustom) on a tiny SD1 checkpoint."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from diffusion.custom_sampling import LatentResize, lcm_upscale_choice
from sampling import samplers, samplers_custom
from sampling.noise import gaussian_noise_sampler
from tests.nodes.test_builtin_diffusion import base_prompt, capture, harness, run_ok, shared_harness  # noqa: F401
from tests.nodes.engine_harness import Capture
from tests.nodes.test_builtin_diffusion import checkpoints  # noqa: F401 - fixture

from .toys import wiggly_denoiser

SIGMAS = torch.tensor([14.6, 6.0, 2.5, 0.9, 0.3, 0.0])


def test_default_and_chosen_numbers_of_resize_steps() -> None:
    np.testing.assert_allclose(samplers_custom.upscale_factors(5, 2.0, None), np.linspace(1, 2, 4)[1:])  # 6 // 2 + 1
    np.testing.assert_allclose(samplers_custom.upscale_factors(5, 3.0, 1), [3.0])
    np.testing.assert_allclose(samplers_custom.upscale_factors(2, 2.0, 50), np.linspace(1, 2, 4)[1:])     # capped


def test_ratio_one_is_plain_lcm_with_the_same_seed() -> None:
    denoise = wiggly_denoiser()
    x = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(0)) * SIGMAS[0]
    ours = samplers_custom.lcm_upscale(denoise, x, SIGMAS, resize=LatentResize("bilinear"), seed=7, total_upscale=1.0)
    plain = samplers.lcm(denoise, x, SIGMAS, noise_sampler=gaussian_noise_sampler(x, 7))
    torch.testing.assert_close(ours, plain)


def test_upscaling_steps_match_a_hand_written_loop() -> None:
    denoise = wiggly_denoiser()
    x = torch.randn(2, 4, 8, 6, generator=torch.Generator().manual_seed(1)) * SIGMAS[0]
    ours = samplers_custom.lcm_upscale(denoise, x, SIGMAS, resize=LatentResize("bicubic"), seed=3,
                                       total_upscale=2.0, upscale_steps=2)
    generator = torch.Generator().manual_seed(3)
    factors = np.linspace(1.0, 2.0, 3)[1:]
    y = x
    for i in range(len(SIGMAS) - 1):
        y = denoise(y, SIGMAS[i] * torch.ones(2))
        if i < 2:
            y = F.interpolate(y, size=(round(8 * factors[i]), round(6 * factors[i])), mode="bicubic")
        if SIGMAS[i + 1] > 0:
            y = y + SIGMAS[i + 1] * torch.randn(y.shape, generator=generator)
    assert ours.shape == (2, 4, 16, 12)
    torch.testing.assert_close(ours, y)


def test_choices_are_values_and_bad_methods_are_refused() -> None:
    assert lcm_upscale_choice(1.5, -1, "bislerp") == lcm_upscale_choice(1.5, -1, "bislerp")
    assert dict(lcm_upscale_choice(1.5, 4, "area").options)["upscale_steps"] == 4
    assert dict(lcm_upscale_choice(1.5, -1, "area").options)["upscale_steps"] is None
    with pytest.raises(ValueError, match="lanczos"):
        lcm_upscale_choice(1.5, -1, "lanczos")


def test_sampler_custom_with_lcm_upscale_returns_the_larger_latent(harness):  # noqa: F811
    prompt = base_prompt(steps=4, width=64, height=64)
    prompt["22"] = {"class_type": "SamplerLCMUpscale", "inputs": {"scale_ratio": 2.0, "scale_steps": -1,
                                                                  "upscale_method": "bislerp"}}
    prompt["23"] = {"class_type": "KarrasScheduler", "inputs": {"steps": 4, "sigma_max": 14.6, "sigma_min": 0.03,
                                                               "rho": 7.0}}
    prompt["3"] = {"class_type": "SamplerCustom", "inputs": {
        "model": ["4", 0], "add_noise": True, "noise_seed": 1, "cfg": 3.0, "positive": ["6", 0],
        "negative": ["7", 0], "sampler": ["22", 0], "sigmas": ["23", 0], "latent_image": ["5", 0]}}
    prompt = capture(prompt, ["3", 0])
    run_ok(harness, prompt)
    latent = Capture.seen[-1]["samples"]
    assert latent.shape == (1, 4, 16, 16) and torch.isfinite(latent).all() and latent.std() > 0
