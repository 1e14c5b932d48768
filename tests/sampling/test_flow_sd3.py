"""SD3's rectified flow: schedule + shift against diffusers' FlowMatchEulerDiscreteScheduler, and a whole
Euler sampling run through the denoiser wrapper against its step function."""
from __future__ import annotations

import pytest
import torch

from sampling.guidance import CFGDenoiser, Cond
from sampling.model_sampling import FlowSampling
from sampling.samplers import SAMPLERS, euler
from sampling.schedules import SCHEDULERS, calculate_sigmas

diffusers = pytest.importorskip("diffusers")
from diffusers import FlowMatchEulerDiscreteScheduler  # noqa: E402


@pytest.mark.parametrize("shift", [3.0, 1.0, 6.0])
@pytest.mark.parametrize("steps", [4, 28])
def test_normal_schedule_is_diffusers_flow_match(shift, steps):
    reference = FlowMatchEulerDiscreteScheduler(shift=shift)
    reference.set_timesteps(steps)
    sigmas = calculate_sigmas(FlowSampling(shift=shift), "normal", steps)
    torch.testing.assert_close(sigmas, reference.sigmas, atol=1e-6, rtol=0)
    torch.testing.assert_close(FlowSampling(shift=shift).timestep(sigmas[:-1]), reference.timesteps, atol=1e-3, rtol=0)


def velocity_model(x: torch.Tensor, timestep: torch.Tensor, inputs: dict) -> torch.Tensor:
    """A fixed, nonlinear 'velocity' of x and t (stands in for the MM-DiT)."""
    t = timestep.reshape(-1, 1, 1, 1) / 1000.0
    return torch.tanh(x) * (1 + t) + inputs["c_crossattn"].mean() * t


def test_euler_through_the_denoiser_matches_diffusers_steps():
    ms = FlowSampling(shift=3.0)
    g = torch.Generator().manual_seed(0)
    noise = torch.randn(1, 16, 4, 4, generator=g)
    cond = [Cond(inputs={"c_crossattn": torch.full((1, 3, 8), 0.3)})]
    sigmas = calculate_sigmas(ms, "normal", 6)
    x = ms.noise_scaling(sigmas[0], noise, torch.zeros_like(noise), True)
    ours = euler(CFGDenoiser(velocity_model, ms, cond, None, 1.0, noise.shape), x, sigmas)

    scheduler = FlowMatchEulerDiscreteScheduler(shift=3.0)
    scheduler.set_timesteps(6)
    sample = noise.clone()
    for t in scheduler.timesteps:
        v = velocity_model(sample, t.reshape(1), {"c_crossattn": cond[0].inputs["c_crossattn"]})
        sample = scheduler.step(v, t, sample).prev_sample
    torch.testing.assert_close(ours, sample, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("sampler", list(SAMPLERS))
def test_every_sampler_runs_on_flow(sampler):
    """Every ComfyUI sampler name works on the rectified-flow sampling through the CFG denoiser."""
    from sampling.sample import sample
    ms = FlowSampling(shift=3.0)
    cond = [Cond(inputs={"c_crossattn": torch.full((1, 3, 8), 0.3)})]
    uncond = [Cond(inputs={"c_crossattn": torch.zeros(1, 3, 8)})]
    out = sample(velocity_model, ms, torch.zeros(1, 16, 4, 4), cond, uncond, seed=1, steps=4, cfg=3.0,
                 sampler_name=sampler, scheduler="simple")
    assert out.shape == (1, 16, 4, 4) and torch.isfinite(out).all()


def test_every_scheduler_ends_in_zero_on_flow():
    ms = FlowSampling(shift=3.0)
    for name in SCHEDULERS:
        sigmas = calculate_sigmas(ms, name, 5)
        assert float(sigmas[-1]) == 0.0 and float(sigmas[0]) <= 1.0 + 1e-6, name
