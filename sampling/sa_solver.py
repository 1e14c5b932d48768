"""SA-Solver (Xue et al. 2023, "SA-Solver: stochastic Adams solver for fast sampling of diffusion models",
NeurIPS 2023, arXiv:2309.05019), data prediction, in half-log-SNR time lambda = log(alpha / sigma).

The SDE family (eq. 7) with stochasticity tau(t) has the exact solution (eq. 10)
    x_t = (sigma_t / sigma_s) e^{-tau^2 h} x_s + alpha_t (1 + tau^2) int_{lambda_s}^{lambda_t} e^{-(1 + tau^2)(lambda_t - l)} x0(l) dl
          + sigma_t sqrt(1 - e^{-2 tau^2 h}) z,                    h = lambda_t - lambda_s.
The Adams predictor replaces x0(l) by the Lagrange polynomial through the last k x0 predictions (eq. 15);
the corrector (eq. 18) does the same through the k points ending at the new one, reusing the predictor's
noise. So each step needs the integrals b_j = alpha_t (1 + tau^2) int e^{-(1 + tau^2)(lambda_t - l)} L_j(l) dl,
computed here by Gauss-Legendre quadrature (the integrand is a polynomial times an exponential over one
step: 24 nodes are exact to float64 rounding for the orders used). Appendix D's simplified order-2 pair is
`simple_order_2`. `tau_interval` is the paper's recommended schedule: tau = eta inside [end, start] sigma.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from .core import Denoiser, StepHook, report
from .model_sampling import sigma_to_half_log_snr
from .noise import NoiseSampler

QUADRATURE_POINTS = 24


@dataclass(frozen=True)
class tau_interval:   # noqa: N801 - used like a function: tau_interval(start_sigma, end_sigma, eta)
    """tau(sigma) = eta for end_sigma <= sigma <= start_sigma, else 0 (an ODE step); eta <= 0: always 0."""
    start_sigma: float
    end_sigma: float
    eta: float = 1.0

    def __call__(self, sigma: Tensor | float) -> float:
        if self.eta <= 0:
            return 0.0
        sigma = float(sigma)
        return self.eta if self.end_sigma <= sigma <= self.start_sigma else 0.0


def adams_coefficients(sigma_next: Tensor, nodes: Tensor, lambda_s: Tensor, lambda_t: Tensor, tau: float) -> Tensor:
    """b_j for each Lagrange node (the lambdas of the x0 predictions, oldest first), as in the module notes."""
    rate = 1.0 + tau ** 2
    points, weights = np.polynomial.legendre.leggauss(QUADRATURE_POINTS)
    lo, hi = float(lambda_s), float(lambda_t)
    ls = (hi - lo) / 2 * points + (hi + lo) / 2                                  # quadrature points in [s, t]
    ws = (hi - lo) / 2 * weights * rate * np.exp(-rate * (hi - ls))
    lam = nodes.double().cpu().numpy()
    coeffs = []
    for j in range(len(lam)):
        basis = np.ones_like(ls)
        for m in range(len(lam)):
            if m != j:
                basis *= (ls - lam[m]) / (lam[j] - lam[m])
        coeffs.append(float((ws * basis).sum()))
    alpha_t = sigma_next * lambda_t.exp()
    return alpha_t * torch.tensor(coeffs, dtype=sigma_next.dtype, device=sigma_next.device)


def simple_order_2_coefficients(sigma_next: Tensor, nodes: Tensor, lambda_s: Tensor, lambda_t: Tensor, tau: float,
                                is_corrector: bool) -> Tensor:
    """Appendix D's order-2 shortcut: b = [b_older, b_newer] from first-order expansions of the integral."""
    rate = 1.0 + tau ** 2
    h = lambda_t - lambda_s
    alpha_t = sigma_next * lambda_t.exp()
    whole = alpha_t * (-h * rate).expm1().neg()
    if is_corrector:
        older = alpha_t * (0.5 * rate * h)
        return torch.stack([older, whole - older])
    older = alpha_t * (0.5 * rate * h ** 2) / (nodes[-2] - lambda_s)
    return torch.stack([older, whole - older])


def _combine(predictions: list[Tensor], coefficients: Tensor) -> Tensor:
    return sum(c * p for c, p in zip(coefficients.to(predictions[0].dtype), predictions))


def sa_solver(denoise: Denoiser, x: Tensor, sigmas: Tensor, *, noise_sampler: NoiseSampler,
              on_step: StepHook | None = None, tau_func: Callable[[Tensor], float] | None = None,
              s_noise: float = 1.0, predictor_order: int = 3, corrector_order: int = 4, use_pece: bool = False,
              simple_order_2: bool = False, is_rectified_flow: bool = False, model_sampling=None) -> Tensor:
    """Predictor-corrector SA-Solver; `use_pece` re-evaluates the model at the corrected point."""
    if len(sigmas) <= 1:
        return x
    if tau_func is None:
        if model_sampling is None:
            raise ValueError("sa_solver needs tau_func or the model sampling (for its default SDE interval)")
        tau_func = tau_interval(model_sampling.percent_to_sigma(0.2), model_sampling.percent_to_sigma(0.8), 1.0)
    s_in = x.new_ones([x.shape[0]])
    lambdas = sigma_to_half_log_snr(sigmas, is_rectified_flow)
    kept = max(predictor_order, corrector_order)
    is_ending_at_zero = float(sigmas[-1]) == 0.0
    x_pred, h, tau, noise = x, None, 0.0, None
    predictions: list[Tensor] = []

    def coefficients(sigma_next, nodes, lam_s, lam_t, tau_now, is_corrector):
        if simple_order_2 and len(nodes) == 2:
            return simple_order_2_coefficients(sigma_next, nodes, lam_s, lam_t, tau_now, is_corrector)
        return adams_coefficients(sigma_next, nodes, lam_s, lam_t, tau_now)

    steps = len(sigmas) - 1
    for i in range(steps):
        x0 = denoise(x_pred, sigmas[i] * s_in)
        report(on_step, i, x_pred, sigmas[i], x0)
        predictions = (predictions + [x0])[-kept:]
        p_order = min(predictor_order, len(predictions))
        c_order = 0 if i == 0 or (sigmas[i + 1] == 0 and not use_pece) else min(corrector_order, len(predictions))
        if is_ending_at_zero:                        # lower orders near the end, for stability
            p_order = min(p_order, steps - 1 - i)
            c_order = min(c_order, steps - i)

        if c_order == 0:
            x = x_pred
        else:                                        # corrector: from x_{i-1} to sigma_i through the new x0
            b = coefficients(sigmas[i], lambdas[i - c_order + 1:i + 1], lambdas[i - 1], lambdas[i], tau, True)
            x = sigmas[i] / sigmas[i - 1] * (-(tau ** 2) * h).exp() * x + _combine(predictions[-c_order:], b)
            if tau > 0 and s_noise > 0:
                x = x + noise                        # the predictor's Brownian increment
            if use_pece:
                x0 = denoise(x, sigmas[i] * s_in)
                predictions[-1] = x0

        if sigmas[i + 1] == 0:
            x = x0
            continue
        tau = tau_func(sigmas[i + 1])                # predictor: from x_i to sigma_{i+1}
        b = coefficients(sigmas[i + 1], lambdas[i - p_order + 1:i + 1], lambdas[i], lambdas[i + 1], tau, False)
        h = lambdas[i + 1] - lambdas[i]
        x_pred = sigmas[i + 1] / sigmas[i] * (-(tau ** 2) * h).exp() * x + _combine(predictions[-p_order:], b)
        if tau > 0 and s_noise > 0:
            noise = (noise_sampler(sigmas[i], sigmas[i + 1]) * sigmas[i + 1]
                     * (-2 * tau ** 2 * h).expm1().neg().sqrt() * s_noise)
            x_pred = x_pred + noise
    return x


def sa_solver_pece(denoise: Denoiser, x: Tensor, sigmas: Tensor, *, noise_sampler: NoiseSampler,
                   on_step: StepHook | None = None, tau_func: Callable[[Tensor], float] | None = None,
                   s_noise: float = 1.0, predictor_order: int = 3, corrector_order: int = 4,
                   simple_order_2: bool = False, is_rectified_flow: bool = False, model_sampling=None) -> Tensor:
    """SA-Solver in PECE mode (predict, evaluate, correct, evaluate)."""
    return sa_solver(denoise, x, sigmas, noise_sampler=noise_sampler, on_step=on_step, tau_func=tau_func,
                     s_noise=s_noise, predictor_order=predictor_order, corrector_order=corrector_order,
                     use_pece=True, simple_order_2=simple_order_2, is_rectified_flow=is_rectified_flow,
                     model_sampling=model_sampling)
