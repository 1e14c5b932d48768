"""Fast step previews for the editor: a linear latent -> RGB projection (no VAE).

Returns an [H, W, 3] uint8 tensor; encoding to JPEG/PNG is the caller's job (nodes use PIL).
TAESD previews (tiny autoencoder decoders in models/vae_approx) are not implemented yet; the
`LatentFormat.taesd_decoder_name` field names the file a loader will look for.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from .latent_format import LatentFormat


def latent_to_rgb(x0: Tensor, fmt: LatentFormat, max_size: int | None = 512) -> Tensor:
    """First batch item of a model-space latent [B, C, H, W] (or [C, H, W]) -> [H, W, 3] uint8, via
    rgb = latent . factors + bias mapped from [-1, 1] to [0, 255] (ComfyUI Latent2RGBPreviewer)."""
    if fmt.rgb_factors is None:
        raise ValueError("this latent format has no linear RGB factors; use a TAESD preview instead")
    latent = x0[0] if x0.ndim == 4 else x0
    factors = torch.tensor(fmt.rgb_factors, dtype=torch.float32, device=latent.device)   # [C, 3]
    bias = torch.tensor(fmt.rgb_bias, dtype=torch.float32, device=latent.device) if fmt.rgb_bias else None
    rgb = F.linear(latent.float().permute(1, 2, 0), factors.t(), bias)                   # [H, W, 3]
    if max_size is not None and max(rgb.shape[:2]) > max_size:
        scale = max_size / max(rgb.shape[:2])
        size = (max(1, int(rgb.shape[0] * scale)), max(1, int(rgb.shape[1] * scale)))
        rgb = F.interpolate(rgb.permute(2, 0, 1)[None], size=size, mode="bilinear")[0].permute(1, 2, 0)
    return ((rgb + 1.0) / 2.0).clamp(0, 1).mul(255).to(torch.uint8).cpu()
