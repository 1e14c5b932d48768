"""CFG variants (sampling.guidance_variants, sampling.perp_neg.perp_neg_cfg) against their formulas
written out with NumPy, plus the properties each paper states."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from sampling import guidance_variants as gv
from sampling.guidance import CfgArgs, Cond, plain_cfg
from sampling.model_sampling import DiscreteSampling
from sampling.perp_neg import perp_neg, perp_neg_cfg


def _args(seed: int = 0, scale: float = 5.0, sigma: float = 3.0) -> CfgArgs:
    g = torch.Generator().manual_seed(seed)
    x, c, u = (torch.randn(2, 4, 6, 6, generator=g) for _ in range(3))
    return CfgArgs(x=x * 3, sigma=torch.full((2,), sigma), cond_x0=c, uncond_x0=u, cond_scale=scale,
                   conds=([Cond()], [Cond()]))


def _np(t: torch.Tensor) -> np.ndarray:
    return t.double().numpy()


def test_cfg_zero_star_rescales_the_unconditional_branch_by_the_least_squares_factor() -> None:
    a = _args()
    out = gv.cfg_zero_star(a, plain_cfg(a))
    x, c, u, w = _np(a.x), _np(a.cond_x0), _np(a.uncond_x0), a.cond_scale
    vc, vu = (x - c).reshape(2, -1), (x - u).reshape(2, -1)
    s = ((vc * vu).sum(1) / (vu * vu).sum(1)).reshape(2, 1, 1, 1)
    np.testing.assert_allclose(_np(out), s * u + w * (c - s * u), rtol=1e-4, atol=1e-4)


def test_cfg_zero_star_is_plain_cfg_when_the_branches_agree_in_direction() -> None:
    a = _args()
    same = CfgArgs(a.x, a.sigma, a.cond_x0, a.cond_x0.clone(), a.cond_scale)   # s* = 1
    torch.testing.assert_close(gv.cfg_zero_star(same, plain_cfg(same)), plain_cfg(same), rtol=1e-5, atol=1e-5)


def test_cfg_norm_caps_the_channel_norm_at_the_conditional_one() -> None:
    a = _args()
    x0 = plain_cfg(a)
    out = gv.cfg_norm(0.8)(a, x0)
    ratio = np.clip(np.linalg.norm(_np(a.cond_x0), axis=1, keepdims=True)
                    / (np.linalg.norm(_np(x0), axis=1, keepdims=True) + 1e-8), 0, 1)
    np.testing.assert_allclose(_np(out), _np(x0) * ratio * 0.8, rtol=1e-5, atol=1e-6)
    small = a.cond_x0 * 0.5                                              # already below the cap: only strength
    torch.testing.assert_close(gv.cfg_norm(1.0)(a, small), small)


@pytest.mark.parametrize("factor", [1.0, 1.005, 0.9])
def test_epsilon_scaling_divides_the_predicted_noise(factor) -> None:
    a = _args()
    x0 = plain_cfg(a)
    out = gv.epsilon_scaling(factor)(a, x0)
    torch.testing.assert_close((a.x - out) * factor, a.x - x0, rtol=1e-5, atol=1e-5)


def test_mahiro_formula() -> None:
    a = _args()
    x0 = plain_cfg(a)
    w = a.cond_scale
    leap, u_leap = _np(a.cond_x0) * w, _np(a.uncond_x0) * w
    merge = (leap + _np(x0)) / 2
    nu, nm = np.sqrt(np.abs(u_leap)) * np.sign(u_leap), np.sqrt(np.abs(merge)) * np.sign(merge)
    cos = (nu * nm).sum(1) / (np.linalg.norm(nu, axis=1) * np.linalg.norm(nm, axis=1))
    k = 2 * (cos.mean() + 1)
    np.testing.assert_allclose(_np(gv.mahiro(a, x0)), (k * _np(x0) + (4 - k) * leap) / 4, rtol=1e-4, atol=1e-4)


def _apg_result(apg, a: CfgArgs) -> torch.Tensor:
    cond, uncond = apg(a)
    from dataclasses import replace
    return plain_cfg(replace(a, cond_x0=cond, uncond_x0=uncond))


def test_apg_without_momentum_or_cap_at_eta_one_is_cond_plus_w_times_the_update() -> None:
    a = _args()
    out = _apg_result(gv.AdaptiveProjectedGuidance(1.0, 0.0, 0.0), a)
    # Sadat et al. 2024, eq. 8 with the paper's w - 1 equal to the node's cfg (ComfyUI's reading)
    torch.testing.assert_close(out, a.cond_x0 + a.cond_scale * (a.cond_x0 - a.uncond_x0), rtol=1e-4, atol=1e-4)


def test_apg_at_eta_zero_keeps_only_the_update_orthogonal_to_cond_and_caps_its_norm() -> None:
    a = _args()
    out = _apg_result(gv.AdaptiveProjectedGuidance(0.0, 2.0, 0.0), a)
    update = _np((out - a.cond_x0) / a.cond_scale).reshape(2, -1)
    cond = _np(a.cond_x0).reshape(2, -1)
    np.testing.assert_allclose((update * cond).sum(1), 0.0, atol=1e-3)
    assert (np.linalg.norm(update, axis=1) <= 2.0 + 1e-4).all()
    # the capped update, written out: r * D / |D| then its orthogonal part
    d = (_np(a.cond_x0) - _np(a.uncond_x0)).reshape(2, -1)
    d = d * np.minimum(1.0, 2.0 / np.linalg.norm(d, axis=1, keepdims=True))
    unit = cond / np.linalg.norm(cond, axis=1, keepdims=True)
    np.testing.assert_allclose(update, d - (d * unit).sum(1, keepdims=True) * unit, rtol=1e-4, atol=1e-4)


def test_apg_momentum_accumulates_and_restarts_when_sigma_rises() -> None:
    apg = gv.AdaptiveProjectedGuidance(1.0, 0.0, 0.5)
    first, second = _args(0, sigma=5.0), _args(1, sigma=3.0)
    _apg_result(apg, first)
    out = _apg_result(apg, second)
    d1, d2 = first.cond_x0 - first.uncond_x0, second.cond_x0 - second.uncond_x0
    torch.testing.assert_close(out, second.cond_x0 + second.cond_scale * (0.5 * d1 + d2), rtol=1e-4, atol=1e-4)
    restarted = _apg_result(apg, _args(1, sigma=9.0))                   # a new run: no history
    torch.testing.assert_close(restarted, second.cond_x0 + second.cond_scale * d2, rtol=1e-4, atol=1e-4)


def test_tangential_damping_projects_the_uncond_score_on_the_first_singular_vector() -> None:
    a = _args()
    cond, uncond = gv.tangential_damping(a)
    torch.testing.assert_close(cond, a.cond_x0)
    x = _np(a.x)
    for i in range(2):
        s_u, s_c = (x[i] - _np(a.uncond_x0)[i]).ravel(), (x[i] - _np(a.cond_x0)[i]).ravel()
        _, _, vh = np.linalg.svd(np.stack([s_u, s_c]), full_matrices=False)
        expected = x[i] - (s_u @ vh[0]) * vh[0].reshape(x[i].shape)
        np.testing.assert_allclose(_np(uncond)[i], expected, rtol=1e-3, atol=1e-3)


def test_tangential_damping_leaves_a_skipped_uncond_alone() -> None:
    a = _args()
    skipped = CfgArgs(a.x, a.sigma, a.cond_x0, torch.zeros_like(a.x), a.cond_scale, conds=([Cond()], None))
    assert gv.tangential_damping(skipped)[1] is skipped.uncond_x0


def test_perp_neg_cfg_evaluates_the_empty_prompt_once_more() -> None:
    a = _args()
    empty_x0 = torch.randn_like(a.x)
    calls = []

    def evaluate(cond_lists, x, sigma, transformer_options=None):
        calls.append(cond_lists)
        return [empty_x0]
    args = CfgArgs(a.x, a.sigma, a.cond_x0, a.uncond_x0, a.cond_scale, a.conds, evaluate)
    out = perp_neg_cfg([Cond(inputs={"c_crossattn": torch.zeros(1, 2, 4)})], DiscreteSampling(), 1.0)(args)
    torch.testing.assert_close(out, perp_neg(a.cond_x0, a.uncond_x0, empty_x0, 1.0, a.cond_scale))
    assert len(calls) == 1 and len(calls[0]) == 1


def test_cfg_norm_pre_rescales_the_noise_combination_to_the_conditional_norm() -> None:
    torch.manual_seed(3)
    x, c, u = torch.randn(2, 4, 5, 5), torch.randn(2, 4, 5, 5), torch.randn(2, 4, 5, 5)
    a = CfgArgs(x, torch.tensor([1.0]), c, u, 4.0)
    eps_c, eps_u = x - c, x - u
    combined = eps_u + 4.0 * (eps_c - eps_u)
    scale = eps_c.norm(dim=1, keepdim=True) / combined.norm(dim=1, keepdim=True)
    torch.testing.assert_close(gv.cfg_norm_pre(1.0)(a), x - combined * scale)
    half = 0.5 * combined * scale + 0.5 * combined
    torch.testing.assert_close(gv.cfg_norm_pre(0.5)(a), x - half)
    # strength 0: plain CFG
    torch.testing.assert_close(gv.cfg_norm_pre(0.0)(a), u + 4.0 * (c - u), atol=1e-5, rtol=1e-5)
