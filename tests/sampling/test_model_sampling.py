"""Model samplings against diffusers' DDPM scheduler (test-only reference) and the papers' formulas."""
from __future__ import annotations

import math

import pytest
import torch

from sampling.model_sampling import (
    X0,
    DiscreteSampling,
    DistilledDiscreteSampling,
    Eps,
    FlowSampling,
    Lcm,
    Velocity,
    VPrediction,
    is_max_denoise,
    time_snr_shift,
)


def test_sd1_sigmas_match_diffusers_scaled_linear_betas() -> None:
    import diffusers
    ref = diffusers.DDPMScheduler(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012,
                                  beta_schedule="scaled_linear")
    ac = ref.alphas_cumprod.double()
    expected = ((1 - ac) / ac) ** 0.5
    ms = DiscreteSampling()
    torch.testing.assert_close(ms.sigmas, expected.float(), rtol=5e-5, atol=0)   # diffusers squares in float32
    assert math.isclose(float(ms.sigma_max), 14.6146, rel_tol=1e-4)
    assert math.isclose(float(ms.sigma_min), 0.029167, rel_tol=1e-4)


def test_zero_terminal_snr_matches_diffusers() -> None:
    import diffusers
    ref = diffusers.DDPMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                                  rescale_betas_zero_snr=True)
    ac = ref.alphas_cumprod.double()[:-1]   # the last one is exactly 0 there; ours is clamped to stay finite
    ms = DiscreteSampling(zero_terminal_snr=True)
    torch.testing.assert_close(ms.sigmas[:-1], (((1 - ac) / ac) ** 0.5).float(), rtol=1e-4, atol=0)
    assert float(ms.sigmas[-1]) > 4000


def test_timestep_and_sigma_are_inverse() -> None:
    ms = DiscreteSampling()
    t = torch.arange(0, 1000, 37)
    assert torch.equal(ms.timestep(ms.sigma(t.float())), t)
    # fractional timesteps interpolate in log sigma
    mid = ms.sigma(torch.tensor(10.5))
    assert math.isclose(float(mid.log()), float((ms.log_sigmas[10] + ms.log_sigmas[11]) / 2), rel_tol=1e-5)


def test_percent_to_sigma_endpoints_and_monotonicity() -> None:
    for ms in (DiscreteSampling(), FlowSampling(shift=3.0)):
        assert ms.percent_to_sigma(0.0) >= float(ms.sigma_max)
        assert ms.percent_to_sigma(1.0) == 0.0
        values = [ms.percent_to_sigma(p) for p in (0.1, 0.4, 0.7, 0.99)]
        assert values == sorted(values, reverse=True)


def test_prediction_types_recover_x0_from_their_targets() -> None:
    """Build each model's training target from known (x0, noise) and check to_x0 inverts it."""
    torch.manual_seed(0)
    x0, n = torch.randn(3, 4, 2, 2), torch.randn(3, 4, 2, 2)
    sigma = torch.tensor([0.5, 3.0, 14.0])
    s = sigma.view(3, 1, 1, 1)
    x = x0 + s * n                                      # VE
    torch.testing.assert_close(Eps().to_x0(n, x, sigma), x0)
    # v = alpha eps - sigma_vp x0 on the VP sample (Salimans & Ho 2022), alpha = 1/sqrt(1+s^2)
    alpha, sigma_vp = 1 / (1 + s ** 2) ** 0.5, s / (1 + s ** 2) ** 0.5
    v = alpha * n - sigma_vp * x0
    torch.testing.assert_close(VPrediction().to_x0(v, x, sigma), x0, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(X0().to_x0(x0, x, sigma), x0)
    t = torch.tensor([0.2, 0.5, 0.9])
    xf = (1 - t.view(3, 1, 1, 1)) * x0 + t.view(3, 1, 1, 1) * n    # rectified flow
    torch.testing.assert_close(Velocity().to_x0(n - x0, xf, t), x0)


def test_lcm_prediction_uses_consistency_boundary_scalings() -> None:
    ms = DistilledDiscreteSampling()
    assert len(ms.sigmas) == 50
    assert int(ms.timestep(ms.sigmas[-1:])) == 999
    sigma = ms.sigmas[20:21]
    x, eps = torch.randn(1, 4, 2, 2), torch.randn(1, 4, 2, 2)
    t = float(ms.timestep(sigma)) * 10
    c_skip, c_out = 0.25 / (t ** 2 + 0.25), t / (t ** 2 + 0.25) ** 0.5
    expected = c_out * (x - float(sigma) * eps) + c_skip * x
    torch.testing.assert_close(ms.prediction.to_x0(eps, x, sigma), expected)
    assert isinstance(ms.prediction, Lcm)


def test_flow_sampling_shift_and_timesteps() -> None:
    ms = FlowSampling(shift=3.0)
    assert math.isclose(float(ms.sigma_max), 1.0, rel_tol=1e-6)
    t = torch.tensor([0.25, 0.5])
    torch.testing.assert_close(ms.sigma(t * 1000), 3 * t / (1 + 2 * t))   # SD3 eq. 23
    torch.testing.assert_close(ms.timestep(ms.sigma(t * 1000)), ms.sigma(t * 1000) * 1000)
    assert time_snr_shift(1.0, 0.3) == 0.3
    noise, latent = torch.randn(1, 16, 2, 2), torch.randn(1, 16, 2, 2)
    x = ms.noise_scaling(torch.tensor(0.25), noise, latent)
    torch.testing.assert_close(x, 0.25 * noise + 0.75 * latent)
    assert torch.equal(ms.input_scale(torch.tensor([0.3])), torch.ones(1))


def test_discrete_noise_scaling_and_max_denoise() -> None:
    ms = DiscreteSampling()
    noise, latent = torch.randn(1, 4, 2, 2), torch.randn(1, 4, 2, 2)
    s = ms.sigma_max
    torch.testing.assert_close(ms.noise_scaling(s, noise, latent), latent + s * noise)
    torch.testing.assert_close(ms.noise_scaling(s, noise, latent, True), latent + (1 + s ** 2) ** 0.5 * noise)
    assert is_max_denoise(ms, torch.tensor([float(s), 1.0, 0.0]))
    assert not is_max_denoise(ms, torch.tensor([5.0, 1.0, 0.0]))
    torch.testing.assert_close(ms.input_scale(torch.tensor([2.0])), torch.tensor([1 / 5 ** 0.5]))
