"""Perp-Neg guidance (Armandpour et al. 2023, "Re-imagine the negative prompt algorithm", eq. 8-9):
the negative prompt steers only along its component perpendicular to the positive direction, so a
negative that overlaps the positive concept does not cancel it.

With x0 predictions p (positive), n (negative) and e (empty prompt), on the whole batch as ComfyUI does:
    pos = p - e,  neg = n - e,  perp = neg - (<neg, pos> / |pos|^2) pos
    x0  = e + cfg * (pos - neg_scale * perp)
The paper writes it on eps; on x0 = x - sigma eps every difference is scaled by -sigma and the
projection is scale-free, so the formula is the same.
"""
from __future__ import annotations

import math
from collections.abc import Sequence

from torch import Tensor

from .guidance import CfgArgs, Cond, FitsFn, ModelFn, PostCfgFunction, calc_cond_batch, model_x0, prepare_conds
from .model_sampling import ModelSampling


def perp_neg(positive_x0: Tensor, negative_x0: Tensor, empty_x0: Tensor, neg_scale: float, cfg: float) -> Tensor:
    pos = positive_x0 - empty_x0
    neg = negative_x0 - empty_x0
    perp = neg - ((neg * pos).sum() / pos.norm() ** 2) * pos
    return empty_x0 + cfg * (pos - perp * neg_scale)


class PerpNegDenoiser:
    """A guided denoiser over three Cond lists, evaluated in one batch. The negative pass is skipped at
    neg_scale 0 and the empty one too when cfg is also 1 (ComfyUI's cfg1 optimisation). `post_cfg`
    hooks see (positive, negative) as cond / uncond; `with_uncond` reports the negative's x0."""

    def __init__(self, model_fn: ModelFn, ms: ModelSampling, positive: Sequence[Cond], negative: Sequence[Cond],
                 empty: Sequence[Cond], cfg: float, neg_scale: float, latent_shape: Sequence[int], *,
                 fits: FitsFn | None = None, post_cfg: Sequence[PostCfgFunction] = ()) -> None:
        self.apply = model_x0(model_fn, ms)
        self.positive, self.negative, self.empty = prepare_conds([positive, negative, empty], latent_shape, ms)
        self.cfg, self.neg_scale = cfg, neg_scale
        self.fits = fits
        self.post_cfg = tuple(post_cfg)

    def _guide(self, x: Tensor, sigma: Tensor, is_uncond_needed: bool) -> tuple[Tensor, Tensor]:
        negative, empty = self.negative, self.empty
        if not is_uncond_needed and math.isclose(self.neg_scale, 0.0):
            negative = None
            if math.isclose(self.cfg, 1.0):
                empty = None
        pos_x0, neg_x0, empty_x0 = calc_cond_batch(self.apply, [self.positive, negative, empty], x, sigma, self.fits)
        x0 = perp_neg(pos_x0, neg_x0, empty_x0, self.neg_scale, self.cfg)
        args = CfgArgs(x, sigma, pos_x0, neg_x0, self.cfg)
        for fn in self.post_cfg:
            x0 = fn(args, x0)
        return x0, neg_x0

    def __call__(self, x: Tensor, sigma: Tensor) -> Tensor:
        return self._guide(x, sigma, is_uncond_needed=False)[0]

    def with_uncond(self, x: Tensor, sigma: Tensor) -> tuple[Tensor, Tensor]:
        return self._guide(x, sigma, is_uncond_needed=True)


def perp_neg_cfg(empty: Sequence[Cond], ms: ModelSampling, neg_scale: float):
    """The deprecated PerpNeg model patch as a CFG function: the empty prompt's x0 comes from one more
    model pass (`CfgArgs.evaluate`), the cond / uncond x0 from the usual CFG pair."""
    def cfg(a: CfgArgs) -> Tensor:
        if a.evaluate is None:
            raise ValueError("PerpNeg needs a guider that can re-run the model (CFGGuider / KSampler)")
        (prepared,) = prepare_conds([empty], a.x.shape, ms)
        (empty_x0,) = a.evaluate([prepared], a.x, a.sigma)
        return perp_neg(a.cond_x0, a.uncond_x0, empty_x0, neg_scale, a.cond_scale)
    return cfg
