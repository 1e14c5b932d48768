"""Samplers k-diffusion lacks (and flow variants), against closed forms on Gaussian data.

Deterministic samplers must converge to the exact probability-flow ODE solution with their expected
order; stochastic ones must produce the data distribution N(MU, S^2); a few have one-line update rules
that we check step by step.
"""
from __future__ import annotations

import math

import pytest
import torch

from sampling import samplers as S
from sampling import samplers_multistep as M
from sampling import samplers_sde as SDE
from sampling import unipc as U
from sampling.noise import BrownianTreeNoiseSampler, gaussian_noise_sampler
from sampling.schedules import exponential_sigmas, karras_sigmas

from .toys import MU, exact_pf_ode, gaussian_denoiser, wiggly_denoiser
from .toys import S as STD

# name -> (sampler, order it must reach between 32 and 64 steps, minus slack)
ODE_CASES = {
    "euler": (S.euler, 1.0), "heun": (S.heun, 2.0), "heunpp2": (S.heunpp2, 1.0), "dpm_2": (S.dpm_2, 2.0),
    "lms": (M.lms, 3.0), "dpmpp_2m": (M.dpmpp_2m, 2.0), "ipndm": (M.ipndm, 2.0), "ipndm_v": (M.ipndm_v, 2.0),
    "deis": (M.deis, 2.5), "res_multistep": (M.res_multistep, 2.0),
    # order 3 inside, but ComfyUI's last step is order 1 without corrector: global order 2
    "uni_pc": (U.uni_pc, 2.0), "uni_pc_bh2": (U.uni_pc_bh2, 2.0),
    "exp_heun_2_x0": (SDE.exp_heun_2_x0, 2.0), "gradient_estimation": (M.gradient_estimation, 1.0),
}
FLOW_CASES = {"euler": (S.euler, 1.0), "heun": (S.heun, 2.0), "dpm_2": (S.dpm_2, 2.0),
              "exp_heun_2_x0": (lambda d, x, s: SDE.exp_heun_2_x0(d, x, s, is_rectified_flow=True), 2.0)}


def _errors(fn, is_rectified_flow: bool) -> list[float]:
    x = torch.randn(1, 1, 16, 16, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    errs = []
    for n in (16, 32, 64):
        if is_rectified_flow:
            sigmas, x_T = torch.linspace(0.99, 0.05, n + 1, dtype=torch.float64), x
        else:
            sigmas, x_T = exponential_sigmas(n + 1, 0.1, 10.0)[:-1].double(), x * 10
        out = fn(gaussian_denoiser(is_rectified_flow=is_rectified_flow), x_T.clone(), sigmas)
        exact = exact_pf_ode(x_T, float(sigmas[0]), float(sigmas[-1]), is_rectified_flow=is_rectified_flow)
        errs.append(float((out - exact).abs().max()))
    return errs


@pytest.mark.parametrize("name", list(ODE_CASES))
def test_ode_sampler_converges_with_its_order(name: str) -> None:
    fn, order = ODE_CASES[name]
    errs = _errors(fn, is_rectified_flow=False)
    observed = math.log2(errs[-2] / errs[-1])
    assert errs[-1] < errs[0], errs
    assert observed > order - 0.35, f"{name}: observed order {observed:.2f}, errors {errs}"


@pytest.mark.parametrize("name", list(FLOW_CASES))
def test_ode_sampler_on_rectified_flow_converges(name: str) -> None:
    fn, order = FLOW_CASES[name]
    errs = _errors(fn, is_rectified_flow=True)
    observed = math.log2(errs[-2] / errs[-1])
    assert observed > order - 0.35, f"{name}: observed order {observed:.2f}, errors {errs}"


STOCHASTIC = {
    "euler_ancestral": S.euler_ancestral, "dpm_2_ancestral": S.dpm_2_ancestral,
    "dpmpp_2s_ancestral": S.dpmpp_2s_ancestral, "ddpm": S.ddpm, "res_multistep_ancestral": M.res_multistep_ancestral,
    "dpmpp_sde": SDE.dpmpp_sde, "dpmpp_2m_sde": SDE.dpmpp_2m_sde, "dpmpp_3m_sde": SDE.dpmpp_3m_sde,
    "seeds_2": SDE.seeds_2, "exp_heun_2_x0_sde": SDE.exp_heun_2_x0_sde, "er_sde": SDE.er_sde,
}
FLOW_STOCHASTIC = {"euler_ancestral", "dpm_2_ancestral", "dpmpp_2s_ancestral", "dpmpp_sde", "dpmpp_2m_sde", "dpmpp_3m_sde",
                   "seeds_2", "exp_heun_2_x0_sde", "er_sde"}


STOCHASTIC_CASES = [(name, False) for name in STOCHASTIC] + [(name, True) for name in STOCHASTIC
                                                              if name in FLOW_STOCHASTIC]


@pytest.mark.parametrize("name,is_rectified_flow", STOCHASTIC_CASES,
                         ids=[f"{n}-{'flow' if f else 've'}" for n, f in STOCHASTIC_CASES])
def test_stochastic_sampler_reaches_the_data_distribution(name: str, is_rectified_flow: bool) -> None:
    g = torch.Generator().manual_seed(0)
    n = 150 if name in ("euler_ancestral", "ddpm") else 60     # first order: more steps for the same bias
    if is_rectified_flow:
        sigmas = torch.linspace(1, 0, n + 1, dtype=torch.float64)
        x = torch.randn(1, 2, 48, 48, generator=g, dtype=torch.float64)
        if name not in ("euler_ancestral", "dpm_2_ancestral", "dpmpp_2s_ancestral"):
            sigmas[0] = 0.9999   # what the driver does for flow (lambda is infinite at sigma = 1)
    else:
        sigmas = karras_sigmas(n, 0.0292, 14.6146).double()
        x = MU + torch.randn(1, 2, 48, 48, generator=g, dtype=torch.float64) * (STD ** 2 + 14.6146 ** 2) ** 0.5
    noise = BrownianTreeNoiseSampler(x, sigmas[sigmas > 0].min(), sigmas.max(), seed=5) if name.startswith("dpmpp_") \
        else gaussian_noise_sampler(x, 5)
    kwargs = {"is_rectified_flow": True} if is_rectified_flow else {}
    out = STOCHASTIC[name](gaussian_denoiser(is_rectified_flow=is_rectified_flow), x, sigmas, noise_sampler=noise, **kwargs)
    assert abs(float(out.mean()) - MU) < 0.02
    assert abs(float(out.std()) - STD) / STD < 0.06


def test_ddpm_matches_the_posterior_step_formula() -> None:
    """Ho et al. 2020 eq. 7 in VP coordinates, written out independently."""
    torch.manual_seed(0)
    sigmas = karras_sigmas(6, 0.0292, 14.6146).double()
    x_T = torch.randn(1, 2, 4, 4, dtype=torch.float64) * 14.6
    denoise = wiggly_denoiser()
    got = S.ddpm(denoise, x_T.clone(), sigmas, noise_sampler=gaussian_noise_sampler(x_T, 9))
    ns = gaussian_noise_sampler(x_T, 9)
    x = x_T.clone()
    for i in range(len(sigmas) - 1):
        s, s_prev = sigmas[i], sigmas[i + 1]
        x0 = denoise(x, s.reshape(1))
        ab, ab_prev = 1 / (1 + s ** 2), 1 / (1 + s_prev ** 2)
        xt = x * ab.sqrt()                                         # VP sample
        beta_t = 1 - ab / ab_prev
        mean = (ab_prev.sqrt() * beta_t / (1 - ab)) * x0 + ((1 - beta_t).sqrt() * (1 - ab_prev) / (1 - ab)) * xt
        if s_prev > 0:
            var = beta_t * (1 - ab_prev) / (1 - ab)
            x = (mean + var.sqrt() * ns(s, s_prev)) / ab_prev.sqrt()
        else:
            x = mean
    torch.testing.assert_close(got, x)


@pytest.mark.parametrize("is_rectified_flow", [False, True])
def test_lcm_jumps_to_x0_and_renoises(is_rectified_flow: bool) -> None:
    torch.manual_seed(0)
    sigmas = torch.tensor([0.9, 0.6, 0.3, 0.0], dtype=torch.float64) * (1 if is_rectified_flow else 10)
    x_T = torch.randn(1, 2, 4, 4, dtype=torch.float64)
    denoise = wiggly_denoiser()
    got = S.lcm(denoise, x_T.clone(), sigmas, noise_sampler=gaussian_noise_sampler(x_T, 2), is_rectified_flow=is_rectified_flow)
    ns = gaussian_noise_sampler(x_T, 2)
    x = x_T.clone()
    for i in range(3):
        x0 = denoise(x, sigmas[i].reshape(1))
        s = sigmas[i + 1]
        x = x0 if s == 0 else ((1 - s) * x0 + s * ns(sigmas[i], s) if is_rectified_flow else x0 + s * ns(sigmas[i], s))
    torch.testing.assert_close(got, x)


def _guided(cond, uncond):
    return lambda x, sigma: (cond(x, sigma), uncond(x, sigma))


def test_cfg_pp_with_equal_cond_and_uncond_is_the_plain_sampler() -> None:
    torch.manual_seed(0)
    sigmas = karras_sigmas(8, 0.0292, 14.6146)
    x_T = torch.randn(1, 4, 8, 8) * 14.6
    d = wiggly_denoiser()
    torch.testing.assert_close(S.euler_cfg_pp(_guided(d, d), x_T, sigmas), S.euler(d, x_T, sigmas), atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(M.dpmpp_2m_cfg_pp(_guided(d, d), x_T, sigmas), M.dpmpp_2m(d, x_T, sigmas),
                               atol=1e-4, rtol=1e-4)


def test_euler_cfg_pp_renoises_along_the_unconditional_prediction() -> None:
    """CFG++ (Chung et al. 2024, algorithm 1): x_next = x0_guided + sigma_next * (x - x0_uncond) / sigma."""
    torch.manual_seed(0)
    sigmas = karras_sigmas(5, 0.0292, 14.6146).double()
    x_T = torch.randn(1, 2, 4, 4, dtype=torch.float64) * 14.6
    cond, uncond = wiggly_denoiser(), gaussian_denoiser()
    got = S.euler_cfg_pp(_guided(cond, uncond), x_T.clone(), sigmas)
    x = x_T.clone()
    for i in range(len(sigmas) - 1):
        s, s_next = sigmas[i].reshape(1), sigmas[i + 1]
        x = cond(x, s) + s_next * (x - uncond(x, s)) / sigmas[i]
    torch.testing.assert_close(got, x)


def test_every_sampler_reports_each_step() -> None:
    from sampling.model_sampling import DiscreteSampling
    from sampling.samplers import BROWNIAN_SAMPLERS, CFG_PP_SAMPLERS, SAMPLERS, run_sampler
    sigmas = karras_sigmas(6, 0.0292, 14.6146)
    ms = DiscreteSampling()   # sa_solver's default noise window comes from it
    x_T = torch.randn(1, 4, 8, 8) * 14.6
    d = wiggly_denoiser()
    for name in SAMPLERS:
        seen = []
        den = _guided(d, d) if name in CFG_PP_SAMPLERS else d
        noise = BrownianTreeNoiseSampler(x_T, 0.0292, 14.6146, seed=0) if name in BROWNIAN_SAMPLERS \
            else gaussian_noise_sampler(x_T, 0)
        out = run_sampler(name, den, x_T, sigmas, on_step=seen.append, noise_sampler=noise, model_sampling=ms)
        assert torch.isfinite(out).all(), name
        assert len(seen) >= 1 and [s.index for s in seen][:2] == list(range(min(2, len(seen)))), name
        if name not in ("dpm_fast", "dpm_adaptive"):
            assert len(seen) == len(sigmas) - 1, name


def test_uni_pc_corrector_raises_the_interior_order() -> None:
    """With a negligible last step (ComfyUI's final step is order 1 without corrector), UniPC-3 with its
    corrector shows order 4 (Zhao et al. 2023, theorem 3.3)."""
    x = torch.randn(1, 1, 16, 16, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * 10
    for fn in (U.uni_pc, U.uni_pc_bh2):
        errs = []
        for n in (32, 64):
            s = exponential_sigmas(n + 1, 0.1, 10.0)[:-1].double()
            s = torch.cat([s, s[-1:] * (1 - 1e-4)])
            out = fn(gaussian_denoiser(), x.clone(), s)
            errs.append(float((out - exact_pf_ode(x, float(s[0]), float(s[-1]))).abs().max()))
        assert math.log2(errs[0] / errs[1]) > 3.5, errs


def test_gradient_estimation_with_gamma_one_is_euler() -> None:
    sigmas = karras_sigmas(8, 0.0292, 14.6146)
    x_T = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(1)) * 14.6
    d = wiggly_denoiser()
    torch.testing.assert_close(M.gradient_estimation(d, x_T, sigmas, ge_gamma=1.0), S.euler(d, x_T, sigmas))
    torch.testing.assert_close(M.gradient_estimation_cfg_pp(_guided(d, d), x_T, sigmas), M.gradient_estimation(d, x_T, sigmas),
                               atol=1e-4, rtol=1e-4)


def test_dpmpp_2s_ancestral_cfg_pp_ve_step_is_comfyuis() -> None:
    """ComfyUI 0.3.64 (fidelity matrix: 21/255 apart before this): each substep is
    r (x + d_1 - u_latest) + (1 - r) d, so the second substep pairs the start's guided d_1 with the
    midpoint's unconditional u_2 (with cond == uncond it is therefore not the plain sampler)."""
    sigma, sigma_next = torch.tensor(5.0), torch.tensor(2.0)
    x = torch.randn(1, 2, 4, 4, generator=torch.Generator().manual_seed(3)) * 5
    cond = wiggly_denoiser()

    def uncond(x_, s_):
        return 0.8 * cond(x_, s_) + 0.05 * torch.cos(x_)

    calls = []

    def guided(x_, s_):
        calls.append((x_, s_))
        return cond(x_, s_), uncond(x_, s_)

    got = S.dpmpp_2s_ancestral_cfg_pp(guided, x, torch.stack([sigma, sigma_next]), eta=0.0,
                                      noise_sampler=gaussian_noise_sampler(x, 0))
    d_1, u_1 = cond(x, sigma[None]), uncond(x, sigma[None])
    sigma_mid = (sigma * sigma_next) ** 0.5                    # t + h / 2 in t = -log sigma
    r = sigma_mid / sigma
    x_2 = r * (x + d_1 - u_1) + (1 - r) * d_1
    torch.testing.assert_close(calls[1][0], x_2)
    torch.testing.assert_close(calls[1][1], sigma_mid[None])
    d_2, u_2 = cond(x_2, sigma_mid[None]), uncond(x_2, sigma_mid[None])
    big_r = sigma_next / sigma
    torch.testing.assert_close(got, big_r * (x + d_1 - u_2) + (1 - big_r) * d_2)


@pytest.mark.parametrize("is_rectified_flow", [True])
def test_dpmpp_2s_ancestral_cfg_pp_with_equal_predictions_is_the_plain_sampler(is_rectified_flow: bool) -> None:
    sigmas = torch.linspace(1, 0, 9)
    sigmas[0] = 0.999
    x_T = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(1))
    d = wiggly_denoiser()
    got = S.dpmpp_2s_ancestral_cfg_pp(_guided(d, d), x_T, sigmas, noise_sampler=gaussian_noise_sampler(x_T, 4),
                                      is_rectified_flow=is_rectified_flow)
    expected = S.dpmpp_2s_ancestral(d, x_T, sigmas, noise_sampler=gaussian_noise_sampler(x_T, 4),
                                    is_rectified_flow=is_rectified_flow)
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=1e-4)
