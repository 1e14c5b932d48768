"""SEEDS-3 (Gonzalez et al. 2023) and SA-Solver (Xue et al. 2023), against closed forms.

Neither is in k-diffusion. The checks: the Adams weights integrate polynomials of degree < K exactly
(against Gauss-Legendre quadrature), the deterministic variants converge to the exact probability-flow
ODE solution of Gaussian data with their order, and the stochastic variants produce the data
distribution. bench/fidelity.py compares both with ComfyUI pixel by pixel.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from sampling import samplers_sde as SDE
from sampling.noise import gaussian_noise_sampler
from sampling.sa_solver import adams_weights, sa_solver, sa_solver_pece, TauWindow
from sampling import samplers
from sampling.samplers import HALF_LOG_SNR_SAMPLERS, SAMPLERS
from sampling.schedules import exponential_sigmas, karras_sigmas

from .toys import MU, exact_pf_ode, gaussian_denoiser, wiggly_denoiser
from .toys import S as STD

ODE = TauWindow(0.0, 0.0, eta=0.0)          # tau = 0 everywhere
SDE_EVERYWHERE = TauWindow(1e9, 0.0, eta=1.0)


def _kernel_integral(poly, lam_s: float, lam_t: float, tau: float) -> float:
    """integral_{lam_s}^{lam_t} (1 + tau^2) e^(-(1 + tau^2)(lam_t - l)) poly(l) dl by 40-point Gauss-Legendre."""
    nodes, weights = np.polynomial.legendre.leggauss(40)
    half = (lam_t - lam_s) / 2
    ls = lam_s + half * (nodes + 1)
    c = 1 + tau * tau
    return float(np.sum(weights * c * np.exp(-c * (lam_t - ls)) * poly(ls)) * half)


@pytest.mark.parametrize("count", [1, 2, 3, 4])
@pytest.mark.parametrize("tau", [0.0, 0.7, 1.0])
def test_adams_weights_integrate_polynomials_exactly(count: int, tau: float) -> None:
    points = torch.tensor([-1.9, -1.2, -0.7, -0.4][-count:], dtype=torch.float64)
    lam_s, lam_t, alpha = torch.tensor(-0.4, dtype=torch.float64), torch.tensor(0.15, dtype=torch.float64), \
        torch.tensor(1.3, dtype=torch.float64)
    b = adams_weights(points, lam_s, lam_t, alpha, tau)
    rng = np.random.default_rng(count)
    for degree in range(count):
        coeffs = rng.normal(size=degree + 1)
        poly = np.polynomial.Polynomial(coeffs)
        expected = 1.3 * _kernel_integral(poly, -0.4, 0.15, tau)
        got = float((b * torch.from_numpy(poly(points.numpy()))).sum())
        assert got == pytest.approx(expected, rel=1e-10, abs=1e-12), (degree, got, expected)


def test_simple_order_2_weights_are_the_small_step_limit_of_the_exact_ones() -> None:
    points = torch.tensor([-1.0, -0.6], dtype=torch.float64)
    lam_s, alpha = torch.tensor(-0.6, dtype=torch.float64), torch.tensor(1.0, dtype=torch.float64)
    for h in (1e-2, 1e-3):
        lam_t = lam_s + h
        exact = adams_weights(points, lam_s, lam_t, alpha, 0.5)
        simple = adams_weights(points, lam_s, lam_t, alpha, 0.5, simple_order_2=True)
        assert float(simple.sum()) == pytest.approx(float(exact.sum()), rel=1e-12)   # same constant term
        assert torch.allclose(simple, exact, rtol=0, atol=h ** 3 * 10)                # O(h^3) apart
    corrector = adams_weights(torch.tensor([-0.6, -0.5], dtype=torch.float64), lam_s, lam_s + 0.1, alpha, 0.0,
                              simple_order_2=True, is_corrector=True)
    assert float(corrector[1]) == pytest.approx(0.05)                                 # c h / 2 on the new point


def _errors(fn) -> list[float]:
    x = torch.randn(1, 1, 16, 16, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    errs = []
    for n in (8, 16, 32):
        sigmas, x_T = exponential_sigmas(n + 1, 0.1, 10.0)[:-1].double(), x * 10
        out = fn(gaussian_denoiser(), x_T.clone(), sigmas)
        exact = exact_pf_ode(x_T, float(sigmas[0]), float(sigmas[-1]))
        errs.append(float((out - exact).abs().max()))
    return errs


ODE_ORDERS = {
    "seeds_3 (eta 0)": (lambda d, x, s: SDE.seeds_3(d, x, s, noise_sampler=None, eta=0.0), 3.0),
    "sa_solver (tau 0)": (lambda d, x, s: sa_solver(d, x, s, noise_sampler=None, tau_func=ODE), 3.0),
    "sa_solver_pece (tau 0)": (lambda d, x, s: sa_solver_pece(d, x, s, noise_sampler=None, tau_func=ODE), 3.0),
    "sa_solver order 2 (tau 0)": (lambda d, x, s: sa_solver(d, x, s, noise_sampler=None, tau_func=ODE,
                                                            predictor_order=2, corrector_order=2), 2.0),
}


@pytest.mark.parametrize("name", list(ODE_ORDERS))
def test_deterministic_variants_converge_with_their_order(name: str) -> None:
    fn, order = ODE_ORDERS[name]
    errs = _errors(fn)
    observed = math.log2(errs[-2] / errs[-1])
    assert errs[-1] < 1e-3, errs
    assert observed > order - 0.35, f"{name}: observed order {observed:.2f}, errors {errs}"


def test_predictor_alone_is_an_adams_bashforth_of_lower_order_than_with_the_corrector() -> None:
    """Corrector order 0 is the bare predictor: the corrector must make the error smaller."""
    bare = _errors(lambda d, x, s: sa_solver(d, x, s, noise_sampler=None, tau_func=ODE, corrector_order=0))
    corrected = _errors(lambda d, x, s: sa_solver(d, x, s, noise_sampler=None, tau_func=ODE))
    assert corrected[-1] < bare[-1] / 2, (bare, corrected)


STOCHASTIC = {
    "seeds_3": lambda d, x, s, ns: SDE.seeds_3(d, x, s, noise_sampler=ns),
    "sa_solver": lambda d, x, s, ns: sa_solver(d, x, s, noise_sampler=ns, tau_func=SDE_EVERYWHERE),
    "sa_solver_pece": lambda d, x, s, ns: sa_solver_pece(d, x, s, noise_sampler=ns, tau_func=SDE_EVERYWHERE),
}


@pytest.mark.parametrize("name", list(STOCHASTIC))
def test_stochastic_variants_reach_the_data_distribution(name: str) -> None:
    g = torch.Generator().manual_seed(0)
    sigmas = karras_sigmas(40, 0.0292, 14.6146).double()
    x = MU + torch.randn(1, 2, 48, 48, generator=g, dtype=torch.float64) * (STD ** 2 + 14.6146 ** 2) ** 0.5
    out = STOCHASTIC[name](gaussian_denoiser(), x, sigmas, gaussian_noise_sampler(x, 5))
    assert abs(float(out.mean()) - MU) < 0.02
    assert abs(float(out.std()) - STD) / STD < 0.06


def test_sa_solver_noise_is_used_only_inside_the_tau_window() -> None:
    sigmas = karras_sigmas(8, 0.0292, 14.6146).double()
    x = torch.randn(1, 1, 8, 8, generator=torch.Generator().manual_seed(1), dtype=torch.float64) * 14.6
    draws: list[tuple[float, float]] = []
    base = gaussian_noise_sampler(x, 3)

    def counting(sigma, sigma_next):
        draws.append((float(sigma), float(sigma_next)))
        return base(sigma, sigma_next)

    window = TauWindow(float(sigmas[2]), float(sigmas[5]))
    sa_solver(gaussian_denoiser(), x, sigmas, noise_sampler=counting, tau_func=window)
    # a predictor step from i to i + 1 draws when sigma_{i+1} lies in the window: i + 1 in 2..5
    assert draws == [(float(sigmas[i]), float(sigmas[i + 1])) for i in range(1, 5)]


def test_sa_solver_default_window_comes_from_model_sampling_and_is_required() -> None:
    class Ms:
        def percent_to_sigma(self, percent: float) -> float:
            return {0.2: 5.0, 0.8: 0.5}[percent]
    sigmas = karras_sigmas(6, 0.0292, 14.6146).double()
    x = torch.randn(1, 1, 4, 4, generator=torch.Generator().manual_seed(2), dtype=torch.float64) * 14.6
    seen = []
    noise = gaussian_noise_sampler(x, 3)
    sa_solver(gaussian_denoiser(), x, sigmas, model_sampling=Ms(),
              noise_sampler=lambda s, t: seen.append(float(t)) or noise(s, t))
    assert seen and all(0.5 <= t <= 5.0 for t in seen)
    with pytest.raises(ValueError, match="tau_func or model_sampling"):
        sa_solver(gaussian_denoiser(), x, sigmas, noise_sampler=noise)


def test_registered_in_comfyui_order_and_in_half_log_snr_time() -> None:
    names = list(SAMPLERS)
    i = names.index("seeds_2")
    assert names[i:i + 4] == ["seeds_2", "seeds_3", "sa_solver", "sa_solver_pece"]
    assert {"seeds_3", "sa_solver", "sa_solver_pece"} <= HALF_LOG_SNR_SAMPLERS


def test_sa_solver_final_step_returns_the_denoised_prediction() -> None:
    sigmas = torch.tensor([10.0, 3.0, 1.0, 0.0], dtype=torch.float64)
    x = torch.randn(1, 1, 4, 4, generator=torch.Generator().manual_seed(4), dtype=torch.float64) * 10
    calls = []

    def denoise(x_, sigma):
        calls.append(float(sigma[0]))
        return gaussian_denoiser()(x_, sigma)

    out = sa_solver(denoise, x, sigmas, noise_sampler=None, tau_func=ODE)
    assert calls == [10.0, 3.0, 1.0]                    # PEC: one evaluation per step
    assert torch.isfinite(out).all()
    calls.clear()
    sa_solver_pece(denoise, x, sigmas, noise_sampler=None, tau_func=ODE)
    assert calls == [10.0, 3.0, 3.0, 1.0, 1.0]          # PECE: the corrected states are evaluated again


def test_first_order_ode_sa_solver_is_euler() -> None:
    """The exponential integrator's first-order data-prediction step in VE is the DDIM / Euler step."""
    denoise, sigmas = wiggly_denoiser(), karras_sigmas(7, 0.0291675, 14.614642)
    x = torch.randn(2, 4, 6, 6, generator=torch.Generator().manual_seed(0)) * 14.614642
    out = sa_solver(denoise, x, sigmas, noise_sampler=gaussian_noise_sampler(x, 1), tau_func=ODE,
                    predictor_order=1, corrector_order=0)
    torch.testing.assert_close(out, samplers.euler(denoise, x, sigmas), rtol=1e-4, atol=1e-4)


def test_stochastic_runs_are_seeded_and_differ_from_the_ode() -> None:
    denoise, sigmas = wiggly_denoiser(), karras_sigmas(8, 0.0291675, 14.614642)
    x = torch.randn(2, 4, 6, 6, generator=torch.Generator().manual_seed(0)) * 14.614642
    run = lambda fn, **kw: fn(denoise, x, sigmas, noise_sampler=gaussian_noise_sampler(x, 5), **kw)
    a = run(sa_solver, tau_func=TauWindow(10.0, 0.1, 1.0))
    torch.testing.assert_close(a, run(sa_solver, tau_func=TauWindow(10.0, 0.1, 1.0)))
    assert torch.isfinite(a).all()
    assert not torch.allclose(a, run(sa_solver, tau_func=ODE), atol=1e-3)
    b = run(SDE.seeds_3)
    assert torch.isfinite(b).all() and not torch.allclose(b, run(SDE.seeds_3, eta=0.0), atol=1e-3)
