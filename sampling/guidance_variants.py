"""Variants of classifier-free guidance as pre- / post-CFG functions over x0 (sampling.guidance's
`CfgArgs`: x, sigma, cond_x0, uncond_x0, cond_scale). Pre-CFG functions return a new (cond_x0, uncond_x0)
pair for the CFG step; post-CFG functions take the guided x0 and return a new one. ComfyUI's choices are
kept where the node there departs from the paper (noted at each function), so a workflow gives the same
image in both.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from .guidance import CfgArgs


def _per_sample_dot(a: Tensor, b: Tensor) -> Tensor:
    """<a_i, b_i> for each batch item, shaped [B, 1, 1, ...]."""
    out = (a.flatten(1) * b.flatten(1)).sum(dim=1)
    return out.reshape([a.shape[0]] + [1] * (a.ndim - 1))


# --- post-CFG ----------------------------------------------------------------------------------------

def cfg_zero_star(a: CfgArgs, x0: Tensor) -> Tensor:
    """CFG-Zero* (Fan et al. 2025, arXiv:2503.18886, eq. 6-8): the unconditional branch is scaled by the
    least-squares factor s* = <v_c, v_u> / |v_u|^2 per sample before guiding, x0 = s* u + w (c - s* u).
    As ComfyUI: s* from the noise-side vectors x - x0 of each branch, applied to the x0 predictions,
    without the paper's zero-init of the first steps."""
    alpha = _per_sample_dot(a.x - a.cond_x0, a.x - a.uncond_x0) / (_per_sample_dot(a.x - a.uncond_x0, a.x - a.uncond_x0) + 1e-8)
    return x0 + a.uncond_x0 * (alpha - 1.0) + a.cond_scale * a.uncond_x0 * (1.0 - alpha)


def cfg_norm(strength: float):
    """CFGNorm (ComfyUI; the norm-capping used by HiDream / Lumina-style guidance): the guided x0 is scaled
    per pixel so its channel norm never exceeds the conditional one, then by `strength`:
    x0 * clamp(|c|_C / |x0|_C, 0, 1) * strength."""
    def post(a: CfgArgs, x0: Tensor) -> Tensor:
        scale = (a.cond_x0.norm(dim=1, keepdim=True) / (x0.norm(dim=1, keepdim=True) + 1e-8)).clamp(0.0, 1.0)
        return x0 * scale * strength
    return post


def cfg_norm_pre(strength: float):
    """CFGNorm with pre_cfg (newer ComfyUI; the norm-scaled CFG of models such as Lens) as the CFG step itself,
    in noise space (eps = x - x0 of each branch): e = u + w (c - u) rescaled per pixel to the conditional
    branch's channel norm, |c|_C / |e|_C (1 where |e|_C is 0; not clamped, so it may amplify), blended back
    towards plain CFG by `strength` (1 = fully rescaled); x0 = x - e."""
    def cfg(a: CfgArgs) -> Tensor:
        cond, uncond = a.x - a.cond_x0, a.x - a.uncond_x0
        combined = uncond + a.cond_scale * (cond - uncond)
        cond_norm = torch.linalg.vector_norm(cond, dim=1, keepdim=True)
        combined_norm = torch.linalg.vector_norm(combined, dim=1, keepdim=True)
        scale = torch.where(combined_norm > 0, cond_norm / combined_norm.clamp_min(1e-12), torch.ones_like(combined_norm))
        rescaled = combined * scale
        if strength != 1.0:
            rescaled = strength * rescaled + (1.0 - strength) * combined
        return a.x - rescaled
    return cfg


def epsilon_scaling(factor: float):
    """Epsilon Scaling (Ning et al. 2024, "Elucidating the exposure bias in diffusion models",
    arXiv:2308.15321, eq. 15, uniform schedule): the predicted noise divided by `factor`,
    x0' = x - (x - x0) / factor."""
    factor = factor if factor != 0 else 1e-9

    def post(a: CfgArgs, x0: Tensor) -> Tensor:
        return a.x - (a.x - x0) / factor
    return post


def mahiro(a: CfgArgs, x0: Tensor) -> Tensor:
    """ComfyUI's Mahiro guidance (no paper): mix the guided x0 with the scaled conditional x0 by the
    cosine similarity of the signed square roots of the scaled unconditional x0 and their mean:
    leap = w c, merge = (leap + x0) / 2, k = 2 (1 + cos(sqrt±(w u), sqrt±(merge))),
    out = (k x0 + (4 - k) leap) / 4."""
    leap = a.cond_x0 * a.cond_scale
    u_leap = a.uncond_x0 * a.cond_scale
    merge = (leap + x0) / 2
    norm_u = u_leap.abs().sqrt() * u_leap.sign()
    norm_m = merge.abs().sqrt() * merge.sign()
    sim = 2 * (F.cosine_similarity(norm_u, norm_m).mean() + 1)
    return (sim * x0 + (4 - sim) * leap) / 4


# --- pre-CFG -----------------------------------------------------------------------------------------

def _project(v: Tensor, onto: Tensor) -> tuple[Tensor, Tensor]:
    """(parallel, orthogonal) parts of v against `onto`, per sample over its last three dims."""
    unit = F.normalize(onto, dim=[-1, -2, -3])
    parallel = (v * unit).sum(dim=[-1, -2, -3], keepdim=True) * unit
    return parallel, v - parallel


class AdaptiveProjectedGuidance:
    """APG (Sadat et al. 2024, "Eliminating oversaturation and artifacts of high guidance scales",
    arXiv:2410.02416, algorithm 1) as a pre-CFG function: the update D = c - u gets a momentum running
    average (beta = `momentum`, reset when sigma rises, i.e. a new run), a norm cap r = `norm_threshold`
    (0: off), and its part parallel to c scaled by `eta`: D' = D_perp + eta D_par. The CFG step then gives
    x0 = c + w D' (the returned cond is u + D' + (c - u) / w). This is ComfyUI's reading: the paper's
    x0 = c + (w - 1) D' with w = the node's cfg + 1."""

    def __init__(self, eta: float, norm_threshold: float, momentum: float) -> None:
        self.eta, self.norm_threshold, self.momentum = eta, norm_threshold, momentum
        self.running: Tensor | None = None
        self.previous_sigma: float | None = None

    def __call__(self, a: CfgArgs) -> tuple[Tensor, Tensor]:
        cond, uncond = a.cond_x0, a.uncond_x0
        sigma = float(a.sigma.flatten()[0])
        if self.previous_sigma is not None and sigma > self.previous_sigma:
            self.running = None
        self.previous_sigma = sigma
        update = cond - uncond
        if self.momentum != 0:
            self.running = update if self.running is None else self.momentum * self.running + update
            update = self.running
        if self.norm_threshold > 0:
            norm = update.norm(p=2, dim=[-1, -2, -3], keepdim=True)
            update = update * torch.minimum(torch.ones_like(norm), self.norm_threshold / norm)
        parallel, orthogonal = _project(update, cond)
        modified = orthogonal + self.eta * parallel
        return uncond + modified + (cond - uncond) / a.cond_scale, uncond


def tangential_damping(a: CfgArgs) -> tuple[Tensor, Tensor]:
    """TCFG (Kwon et al. 2025, "Tangentially aligned CFG", arXiv:2503.18137, algorithm 1): the
    unconditional score is replaced by its projection on the first right-singular vector of the 2 x N
    matrix [s_u; s_c] per sample (scores taken as x - x0), dropping its tangential part."""
    if len(a.conds) > 1 and a.conds[1] is None:                        # no unconditional pass to damp
        return a.cond_x0, a.uncond_x0
    x = a.x
    b = x.shape[0]
    s_u = (x - a.uncond_x0).reshape(b, 1, -1).float()
    s_c = (x - a.cond_x0).reshape(b, 1, -1).float()
    _, _, vh = torch.linalg.svd(torch.cat([s_u, s_c], dim=1), full_matrices=False)
    v1 = vh[:, 0:1, :]                                                   # [B, 1, N]
    damped = ((s_u @ v1.transpose(-2, -1)) * v1).reshape_as(x).to(x.dtype)
    return a.cond_x0, x - damped


# --- frequency-domain and norm-capped guidance ---------------------------------------------------------

def frequency_scaled(update: Tensor, scale_low: float, scale_high: float, freq_cutoff: int) -> Tensor:
    """FreSca (Huang et al. 2025, "FreSca: Unveiling the scaling space in diffusion models",
    arXiv:2504.02154): the guidance update scaled separately in frequency space over the last two (spatial)
    dims. After a centred 2-D FFT, the box of +-min(freq_cutoff, size // 2) indices around the centre of
    every dim past the channels gets `scale_low`, everything else `scale_high`; computed in float32."""
    dtype = update.dtype
    spectrum = torch.fft.fftshift(torch.fft.fftn(update.float(), dim=(-2, -1)), dim=(-2, -1))
    scale = torch.full(spectrum.shape, float(scale_high), device=update.device)
    low = scale
    for dim in range(2, spectrum.ndim):
        centre = spectrum.shape[dim] // 2
        half = min(freq_cutoff, centre)
        low = low.narrow(dim, centre - half, 2 * half)
    low.fill_(float(scale_low))
    filtered = torch.fft.ifftn(torch.fft.ifftshift(spectrum * scale, dim=(-2, -1)), dim=(-2, -1)).real
    return filtered.to(dtype)


def fresca(scale_low: float, scale_high: float, freq_cutoff: int):
    """FreSca as a pre-CFG function: cond' = uncond + frequency_scaled(cond - uncond); a step without an
    unconditional branch is left alone (as ComfyUI)."""
    def pre(a: CfgArgs) -> tuple[Tensor, Tensor]:
        if len(a.conds) > 1 and a.conds[1] is None:
            return a.cond_x0, a.uncond_x0
        update = frequency_scaled(a.cond_x0 - a.uncond_x0, scale_low, scale_high, freq_cutoff)
        return a.uncond_x0 + update, a.uncond_x0
    return pre


def renorm_cfg(cfg_trunc: float, renorm: float):
    """RenormCFG (Lumina-Image 2.0, Qin et al. 2025, arXiv:2503.21758, "CFG-Renormalization" and
    "CFG-Truncation"): while sigma < `cfg_trunc` the CFG result, per sample, is scaled down so its norm
    stays under renorm * |cond| (renorm 0: no cap); from `cfg_trunc` on, the conditional x0 alone
    (guidance truncated). As ComfyUI, the comparison uses the sampler's sigma."""
    def cfg(a: CfgArgs) -> Tensor:
        if float(a.sigma.flatten()[0]) >= cfg_trunc:
            return a.cond_x0
        guided = a.uncond_x0 + a.cond_scale * (a.cond_x0 - a.uncond_x0)
        if renorm > 0:
            dims = tuple(range(1, guided.ndim))
            cap = torch.linalg.vector_norm(a.cond_x0, dim=dims, keepdim=True) * renorm
            norm = torch.linalg.vector_norm(guided, dim=dims, keepdim=True)
            guided = torch.where(norm >= cap, guided * (cap / norm), guided)
        return guided
    return cfg


# --- CFG functions -----------------------------------------------------------------------------------

def _per_frame_scale(values: Tensor, like: Tensor) -> Tensor:
    return values.to(like.dtype).reshape([like.shape[0]] + [1] * (like.ndim - 1))


def video_linear_cfg(min_cfg: float):
    """VideoLinearCFGGuidance (Stable Video Diffusion's sampling, Blattmann et al. 2023): the batch holds
    the frames, and the CFG scale grows linearly from min_cfg at the first to cond_scale at the last."""
    def fn(a: CfgArgs) -> Tensor:
        n = a.cond_x0.shape[0]
        scale = _per_frame_scale(torch.linspace(min_cfg, a.cond_scale, n, device=a.cond_x0.device), a.cond_x0)
        return a.uncond_x0 + scale * (a.cond_x0 - a.uncond_x0)
    return fn


def video_triangle_cfg(min_cfg: float):
    """VideoTriangleCFGGuidance: the scale over the frames is a triangle wave of period 1 on
    linspace(0, 1): min_cfg at both ends, cond_scale in the middle."""
    def fn(a: CfgArgs) -> Tensor:
        n = a.cond_x0.shape[0]
        u = torch.linspace(0.0, 1.0, n, device=a.cond_x0.device)
        wave = 2.0 * (u - torch.floor(u + 0.5)).abs()
        scale = _per_frame_scale(wave * (a.cond_scale - min_cfg) + min_cfg, a.cond_x0)
        return a.uncond_x0 + scale * (a.cond_x0 - a.uncond_x0)
    return fn
