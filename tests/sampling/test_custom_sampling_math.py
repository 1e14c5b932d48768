"""The custom-sampling schedules, sigma tools, Perp-Neg and the custom-only samplers, against
k-diffusion or their formulas written out independently here."""
from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.stats
import torch

from sampling import samplers, samplers_custom, schedules_extra, sigma_tools
from sampling.model_sampling import DiscreteSampling
from sampling.noise import gaussian_noise_sampler
from sampling.perp_neg import perp_neg
from sampling.samplers_sde import er_sde, reverse_time_sde_noise_scaler
from sampling.schedules import karras_sigmas

from .kdiff_ref import load_k_sampling
from .toys import wiggly_denoiser

SMIN, SMAX = 0.0291675, 14.614642


# --- schedules ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("rho", [1.0, 0.5, 2.5])
def test_polyexponential_matches_k_diffusion(rho) -> None:
    K = load_k_sampling()
    torch.testing.assert_close(schedules_extra.polyexponential_sigmas(12, SMIN, SMAX, rho),
                               K.get_sigmas_polyexponential(12, SMIN, SMAX, rho))


def test_polyexponential_with_rho_one_is_the_exponential_schedule() -> None:
    K = load_k_sampling()
    torch.testing.assert_close(schedules_extra.polyexponential_sigmas(9, SMIN, SMAX, 1.0),
                               K.get_sigmas_exponential(9, SMIN, SMAX))


def test_vp_matches_k_diffusion() -> None:
    K = load_k_sampling()
    torch.testing.assert_close(schedules_extra.vp_sigmas(15, 19.9, 0.1, 1e-3), K.get_sigmas_vp(15, 19.9, 0.1, 1e-3))
    torch.testing.assert_close(schedules_extra.vp_sigmas(5, 10.0, 0.3, 0.01), K.get_sigmas_vp(5, 10.0, 0.3, 0.01))


@pytest.mark.parametrize("mu, beta", [(0.0, 0.5), (0.4, 1.2)])
def test_laplace_is_the_laplace_quantile_function_in_log_sigma(mu, beta) -> None:
    n = 11
    sigmas = schedules_extra.laplace_sigmas(n, SMIN, SMAX, mu, beta)
    assert len(sigmas) == n
    u = np.linspace(0, 1, n)
    # descending: the upper quantiles first; ends clamped to [sigma_min, sigma_max]
    expected = np.clip(np.exp(scipy.stats.laplace.ppf(1 - u, loc=mu, scale=beta)), SMIN, SMAX)
    np.testing.assert_allclose(sigmas[1:-1].numpy(), expected[1:-1], rtol=1e-4)
    assert float(sigmas[0]) == pytest.approx(SMAX) and float(sigmas[-1]) == pytest.approx(SMIN)


@pytest.mark.parametrize("steps, denoise, timesteps", [(1, 1.0, [999]), (4, 1.0, [999, 899, 799, 699]),
                                                       (2, 0.5, [499, 399])])
def test_sd_turbo_takes_every_hundredth_timestep(steps, denoise, timesteps) -> None:
    ms = DiscreteSampling()
    expected = [float(ms.sigmas[t]) for t in timesteps] + [0.0]
    torch.testing.assert_close(schedules_extra.sd_turbo_sigmas(ms, steps, denoise), torch.tensor(expected))


def test_tabled_schedule_at_its_own_length_is_the_table_ending_in_zero() -> None:
    levels = schedules_extra.ALIGN_YOUR_STEPS_LEVELS["SD1"]
    sigmas = schedules_extra.tabled_sigmas(levels, 10)
    torch.testing.assert_close(sigmas, torch.tensor(list(levels[:-1]) + [0.0]))


def test_tabled_schedule_interpolates_in_log_space() -> None:
    """20 steps = 21 points: every second one is a published level, the others their geometric means."""
    levels = np.array(schedules_extra.ALIGN_YOUR_STEPS_LEVELS["SDXL"])
    sigmas = schedules_extra.tabled_sigmas(tuple(levels), 20).double().numpy()
    np.testing.assert_allclose(sigmas[0:-1:2], levels[:-1], rtol=1e-6)
    np.testing.assert_allclose(sigmas[1:-1:2], np.sqrt(levels[:-1] * levels[1:]), rtol=1e-6)
    assert sigmas[-1] == 0.0


def test_tabled_schedule_with_denoise_keeps_the_last_steps() -> None:
    levels = schedules_extra.OPTIMAL_STEPS_LEVELS["FLUX"]
    full = schedules_extra.tabled_sigmas(levels, 10)
    half = schedules_extra.tabled_sigmas(levels, 10, denoise=0.5)
    torch.testing.assert_close(half, full[-6:])
    assert len(schedules_extra.tabled_sigmas(levels, 10, denoise=0.0)) == 0


# --- sigma tools ----------------------------------------------------------------------------------------

def test_split_by_denoise_shares_the_boundary_sigma() -> None:
    sigmas = karras_sigmas(10, SMIN, SMAX)
    high, low = sigma_tools.split_by_denoise(sigmas, 0.3)
    assert len(low) == 4 and len(high) == 8
    assert float(high[-1]) == float(low[0]) and float(low[-1]) == 0.0
    torch.testing.assert_close(torch.cat([high, low[1:]]), sigmas)


def test_extend_intermediate_inserts_spaced_substeps_inside_the_range() -> None:
    sigmas = torch.tensor([10.0, 6.0, 2.0, 0.0])
    linear = sigma_tools.extend_intermediate(sigmas, 2, -1.0, 5.0, "linear")
    torch.testing.assert_close(linear, torch.tensor([10.0, 8.0, 6.0, 4.0, 2.0, 0.0]))
    cosine = sigma_tools.extend_intermediate(sigmas, 3, 8.0, 0.0, "cosine")
    f = [math.sin(u * math.pi / 2) for u in (1 / 3, 2 / 3)]
    expected = [10.0, 6.0] + [6.0 - 4.0 * v for v in f] + [2.0] + [2.0 - 2.0 * v for v in f] + [0.0]
    torch.testing.assert_close(cosine, torch.tensor(expected))
    with pytest.raises(ValueError, match="spacing"):
        sigma_tools.extend_intermediate(sigmas, 2, -1.0, 0.0, "cubic")


def test_with_first_sigma_and_flip_leave_the_input_alone() -> None:
    sigmas = torch.tensor([3.0, 1.0, 0.0])
    torch.testing.assert_close(sigma_tools.with_first_sigma(sigmas, 136.0), torch.tensor([136.0, 1.0, 0.0]))
    torch.testing.assert_close(sigma_tools.flip(sigmas), torch.tensor([0.0001, 1.0, 3.0]))
    torch.testing.assert_close(sigmas, torch.tensor([3.0, 1.0, 0.0]))


# --- Perp-Neg -------------------------------------------------------------------------------------------

def test_perp_neg_drops_the_negative_component_along_the_positive() -> None:
    g = torch.Generator().manual_seed(0)
    p, n, e = (torch.randn(2, 4, 8, 8, generator=g) for _ in range(3))
    out = perp_neg(p, n, e, neg_scale=1.5, cfg=6.0)
    # written out with NumPy over the whole batch
    pos, neg = (p - e).double().numpy(), (n - e).double().numpy()
    perp = neg - (neg * pos).sum() / (pos ** 2).sum() * pos
    np.testing.assert_allclose(out.double().numpy(), e.double().numpy() + 6.0 * (pos - 1.5 * perp), rtol=1e-4, atol=1e-5)
    # a negative moved along the positive direction changes nothing
    torch.testing.assert_close(perp_neg(p, n + 0.7 * (p - e), e, 1.5, 6.0), out, rtol=1e-4, atol=1e-4)
    # neg_scale 0 is plain CFG against the empty prompt
    torch.testing.assert_close(perp_neg(p, n, e, 0.0, 6.0), e + 6.0 * (p - e))


# --- custom samplers ------------------------------------------------------------------------------------

def _x_T(seed: int = 0) -> torch.Tensor:
    return torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(seed)) * SMAX


def test_er_sde_as_a_first_order_ode_is_euler() -> None:
    """noise scale lambda^1 (reverse-time SDE with eta 0) and no noise: r = sigma_t / sigma_s and the
    ER step is x_t = (sigma_t / sigma_s) x + (1 - sigma_t / sigma_s) x0, the Euler (DDIM) step."""
    denoise, sigmas = wiggly_denoiser(), karras_sigmas(8, SMIN, SMAX)
    x = _x_T()
    ode = er_sde(denoise, x, sigmas, noise_sampler=gaussian_noise_sampler(x, 1), s_noise=0.0, max_stage=1,
                 noise_scaler=reverse_time_sde_noise_scaler(0.0))
    torch.testing.assert_close(ode, samplers.euler(denoise, x, sigmas), rtol=1e-4, atol=1e-4)
    default = er_sde(denoise, x, sigmas, noise_sampler=gaussian_noise_sampler(x, 1), s_noise=0.0, max_stage=1)
    assert not torch.allclose(default, ode, atol=1e-3)


def test_reverse_time_noise_scaler_is_a_value() -> None:
    a, b = reverse_time_sde_noise_scaler(0.5), reverse_time_sde_noise_scaler(0.5)
    assert a == b and hash(a) == hash(b)
    torch.testing.assert_close(a(torch.tensor([4.0])), torch.tensor([8.0]))


def test_euler_cfg_pp_alternative_is_euler_without_guidance_and_differs_with_it() -> None:
    denoise, sigmas = wiggly_denoiser(), karras_sigmas(6, SMIN, SMAX)
    x = _x_T(1)
    same = samplers_custom.euler_cfg_pp_alternative(lambda x, s: (denoise(x, s), denoise(x, s)), x, sigmas)
    torch.testing.assert_close(same, samplers.euler(denoise, x, sigmas))
    # d = (x - 2 x0 + x0_uncond) / sigma, written out for one step
    guided = lambda x, s: (denoise(x, s), 0.5 * denoise(x, s))
    one = samplers_custom.euler_cfg_pp_alternative(guided, x, sigmas[:2])
    x0 = denoise(x, sigmas[0].expand(2))
    torch.testing.assert_close(one, x + (x - 2 * x0 + 0.5 * x0) / sigmas[0] * (sigmas[1] - sigmas[0]))


def test_custom_only_samplers_are_found_but_not_listed_for_ksampler() -> None:
    assert samplers.get_sampler("euler_cfg_pp_alternative") is samplers_custom.euler_cfg_pp_alternative
    assert "euler_cfg_pp_alternative" not in samplers.SAMPLERS
    assert "euler_cfg_pp_alternative" in samplers.CFG_PP_SAMPLERS
