"""ComfyUI's ``comfy_extras.nodes_custom_sampler``: its node classes (SamplerCustom, KSamplerSelect,
BasicScheduler, ...) answered from Plexus's built-in nodes, and the NOISE objects packs build themselves
(``Noise_RandomNoise(seed).generate_noise(latent)``), which are Plexus's NOISE (diffusion.ksampler)."""
from __future__ import annotations

import torch

from diffusion.ksampler import NoiseSource
from nodes.comfy_names import builtin_class as _builtin_class
from sampling.noise import prepare_noise


class Noise_EmptyNoise(NoiseSource):
    def __init__(self):
        object.__setattr__(self, "seed", 0)
        object.__setattr__(self, "is_enabled", False)

    def generate_noise(self, input_latent: dict) -> torch.Tensor:
        samples = input_latent["samples"]
        return torch.zeros(samples.shape, dtype=samples.dtype, layout=samples.layout, device="cpu")


class Noise_RandomNoise(NoiseSource):
    def __init__(self, seed: int):
        object.__setattr__(self, "seed", int(seed))
        object.__setattr__(self, "is_enabled", True)

    def generate_noise(self, input_latent: dict) -> torch.Tensor:
        samples = input_latent["samples"]
        return prepare_noise(samples, self.seed, input_latent.get("batch_index")).to(samples.dtype)


def __getattr__(name: str):
    try:
        return _builtin_class(name)
    except LookupError:
        raise AttributeError(f"comfy_extras.nodes_custom_sampler.{name} is not a node Plexus has") from None
