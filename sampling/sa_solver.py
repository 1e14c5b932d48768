"""SA-Solver: the stochastic Adams predictor-corrector of Xue et al. 2023 ("SA-Solver: Stochastic Adams
Solver for Fast Sampling of Diffusion Models", NeurIPS 2023, arXiv:2309.05019), data prediction.

In half-log-SNR time lambda (alpha = sigma * e^lambda, see `model_sampling.sigma_to_half_log_snr`) the
SDE with stochasticity tau has the exact solution from lambda_s to lambda_t (h = lambda_t - lambda_s)

    x_t = sigma_t / sigma_s * e^(-tau^2 h) x_s
          + alpha_t * integral_{lambda_s}^{lambda_t} (1 + tau^2) e^(-(1 + tau^2)(lambda_t - l)) x0(l) dl
          + sigma_t * sqrt(1 - e^(-2 tau^2 h)) * xi.

An Adams step replaces x0(l) by the Lagrange polynomial through the last few denoised points, so the
integral becomes sum_j b_j x0_j. The predictor goes from step i to i + 1 with the points up to i; the
corrector redoes the same step with the point just evaluated at the prediction (same noise). In PECE mode
the corrected state is evaluated again; otherwise (PEC) the evaluation at the prediction is reused.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from .core import Denoiser, StepHook, report
from .model_sampling import sigma_to_half_log_snr
from .noise import NoiseSampler

TauFn = Callable[[float], float]


@dataclass(frozen=True)
class TauWindow:
    """Stochasticity eta for sigma in [end_sigma, start_sigma], 0 (the ODE) elsewhere; eta <= 0: always
    the ODE. (The paper picks the window in time t; this works in sigma.) A value, so SAMPLER choices
    that carry one compare and pickle."""
    start_sigma: float
    end_sigma: float
    eta: float = 1.0

    def __call__(self, sigma: float) -> float:
        if self.eta <= 0:
            return 0.0
        return self.eta if self.start_sigma >= float(sigma) >= self.end_sigma else 0.0


def _exponential_moments(h: float, count: int, tau: float) -> list[float]:
    """m_p = integral_{-h}^{0} c e^(c u) u^p du for p < count, c = 1 + tau^2 (u = l - lambda_t).

    By parts: m_p = [e^(c u) u^p]_{-h}^{0} - (p / c) m_(p-1), m_0 = 1 - e^(-c h)."""
    c = 1.0 + tau * tau
    decay = torch.tensor(-c * h, dtype=torch.float64).exp().item()
    moments: list[float] = []
    for p in range(count):
        boundary = (1.0 if p == 0 else 0.0) - decay * (-h) ** p
        moments.append(boundary - (p / c) * moments[-1] if p else boundary)
    return moments


def adams_weights(points: Tensor, lambda_s: Tensor, lambda_t: Tensor, alpha_t: Tensor, tau: float,
                  simple_order_2: bool = False, is_corrector: bool = False) -> Tensor:
    """b_j, one per point: alpha_t times the integral of the Lagrange basis polynomial of point j (over
    the lambdas `points`) against the exponential kernel from lambda_s to lambda_t. Computed in float64 in
    coordinates relative to lambda_t (the basis does not depend on the origin): sum_j b_j u_j^p = alpha_t m_p.

    `simple_order_2` with two points: the paper's simplified second-order weights (appendix D)."""
    h = float(lambda_t - lambda_s)
    c = 1.0 + tau * tau
    if simple_order_2 and len(points) == 2:
        first = -torch.expm1(torch.tensor(-h * c, dtype=torch.float64)).item()
        if is_corrector:     # trapezoid-like: weight on the new point, the rest on the old one
            new = 0.5 * c * h
            weights = [first - new, new]
        else:                # two-step extrapolation from the last two points
            older = 0.5 * c * h * h / float(points[-2] - lambda_s)   # < 0: points[-2] < lambda_s
            weights = [older, first - older]
        return alpha_t.double() * torch.tensor(weights, dtype=torch.float64, device=alpha_t.device)
    u = points.double() - lambda_t.double()
    count = len(points)
    moments = torch.tensor(_exponential_moments(h, count, tau), dtype=torch.float64, device=u.device)
    powers = torch.stack([u ** p for p in range(count)])          # [p, j]
    return alpha_t.double() * torch.linalg.solve(powers, moments)


def _combine(weights: Tensor, x0s: list[Tensor]) -> Tensor:
    out = x0s[0] * weights[0].to(x0s[0].dtype)
    for w, x0 in zip(weights[1:], x0s[1:]):
        out = out + x0 * w.to(x0.dtype)
    return out


def sa_solver(denoise: Denoiser, x: Tensor, sigmas: Tensor, *, noise_sampler: NoiseSampler,
              on_step: StepHook | None = None, tau_func: TauFn | None = None, model_sampling=None,
              s_noise: float = 1.0, predictor_order: int = 3, corrector_order: int = 4, use_pece: bool = False,
              simple_order_2: bool = False, is_rectified_flow: bool = False) -> Tensor:
    """SA-Solver (PEC by default, PECE with `use_pece`). `tau_func(sigma)` is the stochasticity of the
    step that ends at sigma; default: 1 between the sigmas at 20 % and 80 % of sampling progress of
    `model_sampling` (ComfyUI's default window), the ODE elsewhere.

    Orders: the predictor uses min(predictor_order, points so far) points, the corrector
    min(corrector_order, points) including the new one; none on the first step. When the last sigma is
    0 both orders shrink towards the end (for stability) and the final step returns the denoised
    prediction; otherwise the result is the (uncorrected) prediction at the last sigma."""
    if len(sigmas) <= 1:
        return x
    if tau_func is None:
        if model_sampling is None:
            raise ValueError("sa_solver needs tau_func or model_sampling (for the default noise window)")
        tau_func = TauWindow(model_sampling.percent_to_sigma(0.2), model_sampling.percent_to_sigma(0.8))
    s_in = x.new_ones([x.shape[0]])
    lambdas = sigma_to_half_log_snr(sigmas, is_rectified_flow)
    history = max(predictor_order, corrector_order)
    is_ending_at_zero = float(sigmas[-1]) == 0.0
    n = len(sigmas)

    x_pred = x
    h = lambdas.new_zeros(())
    tau = 0.0
    noise: Tensor | float = 0.0
    x0s: list[Tensor] = []
    for i in range(n - 1):
        x0 = denoise(x_pred, sigmas[i] * s_in)
        report(on_step, i, x_pred, sigmas[i], x0)
        x0s = (x0s + [x0])[-history:]

        k_pred = min(predictor_order, len(x0s))
        is_corrected = i > 0 and not (sigmas[i + 1] == 0 and not use_pece)
        k_corr = min(corrector_order, len(x0s)) if is_corrected else 0
        if is_ending_at_zero:
            k_pred = min(k_pred, n - 2 - i)
            k_corr = min(k_corr, n - 1 - i)

        if k_corr == 0:
            x = x_pred
        else:   # redo the step from i - 1 with the point at i
            alpha = sigmas[i] * lambdas[i].exp()
            b = adams_weights(lambdas[i - k_corr + 1:i + 1], lambdas[i - 1], lambdas[i], alpha, tau,
                              simple_order_2, is_corrector=True)
            x = sigmas[i] / sigmas[i - 1] * (-(tau ** 2) * h).exp() * x + _combine(b, x0s[-k_corr:])
            if tau > 0 and s_noise > 0:
                x = x + noise
            if use_pece:
                x0 = denoise(x, sigmas[i] * s_in)
                x0s[-1] = x0

        if sigmas[i + 1] == 0:
            x = x0
            continue
        tau = tau_func(sigmas[i + 1])
        alpha = sigmas[i + 1] * lambdas[i + 1].exp()
        b = adams_weights(lambdas[i - k_pred + 1:i + 1], lambdas[i], lambdas[i + 1], alpha, tau, simple_order_2)
        h = lambdas[i + 1] - lambdas[i]
        x_pred = sigmas[i + 1] / sigmas[i] * (-(tau ** 2) * h).exp() * x + _combine(b, x0s[-k_pred:])
        if tau > 0 and s_noise > 0:
            noise = noise_sampler(sigmas[i], sigmas[i + 1]) * sigmas[i + 1] * (-2 * tau ** 2 * h).expm1().neg().sqrt() \
                * s_noise
            x_pred = x_pred + noise
    # Ending above 0 (e.g. KSamplerAdvanced's first pass with leftover noise): the prediction at the last
    # sigma. ComfyUI 0.3.64 returns the corrected state one step earlier there (docs/fidelity.md).
    return x if is_ending_at_zero else x_pred


def sa_solver_pece(denoise: Denoiser, x: Tensor, sigmas: Tensor, *, noise_sampler: NoiseSampler,
                   on_step: StepHook | None = None, tau_func: TauFn | None = None, model_sampling=None,
                   s_noise: float = 1.0, predictor_order: int = 3, corrector_order: int = 4,
                   simple_order_2: bool = False, is_rectified_flow: bool = False) -> Tensor:
    return sa_solver(denoise, x, sigmas, noise_sampler=noise_sampler, on_step=on_step, tau_func=tau_func,
                     model_sampling=model_sampling, s_noise=s_noise, predictor_order=predictor_order,
                     corrector_order=corrector_order, use_pece=True, simple_order_2=simple_order_2,
                     is_rectified_flow=is_rectified_flow)
