"""SA-Solver and SEEDS-3 (their weights are checked in test_seeds_sa_solver.py): first-order steps against Euler
(the exponential integrator's data-prediction step in VE is the DDIM / Euler step), convergence on the
Gaussian toy to the exact probability-flow ODE solution."""
from __future__ import annotations

import pytest
import torch

from sampling import samplers
from sampling.noise import gaussian_noise_sampler
from sampling.sa_solver import sa_solver, TauWindow
from sampling.samplers_sde import seeds_3
from sampling.schedules import karras_sigmas

from .toys import exact_pf_ode, gaussian_denoiser, wiggly_denoiser

SMIN, SMAX = 0.0291675, 14.614642


def test_first_order_ode_sa_solver_is_euler() -> None:
    denoise, sigmas = wiggly_denoiser(), karras_sigmas(7, SMIN, SMAX)
    x = torch.randn(2, 4, 6, 6, generator=torch.Generator().manual_seed(0)) * SMAX
    out = sa_solver(denoise, x, sigmas, noise_sampler=gaussian_noise_sampler(x, 1), tau_func=TauWindow(0, 0, 0.0),
                    predictor_order=1, corrector_order=0)
    torch.testing.assert_close(out, samplers.euler(denoise, x, sigmas), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("name", ["sa_solver", "sa_solver_pece", "seeds_3"])
def test_deterministic_runs_converge_to_the_exact_pf_ode(name) -> None:
    denoise = gaussian_denoiser()
    x = torch.randn(1, 1, 16, 16, generator=torch.Generator().manual_seed(3)).double() * SMAX
    sigmas = karras_sigmas(30, SMIN, SMAX).double()
    kwargs = {"tau_func": TauWindow(0, 0, 0.0)} if name.startswith("sa") else {"eta": 0.0}
    out = samplers.run_sampler(name, denoise, x, sigmas[:-1], noise_sampler=gaussian_noise_sampler(x, 1), **kwargs)
    torch.testing.assert_close(out, exact_pf_ode(x, SMAX, float(sigmas[-2])), rtol=5e-3, atol=5e-3)


def test_stochastic_runs_are_seeded_and_stay_finite() -> None:
    denoise, sigmas = wiggly_denoiser(), karras_sigmas(8, SMIN, SMAX)
    x = torch.randn(2, 4, 6, 6, generator=torch.Generator().manual_seed(0)) * SMAX
    run = lambda fn, **kw: fn(denoise, x, sigmas, noise_sampler=gaussian_noise_sampler(x, 5), **kw)
    a = run(sa_solver, tau_func=TauWindow(10.0, 0.1, 1.0))
    torch.testing.assert_close(a, run(sa_solver, tau_func=TauWindow(10.0, 0.1, 1.0)))
    assert torch.isfinite(a).all()
    assert not torch.allclose(a, run(sa_solver, tau_func=TauWindow(0, 0, 0.0)), atol=1e-3)
    b = run(seeds_3)
    assert torch.isfinite(b).all() and not torch.allclose(b, run(seeds_3, eta=0.0), atol=1e-3)
