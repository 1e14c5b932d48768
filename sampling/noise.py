"""Seeded noise, generated exactly as ComfyUI generates it, so a workflow gives the same image.

- `prepare_noise`: the initial latent noise (ComfyUI `comfy.sample.prepare_noise`): a CPU generator
  seeded with `seed`, one float32 `randn` of the full latent shape; with `batch_index`, one draw per
  index 0..max(batch_index) and the requested ones kept, so batch position k is reproducible alone.
- `gaussian_noise_sampler`: per-step noise for ancestral and other samplers that draw fresh noise
  (k-diffusion `default_noise_sampler` as ComfyUI 0.3.64 seeds it: the sampler's own `seed` from
  `extra_args`, one generator on x's device, one `randn` of x's full shape and dtype per call, so a
  batch draws all its items together and item k of a batch of 2 differs from a batch of 1. On the CPU
  the first draw therefore equals the initial noise of `prepare_noise` for a batch of one).
- `BrownianTreeNoiseSampler`: per-interval Brownian increments for SDE samplers (torchsde
  `BrownianTree`, Li et al. 2020, "Scalable gradients for SDEs"), seeded with the same seed; the tree
  lives on the CPU, or on x's device for ComfyUI's `*_gpu` sampler names.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor

NoiseSampler = Callable[[Tensor, Tensor], Tensor]   # (sigma, sigma_next) -> unit-variance noise like x


def _generator(seed: int, device: torch.device | str = "cpu") -> torch.Generator:
    return torch.Generator(device=device).manual_seed(seed)


def prepare_noise(latent: Tensor, seed: int, batch_index: Sequence[int] | None = None) -> Tensor:
    """Initial noise for `latent` ([B, C, H, W]), bit-identical to ComfyUI for the same seed.

    ComfyUI calls `torch.manual_seed(seed)` (the global generator); a fresh `torch.Generator` seeded
    the same way yields the same stream without touching global state."""
    generator = _generator(seed)
    if batch_index is None:
        return torch.randn(latent.size(), dtype=torch.float32, generator=generator).to(latent.dtype)
    wanted = sorted({int(i) for i in batch_index})
    draws: dict[int, Tensor] = {}
    for i in range(wanted[-1] + 1):
        noise = torch.randn([1, *latent.shape[1:]], dtype=torch.float32, generator=generator)
        if i in wanted:
            draws[i] = noise
    return torch.cat([draws[int(i)] for i in batch_index], dim=0).to(latent.dtype)


def zero_noise(latent: Tensor) -> Tensor:
    """Noise for `add_noise = disable` (KSamplerAdvanced)."""
    return torch.zeros(latent.size(), dtype=latent.dtype)


def inpaint_noise(shape: Sequence[int], seed: int) -> Tensor:
    """The separate noise ComfyUI's `ddim` uses to re-noise the known region when inpainting
    (KSAMPLER inpaint_options random: a generator seeded with seed + 1)."""
    return torch.randn(list(shape), generator=_generator(seed + 1))


def gaussian_noise_sampler(x: Tensor, seed: int) -> NoiseSampler:
    """Fresh standard normal noise of x's shape, dtype and device at each call, from one generator
    on x's device seeded with `seed` (ComfyUI `default_noise_sampler(x, seed=extra_args["seed"])`)."""
    generator = _generator(seed, x.device)

    def sample(sigma: Tensor, sigma_next: Tensor) -> Tensor:
        return torch.randn(x.size(), dtype=x.dtype, layout=x.layout, device=x.device, generator=generator)
    return sample


class BrownianTreeNoiseSampler:
    """Noise for the interval (sigma, sigma_next): W(t1) - W(t0) / sqrt(|t1 - t0|) from a Brownian
    tree, so the same seed gives the same path whatever the step sizes (k-diffusion
    `BrownianTreeNoiseSampler`; the tree lives on the CPU unless `is_on_cpu` is False, as ComfyUI's
    `cpu=True` samplers and its `*_gpu` ones).

    `seed` may be a list with one seed per batch position (one tree each)."""

    def __init__(self, x: Tensor, sigma_min: Tensor | float, sigma_max: Tensor | float,
                 seed: int | Sequence[int], transform: Callable[[Tensor], Tensor] = lambda s: s,
                 is_on_cpu: bool = True) -> None:
        import torchsde  # heavy; only SDE samplers need it
        self.transform = transform
        self.is_on_cpu = is_on_cpu
        device = "cpu" if is_on_cpu else x.device
        t0 = transform(torch.as_tensor(sigma_min)).detach().to(device)
        t1 = transform(torch.as_tensor(sigma_max)).detach().to(device)
        t0, t1, self.sign = (t0, t1, 1) if t0 < t1 else (t1, t0, -1)
        w0 = torch.zeros_like(x).detach().to(device)
        self.is_batched = isinstance(seed, (list, tuple))
        if self.is_batched:
            if len(seed) != x.shape[0]:
                raise ValueError(f"got {len(seed)} seeds for a batch of {x.shape[0]}; pass one seed per batch position")
            seeds, w0 = list(seed), w0[0]
        else:
            seeds = [seed]
        self.trees = [torchsde.BrownianTree(t0, w0, t1, entropy=s) for s in seeds]

    def __call__(self, sigma: Tensor, sigma_next: Tensor) -> Tensor:
        t0 = self.transform(torch.as_tensor(sigma))
        t1 = self.transform(torch.as_tensor(sigma_next))
        device, dtype = t0.device, t0.dtype
        a, b, sign = (t0, t1, 1) if t0 < t1 else (t1, t0, -1)
        if self.is_on_cpu:
            a, b = a.detach().cpu().float(), b.detach().cpu().float()
        w = torch.stack([tree(a, b) for tree in self.trees]).to(device=device, dtype=dtype) * (self.sign * sign)
        w = w if self.is_batched else w[0]
        return w / (t1 - t0).abs().sqrt()
