"""Every sampler k-diffusion has: same toy denoiser, same noise sampler -> same trajectory."""
from __future__ import annotations

import pytest
import torch

from sampling import dpm_solver, samplers, samplers_multistep, samplers_sde
from sampling.noise import BrownianTreeNoiseSampler, gaussian_noise_sampler
from sampling.schedules import karras_sigmas

from .kdiff_ref import load_k_sampling
from .toys import wiggly_denoiser

# ours, k-diffusion name, noise kind, extra kwargs
CASES = [
    (samplers.euler, "sample_euler", None, {}),
    (samplers.euler, "sample_euler", "gaussian", {"s_churn": 2.0}),
    (samplers.heun, "sample_heun", None, {}),
    (samplers.dpm_2, "sample_dpm_2", None, {}),
    (samplers.euler_ancestral, "sample_euler_ancestral", "gaussian", {}),
    (samplers.euler_ancestral, "sample_euler_ancestral", "gaussian", {"eta": 0.5, "s_noise": 0.9}),
    (samplers.dpm_2_ancestral, "sample_dpm_2_ancestral", "gaussian", {}),
    (samplers.dpmpp_2s_ancestral, "sample_dpmpp_2s_ancestral", "gaussian", {}),
    # ComfyUI's LMS jumps to x0 when the next sigma is 0 (k-diffusion 0.1.1 integrates): compare without a final 0
    (samplers_multistep.lms, "sample_lms", None, {"_no_final_zero": True}),
    (samplers_multistep.dpmpp_2m, "sample_dpmpp_2m", None, {}),
    (samplers_sde.dpmpp_sde, "sample_dpmpp_sde", "brownian", {}),
    (samplers_sde.dpmpp_2m_sde, "sample_dpmpp_2m_sde", "brownian", {}),
    (samplers_sde.dpmpp_2m_sde, "sample_dpmpp_2m_sde", "brownian", {"solver_type": "heun", "eta": 0.7}),
    (samplers_sde.dpmpp_3m_sde, "sample_dpmpp_3m_sde", "brownian", {}),
]


def _noise(kind, x, sigmas):
    if kind == "gaussian":
        return gaussian_noise_sampler(x, seed=1234)
    if kind == "brownian":
        tree = BrownianTreeNoiseSampler(x, sigmas[sigmas > 0].min(), sigmas.max(), seed=1234)

        def rounded(a, b):
            # k-diffusion queries at exp(-(-log sigma)), ComfyUI (and we) at sigma: ~1e-7 apart, which a
            # Brownian tree resolves into visibly different increments. Round both to the same points.
            r = lambda v: torch.as_tensor(float(f"{float(v):.5g}"))
            return tree(r(a), r(b))
        return rounded
    return None


def _record(trace):
    return lambda step: trace.append((step.index, step.x.clone(), step.x0.clone()))


@pytest.mark.parametrize("ours, theirs, noise_kind, kwargs", CASES,
                         ids=[f"{c[1]}{'-' + '-'.join(map(str, c[3].values())) if c[3] else ''}" for c in CASES])
def test_trajectory_matches_k_diffusion(ours, theirs, noise_kind, kwargs) -> None:
    kwargs = dict(kwargs)
    K = load_k_sampling()
    torch.manual_seed(0)
    x_T = torch.randn(2, 4, 8, 8) * 14.6
    sigmas = karras_sigmas(10, 0.0292, 14.6146)
    if kwargs.pop("_no_final_zero", False):
        sigmas = sigmas[:-1]
    denoise = wiggly_denoiser()

    ours_trace, theirs_trace = [], []
    if "s_churn" in kwargs:   # k-diffusion draws churn noise from torch.randn_like: feed both the same stream
        torch.manual_seed(7)
        expected = getattr(K, theirs)(denoise, x_T.clone(), sigmas, disable=True,
                                      callback=lambda d: theirs_trace.append((d["i"], d["x"].clone(), d["denoised"].clone())),
                                      **kwargs)
        torch.manual_seed(7)
        got = ours(denoise, x_T.clone(), sigmas, on_step=_record(ours_trace), **kwargs)
    else:
        extra = {} if noise_kind is None else {"noise_sampler": _noise(noise_kind, x_T, sigmas)}
        expected = getattr(K, theirs)(denoise, x_T.clone(), sigmas, disable=True,
                                      callback=lambda d: theirs_trace.append((d["i"], d["x"].clone(), d["denoised"].clone())),
                                      **extra, **kwargs)
        extra = {} if noise_kind is None else {"noise_sampler": _noise(noise_kind, x_T, sigmas)}
        got = ours(denoise, x_T.clone(), sigmas, on_step=_record(ours_trace), **extra, **kwargs)

    assert len(ours_trace) == len(theirs_trace) == len(sigmas) - 1
    for (i, x_a, d_a), (j, x_b, d_b) in zip(ours_trace, theirs_trace):
        assert i == j
        torch.testing.assert_close(x_a, x_b, atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(d_a, d_b, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("ours, theirs, kwargs", [
    (dpm_solver.dpm_fast, "sample_dpm_fast", {}),
    (dpm_solver.dpm_fast, "sample_dpm_fast", {"eta": 0.5}),
    (dpm_solver.dpm_adaptive, "sample_dpm_adaptive", {}),
    (dpm_solver.dpm_adaptive, "sample_dpm_adaptive", {"order": 2, "rtol": 0.02}),
])
def test_dpm_solver_matches_k_diffusion(ours, theirs, kwargs) -> None:
    """ComfyUI feeds (sigma_min = last non-zero sigma, sigma_max = sigmas[0], n = len - 1)."""
    K = load_k_sampling()
    torch.manual_seed(0)
    x_T = torch.randn(2, 4, 8, 8) * 14.6
    sigmas = karras_sigmas(10, 0.0292, 14.6146)
    denoise = wiggly_denoiser()
    ref_args = (sigmas[-2], sigmas[0], len(sigmas) - 1) if theirs == "sample_dpm_fast" else (sigmas[-2], sigmas[0])
    expected = getattr(K, theirs)(denoise, x_T.clone(), *ref_args, disable=True,
                                  noise_sampler=gaussian_noise_sampler(x_T, seed=3), **kwargs)
    got = ours(denoise, x_T.clone(), sigmas, noise_sampler=gaussian_noise_sampler(x_T, seed=3), **kwargs)
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=1e-4)


def test_lms_last_step_to_zero_returns_x0() -> None:
    seen = []
    sigmas = karras_sigmas(5, 0.0292, 14.6146)
    x = samplers_multistep.lms(wiggly_denoiser(), torch.randn(1, 4, 4, 4) * 14.6, sigmas, on_step=seen.append)
    torch.testing.assert_close(x, seen[-1].x0)
