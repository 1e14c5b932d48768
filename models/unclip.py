"""unCLIP's image conditioning: the CLIP image embedding, noise-augmented, as the ADM vector of the UNet's
`label_emb` (SD2.1 unCLIP-L / -H) or as SDXL's pooled vector (Revision).

Ramesh et al. 2022, "Hierarchical Text-Conditional Image Generation with CLIP Latents" (arXiv:2204.06125),
sec. 2.1: the decoder is conditioned on a CLIP image embedding with Gaussian noise added at a chosen level
of a diffusion schedule, the level itself given as a timestep embedding. Stability's SD2.1 unCLIP
(`CLIPEmbeddingNoiseAugmentation`, the karlo "squaredcos_cap_v2" schedule of 1000 steps; Nichol & Dhariwal
2021, eq. 17, alpha_bar(t) = cos((t + 0.008) / 1.008 * pi / 2)^2, betas capped at 0.999) and ComfyUI's
`model_base.unclip_adm` give the vector for one image embedding e [1, D] at level l:

    z = sqrt(alpha_bar[l]) * e + sqrt(1 - alpha_bar[l]) * noise          (data mean 0, std 1: as ComfyUI,
    y = strength * [z, timestep_embedding(l, D)]        [1, 2D]           which loads no clip stats)

with l = round(999 * noise_augmentation) and noise ~ N(0, 1) drawn from a generator seeded with the
sampler seed - 10 (the same noise for every image). Several embeddings (images of a batch, or stacked
unCLIPConditioning nodes) are summed, then the first D values are augmented again at level
round(999 * merge) (0.05 for SD2.1, 0.0 for Revision) with the next draw of that generator, which is
what ComfyUI's unseeded draw takes on the CPU.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from execution.errors import PlexusError

from models.unet import timestep_embedding

MAX_NOISE_LEVEL = 1000
SEED_OFFSET = -10                     # ComfyUI: the unCLIP noise uses the sampler seed - 10
SD21_MERGE_AUGMENTATION = 0.05        # model_base.SD21UNCLIP: unclip_noise_augment_merge default
REVISION_MERGE_AUGMENTATION = 0.0     # model_base.sdxl_pooled


def squaredcos_cap_v2_betas(steps: int = 1000, max_beta: float = 0.999) -> np.ndarray:
    """Betas of the cosine schedule (Nichol & Dhariwal 2021, eq. 17), float64, as in the karlo prior."""
    def alpha_bar(t: float) -> float:
        return math.cos((t + 0.008) / 1.008 * math.pi / 2) ** 2
    return np.array([min(1 - alpha_bar((i + 1) / steps) / alpha_bar(i / steps), max_beta) for i in range(steps)])


@dataclass(frozen=True)
class ImageEmbedding:
    """One unCLIPConditioning application: the CLIP vision output's image embeds [B, D] with its weight."""
    image_embeds: Tensor
    strength: float
    noise_augmentation: float


class NoiseAugmentor:
    """The schedule tables of CLIPEmbeddingNoiseAugmentation for embeddings `dim` wide."""

    def __init__(self, dim: int, steps: int = 1000):
        self.dim = dim
        betas = squaredcos_cap_v2_betas(steps)
        self._betas = betas
        alphas_cumprod = np.cumprod(1.0 - betas)
        self._alphas_cumprod = alphas_cumprod
        # float64 maths, float32 tables (ldm's register_schedule)
        self.sqrt_alphas_cumprod = torch.tensor(np.sqrt(alphas_cumprod), dtype=torch.float32)
        self.sqrt_one_minus_alphas_cumprod = torch.tensor(np.sqrt(1.0 - alphas_cumprod), dtype=torch.float32)

    @staticmethod
    def level(noise_augmentation: float) -> int:
        return round((MAX_NOISE_LEVEL - 1) * noise_augmentation)

    def augment(self, embedding: Tensor, level: int, noise: Tensor) -> tuple[Tensor, Tensor]:
        """embedding [1, D] -> (noised [1, D], level embedding [1, D])."""
        z = self.sqrt_alphas_cumprod[level] * embedding + self.sqrt_one_minus_alphas_cumprod[level] * noise
        return z, timestep_embedding(torch.tensor([level]), self.dim).to(embedding.device)

    def buffers_for_file(self) -> dict[str, Tensor]:
        """The `noise_augmentor.*` buffers SD2.1 unCLIP checkpoints hold (ldm register_schedule); loading
        reads none of them (ComfyUI rebuilds the schedule from its config, as here)."""
        ac = self._alphas_cumprod
        tables = {"betas": self._betas, "alphas_cumprod": ac, "alphas_cumprod_prev": np.append(1.0, ac[:-1]),
                  "sqrt_alphas_cumprod": np.sqrt(ac), "sqrt_one_minus_alphas_cumprod": np.sqrt(1.0 - ac),
                  "log_one_minus_alphas_cumprod": np.log(1.0 - ac), "sqrt_recip_alphas_cumprod": np.sqrt(1.0 / ac),
                  "sqrt_recipm1_alphas_cumprod": np.sqrt(1.0 / ac - 1)}
        return {k: torch.tensor(v, dtype=torch.float32) for k, v in tables.items()}


def unclip_adm(embeddings: Sequence[ImageEmbedding], augmentor: NoiseAugmentor, *, seed: int,
               merge_augmentation: float) -> Tensor:
    """The [1, 2D] vector of the module notes for every image of every application (seed: the sampler's)."""
    generator = torch.Generator().manual_seed(seed + SEED_OFFSET)
    parts: list[Tensor] = []
    for entry in embeddings:
        embeds = entry.image_embeds.float().cpu()
        if embeds.ndim != 2 or embeds.shape[1] != augmentor.dim:
            raise PlexusError("invalid_input", f"unCLIP: this model takes image embeddings [B, {augmentor.dim}], "
                              f"the clip_vision_output has {tuple(embeds.shape)}",
                              "encode the image with the CLIP vision model the checkpoint was made with "
                              "(SD2.1 unCLIP-L: ViT-L/14, -H: ViT-H/14; SDXL Revision: ViT-bigG/14)")
        for row in embeds:
            generator.manual_seed(seed + SEED_OFFSET)                     # ComfyUI reseeds for every image
            noise = torch.randn((1, augmentor.dim), generator=generator)
            z, level_emb = augmentor.augment(row[None], augmentor.level(entry.noise_augmentation), noise)
            parts.append(torch.cat([z, level_emb], dim=1) * entry.strength)   # [1, 2D]
    if len(parts) == 1:
        return parts[0]
    summed = torch.stack(parts).sum(0)                                    # [1, 2D]
    noise = torch.randn((1, augmentor.dim), generator=generator)
    z, level_emb = augmentor.augment(summed[:, :augmentor.dim], augmentor.level(merge_augmentation), noise)
    return torch.cat([z, level_emb], dim=1)
