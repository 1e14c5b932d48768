"""Shared sampler vocabulary: the Denoiser contract, the per-step hook, and step formulas."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

Denoiser = Callable[[Tensor, Tensor], Tensor]                     # (x, sigma[B]) -> x0
GuidedDenoiser = Callable[[Tensor, Tensor], tuple[Tensor, Tensor]]  # (x, sigma[B]) -> (x0, uncond x0)


@dataclass(frozen=True)
class Step:
    index: int
    x: Tensor
    sigma: Tensor
    x0: Tensor


StepHook = Callable[[Step], None]


def report(on_step: StepHook | None, i: int, x: Tensor, sigma: Tensor, x0: Tensor) -> None:
    if on_step is not None:
        on_step(Step(index=i, x=x, sigma=sigma, x0=x0))


def to_d(x: Tensor, sigma: Tensor, x0: Tensor) -> Tensor:
    """dx/dsigma of the probability-flow ODE: (x - x0) / sigma (Karras et al. 2022, eq. 3 with s = 1)."""
    return (x - x0) / sigma


def ancestral_step(sigma: Tensor, sigma_next: Tensor, eta: float = 1.0) -> tuple[Tensor, Tensor]:
    """Split a step into a deterministic move to sigma_down and fresh noise sigma_up with
    sigma_down^2 + sigma_up^2 = sigma_next^2 (DDPM/DDIM ancestral step in VE form; eta as in
    Song et al. 2021, DDIM eq. 16; k-diffusion `get_ancestral_step`)."""
    if not eta:
        return sigma_next, sigma_next * 0
    sigma_up = torch.minimum(sigma_next, eta * (sigma_next ** 2 * (sigma ** 2 - sigma_next ** 2) / sigma ** 2) ** 0.5)
    sigma_down = (sigma_next ** 2 - sigma_up ** 2) ** 0.5
    return sigma_down, sigma_up


def flow_ancestral_step(sigma: Tensor, sigma_next: Tensor, eta: float = 1.0) -> tuple[Tensor, Tensor, Tensor]:
    """Rectified-flow ancestral step (ComfyUI `sample_euler_ancestral_RF`): move to
    sigma_down = sigma_next (1 + (sigma_next/sigma - 1) eta), rescale by alpha_next / alpha_down and add
    noise of std sqrt(sigma_next^2 - sigma_down^2 alpha_next^2 / alpha_down^2), alpha = 1 - sigma.
    Returns (sigma_down, alpha ratio, renoise std)."""
    sigma_down = sigma_next * (1 + (sigma_next / sigma - 1) * eta)
    alpha_next, alpha_down = 1 - sigma_next, 1 - sigma_down
    renoise = (sigma_next ** 2 - sigma_down ** 2 * alpha_next ** 2 / alpha_down ** 2) ** 0.5
    return sigma_down, alpha_next / alpha_down, renoise


def ancestral_split(sigma: Tensor, sigma_next: Tensor, eta: float, is_rectified_flow: bool) -> tuple[Tensor, Tensor, Tensor | float]:
    """(sigma_down, sigma_up, alpha_ratio) of an ancestral step in VE (alpha_ratio 1) or flow form."""
    if is_rectified_flow:
        sigma_down, alpha_ratio, sigma_up = flow_ancestral_step(sigma, sigma_next, eta)
        return sigma_down, sigma_up, alpha_ratio
    sigma_down, sigma_up = ancestral_step(sigma, sigma_next, eta)
    return sigma_down, sigma_up, 1.0
