"""Toy problems with closed-form answers, shared by the sampling tests.

Gaussian data x0 ~ N(mu, s^2) (independently per element). For a noise path with mean m(sigma) and
std S(sigma) per element, the ideal denoiser is the posterior mean and the probability-flow ODE keeps
z = (x - m(sigma)) / S(sigma) constant (a Gaussian path's PF-ODE is the affine map between marginals):
- VE (Karras et al. 2022):        x = x0 + sigma n,           m = mu,             S^2 = s^2 + sigma^2
- rectified flow (SD3):           x = (1 - sigma) x0 + sigma n, m = (1 - sigma) mu, S^2 = (1 - sigma)^2 s^2 + sigma^2
"""
from __future__ import annotations

import torch
from torch import Tensor

MU = 0.3
S = 0.5


def _per_sample(sigma: Tensor, x: Tensor) -> Tensor:
    return sigma.reshape(sigma.shape[:1] + (1,) * (x.ndim - 1))


def gaussian_denoiser(mu: float = MU, s: float = S, is_rectified_flow: bool = False):
    """Ideal denoiser E[x0 | x] for N(mu, s^2) data."""
    def denoise(x: Tensor, sigma: Tensor) -> Tensor:
        sg = _per_sample(sigma, x).to(x.dtype)
        if is_rectified_flow:
            a = 1 - sg
            out = mu + a * s ** 2 / (a ** 2 * s ** 2 + sg ** 2) * (x - a * mu)
        else:
            out = mu + s ** 2 / (s ** 2 + sg ** 2) * (x - mu)
        return out
    return denoise


def exact_pf_ode(x: Tensor, sigma_from: float, sigma_to: float, mu: float = MU, s: float = S,
                 is_rectified_flow: bool = False) -> Tensor:
    """Exact probability-flow ODE solution from sigma_from to sigma_to for N(mu, s^2) data."""
    def mean_std(sig: float) -> tuple[float, float]:
        if is_rectified_flow:
            return (1 - sig) * mu, ((1 - sig) ** 2 * s ** 2 + sig ** 2) ** 0.5
        return mu, (s ** 2 + sig ** 2) ** 0.5
    m0, s0 = mean_std(sigma_from)
    m1, s1 = mean_std(sigma_to)
    return m1 + (x - m0) / s0 * s1


def wiggly_denoiser():
    """A smooth non-linear toy denoiser (not ideal for any data) for trajectory comparisons."""
    def denoise(x: Tensor, sigma: Tensor) -> Tensor:
        sg = _per_sample(sigma, x)
        return MU + S ** 2 / (S ** 2 + sg ** 2) * (x - MU) + 0.1 * torch.tanh(x) * sg / (1 + sg) \
            + 0.05 * torch.sin(3 * x) / (1 + sg ** 2)
    return denoise


class CountingDenoiser:
    def __init__(self, fn) -> None:
        self.fn = fn
        self.calls = 0

    def __call__(self, x: Tensor, sigma: Tensor) -> Tensor:
        self.calls += 1
        return self.fn(x, sigma)
