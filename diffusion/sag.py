"""Self-Attention Guidance (Hong et al. 2023, "Improving sample quality of diffusion models using
self-attention guidance", arXiv:2210.00939, section 4 / eq. 11), on the UNet's middle-block self-attention.

While sampling, the unconditional pass's self-attention probabilities of the first transformer block of
the middle block are recorded (an attn1 replacement that computes softmax(q k^T / sqrt(d)) explicitly).
After CFG:
    mask      = [mean over heads of the attention each key position receives > 1], resized to the latent
    degraded  = blur(x0_uncond) * mask + x0_uncond * (1 - mask)          (Gaussian, 9 taps, sigma = blur_sigma)
    x0_sag    = the unconditional x0 of the model run on degraded + (x - x0_uncond)
    x0        = x0_cfg + scale * (degraded - x0_sag)
A latent whose sides are 4 or less is left alone (the blur pads by 4), as in ComfyUI.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from .objects import DiffusionModel

BLUR_TAPS = 9
ATTENTION_THRESHOLD = 1.0


def attention_with_probabilities(q: Tensor, k: Tensor, v: Tensor, heads: int) -> tuple[Tensor, Tensor]:
    """[B, N, heads*d] q/k/v -> (out [B, N, heads*d], probabilities [B*heads, N, M])."""
    b, n, inner = q.shape
    d = inner // heads
    q, k, v = (t.reshape(b, -1, heads, d).permute(0, 2, 1, 3).reshape(b * heads, -1, d) for t in (q, k, v))
    probabilities = (q.float() @ k.float().transpose(1, 2) * d ** -0.5).softmax(dim=-1)   # [B*h, N, M]
    out = (probabilities.to(v.dtype) @ v).reshape(b, heads, n, d).permute(0, 2, 1, 3).reshape(b, n, inner)
    return out, probabilities


def gaussian_blur(x: Tensor, sigma: float, taps: int = BLUR_TAPS) -> Tensor:
    """Separable Gaussian of `taps` taps (normalised), reflect padding, per channel."""
    half = (taps - 1) / 2
    pdf = torch.exp(-0.5 * (torch.linspace(-half, half, taps) / sigma) ** 2)
    kernel1d = (pdf / pdf.sum()).to(x)
    kernel = (kernel1d[:, None] @ kernel1d[None, :]).expand(x.shape[1], 1, taps, taps)
    pad = taps // 2
    return F.conv2d(F.pad(x, [pad] * 4, mode="reflect"), kernel, groups=x.shape[1])


def _grid(total: int, height: int, width: int) -> tuple[int, int]:
    """(rows, cols) of a token grid of `total` positions with the latent's aspect: the divisor of total
    nearest to sqrt(total * height / width)."""
    target = round(math.sqrt(total * height / width))
    for offset in range(total):
        for rows in (target + offset, target - offset):
            if 1 <= rows <= total and total % rows == 0:
                return rows, total // rows
    return 1, total


def degraded_x0(x0: Tensor, probabilities: Tensor, blur_sigma: float) -> Tensor:
    """x0 blurred where the recorded self-attention concentrates (the mask of the module notes)."""
    b, _, height, width = x0.shape
    attention = probabilities.reshape(b, -1, *probabilities.shape[-2:])      # [B, heads, N, M]
    received = attention.mean(1).sum(1)                                      # [B, M]
    rows, cols = _grid(received.shape[-1], height, width)
    mask = (received > ATTENTION_THRESHOLD).to(x0.dtype).reshape(b, 1, rows, cols)
    mask = F.interpolate(mask, (height, width))                              # nearest
    return gaussian_blur(x0, blur_sigma) * mask + x0 * (1 - mask)


def with_self_attention_guidance(model: DiffusionModel, scale: float, blur_sigma: float) -> DiffusionModel:
    state: dict[str, Tensor | None] = {"probabilities": None}

    def record(q: Tensor, k: Tensor, v: Tensor, extra_options: dict) -> Tensor:
        heads = extra_options["n_heads"]
        cond_or_uncond = list(extra_options.get("cond_or_uncond") or [])
        out, probabilities = attention_with_probabilities(q, k, v, heads)
        if 1 in cond_or_uncond:
            per_chunk = q.shape[0] // len(cond_or_uncond) * heads
            start = per_chunk * cond_or_uncond.index(1)
            state["probabilities"] = probabilities[start:start + per_chunk]
        return out

    def post_cfg(args: dict) -> Tensor:
        guided = args["denoised"]
        probabilities = state["probabilities"]
        if min(guided.shape[2:]) <= 4 or probabilities is None or args["uncond"] is None:
            return guided
        uncond_x0, x = args["uncond_denoised"], args["input"]
        degraded = degraded_x0(uncond_x0, probabilities, blur_sigma)
        (sag,) = args["calc_cond_batch"]([args["uncond"]], degraded + x - uncond_x0, args["sigma"],
                                         args["model_options"])
        return guided + (degraded - sag) * scale

    twin = model.clone()
    twin.set_model_sampler_post_cfg_function(post_cfg, disable_cfg1_optimization=True)
    twin.set_model_attn1_replace(record, "middle", 0, 0)
    return twin
