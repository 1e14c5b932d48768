"""FLUX's resolution-dependent time shift against diffusers' FlowMatchEulerDiscreteScheduler with
dynamic shifting (exponential time shift, mu from the image sequence length)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from sampling.flux import FluxSampling, resolution_shift

diffusers = pytest.importorskip("diffusers")
from diffusers import FlowMatchEulerDiscreteScheduler  # noqa: E402


@pytest.mark.parametrize("width,height", [(1024, 1024), (512, 768), (256, 256)])
def test_shift_matches_diffusers(width, height):
    mu = resolution_shift(width, height)
    seq_len = (width // 16) * (height // 16)
    # the FLUX.1-dev pipeline's mu: linear from base_shift 0.5 at 256 tokens to max_shift 1.15 at 4096
    want_mu = 0.5 + (1.15 - 0.5) * (seq_len - 256) / (4096 - 256)
    assert mu == pytest.approx(want_mu, abs=1e-12)
    scheduler = FlowMatchEulerDiscreteScheduler(use_dynamic_shifting=True, time_shift_type="exponential")
    t = np.linspace(1.0, 1 / 10, 10)
    scheduler.set_timesteps(sigmas=t, mu=mu)
    want = scheduler.sigmas[:-1].double()
    got = FluxSampling(shift=mu).sigma(torch.tensor(t, dtype=torch.float64))
    assert torch.allclose(got, want, atol=1e-6)


def test_timestep_is_sigma_and_percent():
    ms = FluxSampling(shift=1.15)
    s = torch.tensor([0.3, 0.9])
    assert torch.equal(ms.timestep(s), s)
    assert ms.percent_to_sigma(0.0) == 1.0 and ms.percent_to_sigma(1.0) == 0.0
    assert ms.percent_to_sigma(0.5) == pytest.approx(float(ms.sigma(torch.tensor(0.5))))
    assert float(ms.sigma_max) == pytest.approx(1.0) and len(ms.sigmas) == 10000
