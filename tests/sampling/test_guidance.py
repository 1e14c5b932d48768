"""CFG, batching and conditioning areas / masks / strengths / timestep ranges on a toy model."""
from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from sampling.guidance import CfgArgs, CFGDenoiser, Cond, conds_from_conditioning, plain_cfg, rescale_cfg
from sampling.model_sampling import X0, DiscreteSampling


class ToyModel:
    """Raw output = k * x_in + (per-sample mean of the cross-attention tensor); records batch sizes."""

    def __init__(self, k: float = 0.1) -> None:
        self.k = k
        self.batches: list[int] = []
        self.timesteps: list[torch.Tensor] = []

    def __call__(self, x_in, timestep, inputs):
        self.batches.append(x_in.shape[0])
        self.timesteps.append(timestep)
        c = inputs["c_crossattn"].mean(dim=(1, 2)).view(-1, 1, 1, 1)
        return self.k * x_in + c


def cond(value: float, tokens: int = 77, **kw) -> Cond:
    return Cond(inputs={"c_crossattn": torch.full((1, tokens, 8), value)}, **kw)


MS = DiscreteSampling()
SHAPE = (2, 4, 32, 32)


def test_cfg_mixes_x0_and_batches_cond_with_uncond() -> None:
    model = ToyModel()
    den = CFGDenoiser(model, MS, [cond(1.0)], [cond(-0.5)], cfg=7.5, latent_shape=SHAPE)
    x, sigma = torch.randn(SHAPE), torch.full((2,), 3.0)
    got = den(x, sigma)
    c_in = 1 / (3.0 ** 2 + 1) ** 0.5
    eps_c, eps_u = 0.1 * x * c_in + 1.0, 0.1 * x * c_in - 0.5
    x0_c, x0_u = x - 3.0 * eps_c, x - 3.0 * eps_u
    torch.testing.assert_close(got, x0_u + 7.5 * (x0_c - x0_u))
    assert model.batches == [4]                                   # one forward with cond and uncond
    assert torch.equal(model.timesteps[0], MS.timestep(torch.full((4,), 3.0)).float())


def test_cfg_one_skips_the_unconditional_pass() -> None:
    model = ToyModel()
    den = CFGDenoiser(model, MS, [cond(1.0)], [cond(-0.5)], cfg=1.0, latent_shape=SHAPE)
    x, sigma = torch.randn(SHAPE), torch.full((2,), 3.0)
    c_in = 1 / 10 ** 0.5
    torch.testing.assert_close(den(x, sigma), x - 3.0 * (0.1 * x * c_in + 1.0))
    assert model.batches == [2]
    _, uncond = den.with_uncond(x, sigma)                         # CFG++ always needs the uncond x0
    torch.testing.assert_close(uncond, x - 3.0 * (0.1 * x * c_in - 0.5))
    assert model.batches == [2, 4]


def test_batches_split_when_memory_is_short() -> None:
    model = ToyModel()
    x, sigma = torch.randn(SHAPE), torch.full((2,), 3.0)
    roomy = CFGDenoiser(model, MS, [cond(1.0)], [cond(-0.5)], cfg=5.0, latent_shape=SHAPE)(x, sigma)
    model.batches.clear()
    tight = CFGDenoiser(model, MS, [cond(1.0)], [cond(-0.5)], cfg=5.0, latent_shape=SHAPE,
                        fits=lambda shape: shape[0] <= 2)(x, sigma)
    assert model.batches == [2, 2]
    torch.testing.assert_close(tight, roomy)


def test_different_token_counts_are_padded_into_one_batch() -> None:
    model = ToyModel()
    den = CFGDenoiser(model, MS, [cond(1.0, tokens=154)], [cond(-0.5, tokens=77)], cfg=3.0, latent_shape=SHAPE)
    den(torch.randn(SHAPE), torch.full((2,), 3.0))
    assert model.batches == [4]


def _x0_model():
    """X0 prediction: the denoised output is the per-sample conditioning constant."""
    return ToyModel(k=0.0), DiscreteSampling(prediction=X0())


def test_area_conditioning_is_feathered_and_mirrored_into_uncond() -> None:
    model, ms = _x0_model()
    positive = [cond(1.0), cond(5.0, area=(16, 16, 0, 0))]
    den = CFGDenoiser(model, ms, positive, [cond(0.0)], cfg=1.0, latent_shape=SHAPE)
    out = den(torch.zeros(SHAPE), torch.full((2,), 3.0))
    assert torch.allclose(out[:, :, :12, :12], torch.tensor(3.0))          # (1 + 5) / 2 away from inner edges
    assert torch.allclose(out[:, :, 16:, :], torch.tensor(1.0))            # outside the area
    # ComfyUI feathers over r = min(8, side // 4) = 4 rows here: the last row has weight 1/4, the one
    # above it 2/4
    assert torch.allclose(out[:, :, 15, :12], torch.tensor((1 + 5 / 4) / (1 + 1 / 4)))
    assert torch.allclose(out[:, :, 14, :12], torch.tensor((1 + 5 * 2 / 4) / (1 + 2 / 4)))
    assert torch.allclose(out[:, :, 15, 15], torch.tensor((1 + 5 / 16) / (1 + 1 / 16)))   # corner: 1/4 * 1/4
    assert len(den.negative) == 2 and den.negative[1].area == (16, 16, 0, 0)
    assert torch.equal(den.negative[1].inputs["c_crossattn"], den.negative[0].inputs["c_crossattn"])


def test_area_past_the_edge_is_clamped_and_feathered_on_its_inner_edges_only() -> None:
    """ComfyUI get_area_and_mult: the area's size is cut to end at the latent edge (an 24x24 area at (20, 20)
    of a 32x32 latent covers 12x12), and the feather (r = 12 // 4 = 3) is applied at the top/left only."""
    model, ms = _x0_model()
    positive = [cond(1.0), cond(5.0, area=(24, 24, 20, 20))]
    den = CFGDenoiser(model, ms, positive, [cond(0.0)], cfg=1.0, latent_shape=SHAPE)
    out = den(torch.zeros(SHAPE), torch.full((2,), 3.0))
    assert torch.allclose(out[:, :, 23:, 23:], torch.tensor(3.0))          # full weight up to the edges
    assert torch.allclose(out[:, :, 20, 23:], torch.tensor((1 + 5 / 3) / (1 + 1 / 3)))
    assert torch.allclose(out[:, :, 21, 23:], torch.tensor((1 + 5 * 2 / 3) / (1 + 2 / 3)))
    assert torch.allclose(out[:, :, :20, :], torch.tensor(1.0))


def test_percentage_area_and_strength() -> None:
    model, ms = _x0_model()
    positive = [cond(1.0), cond(4.0, area=("percentage", 0.5, 1.0, 0.5, 0.0), strength=0.5)]
    den = CFGDenoiser(model, ms, positive, [cond(0.0)], cfg=1.0, latent_shape=SHAPE)
    assert den.positive[1].area == (16, 32, 16, 0)
    out = den(torch.zeros(SHAPE), torch.full((2,), 3.0))
    assert torch.allclose(out[:, :, 24:, :], torch.tensor((1 + 0.5 * 4) / 1.5))
    assert torch.allclose(out[:, :, :16, :], torch.tensor(1.0))


def test_mask_conditioning_weights_by_mask_and_strength() -> None:
    model, ms = _x0_model()
    mask = torch.zeros(64, 64)
    mask[:, 32:] = 1.0                                                      # resized to the 32x32 latent
    positive = [cond(1.0), cond(5.0, mask=mask, mask_strength=1.0)]
    den = CFGDenoiser(model, ms, positive, [cond(0.0)], cfg=1.0, latent_shape=SHAPE)
    out = den(torch.zeros(SHAPE), torch.full((2,), 3.0))
    assert torch.allclose(out[..., 17:], torch.tensor(3.0))
    assert torch.allclose(out[..., :15], torch.tensor(1.0))


def test_mask_bounds_set_the_area() -> None:
    model, ms = _x0_model()
    mask = torch.zeros(32, 32)
    mask[4:10, 20:30] = 1.0
    den = CFGDenoiser(model, ms, [cond(1.0), cond(5.0, mask=mask, is_area_set_to_mask_bounds=True)], [cond(0.0)],
                      cfg=1.0, latent_shape=SHAPE)
    assert den.positive[1].area == (8, 10, 4, 20)        # height raised to the minimum of 8


def test_timestep_range_switches_a_cond_on_and_off() -> None:
    model, ms = _x0_model()
    positive = [cond(1.0), cond(5.0, start_percent=0.5, end_percent=1.0)]
    den = CFGDenoiser(model, ms, positive, [cond(0.0)], cfg=1.0, latent_shape=SHAPE)
    boundary = ms.percent_to_sigma(0.5)
    early = den(torch.zeros(SHAPE), torch.full((2,), boundary * 1.5))
    late = den(torch.zeros(SHAPE), torch.full((2,), boundary * 0.5))
    assert torch.allclose(early, torch.tensor(1.0))
    assert torch.allclose(late, torch.tensor(3.0))


def test_rescale_cfg() -> None:
    torch.manual_seed(0)
    x, sigma = torch.randn(2, 4, 8, 8), torch.tensor([2.0, 5.0])
    args = CfgArgs(x, sigma, torch.randn(2, 4, 8, 8), torch.randn(2, 4, 8, 8), 7.0)
    torch.testing.assert_close(rescale_cfg(0.0)(args), plain_cfg(args), atol=1e-5, rtol=1e-5)
    # multiplier 1: the guided v has the std of the conditional v (Lin et al. 2023, eq. 15)
    s = sigma.view(2, 1, 1, 1)
    to_v = lambda x0: (x / (s ** 2 + 1) - x0) * (s ** 2 + 1) ** 0.5 / s
    v_out = to_v(rescale_cfg(1.0)(args))
    torch.testing.assert_close(v_out.std(dim=(1, 2, 3)), to_v(args.cond_x0).std(dim=(1, 2, 3)), atol=1e-4, rtol=1e-4)


def test_post_cfg_hook_sees_both_predictions() -> None:
    model = ToyModel()
    seen = []

    def hook(args, x0):
        seen.append(args)
        return x0 * 0 + 1.0
    den = CFGDenoiser(model, MS, [cond(1.0)], [cond(0.0)], cfg=1.0, latent_shape=SHAPE, post_cfg=[hook])
    out = den(torch.randn(SHAPE), torch.full((2,), 3.0))
    assert torch.equal(out, torch.ones(SHAPE)) and model.batches == [4] and seen[0].cond_scale == 1.0


def test_conds_from_comfyui_conditioning() -> None:
    ca, pooled, mask = torch.randn(1, 77, 8), torch.randn(1, 8), torch.ones(8, 8)
    [c] = conds_from_conditioning([[ca, {"pooled_output": pooled, "area": (4, 4, 0, 0), "strength": 0.7,
                                         "mask": mask, "set_area_to_bounds": True, "start_percent": 0.2}]])
    assert c.inputs["c_crossattn"] is ca and c.inputs["pooled_output"] is pooled
    assert (c.area, c.strength, c.mask is mask, c.is_area_set_to_mask_bounds, c.start_percent) == \
        ((4, 4, 0, 0), 0.7, True, True, 0.2)


@pytest.mark.parametrize("is_nested", [False, True])
def test_dual_cfg_combines_three_predictions_in_one_forward(is_nested: bool) -> None:
    from sampling.guidance import DualCFGDenoiser
    model, ms = _x0_model()
    den = DualCFGDenoiser(model, ms, [cond(3.0)], [cond(1.0)], [cond(-1.0)], cfg_conds=2.0, cfg_cond2_negative=4.0,
                          latent_shape=SHAPE, is_nested=is_nested)
    out = den(torch.zeros(SHAPE), torch.full((2,), 3.0))
    assert model.batches == [6]
    p, m, n = 3.0, 1.0, -1.0
    expected = n + 4.0 * ((m + 2.0 * (p - m)) - n) if is_nested else (n + 4.0 * (m - n)) + 2.0 * (p - m)
    assert torch.allclose(out, torch.tensor(expected))


def test_dual_cfg_skips_unneeded_passes_unless_cfg_pp_needs_the_uncond() -> None:
    """ComfyUI's cfg1 optimisation (regular style): both scales 1 -> only cond1 runs; CFG++ (`with_uncond`)
    runs all three and gets the negative's x0 (the middle's when nested); post-CFG hooks see the inner step."""
    from sampling.guidance import DualCFGDenoiser
    model, ms = _x0_model()
    x, sigma = torch.zeros(SHAPE), torch.full((2,), 3.0)
    den = DualCFGDenoiser(model, ms, [cond(3.0)], [cond(1.0)], [cond(-1.0)], cfg_conds=1.0, cfg_cond2_negative=1.0,
                          latent_shape=SHAPE)
    assert torch.allclose(den(x, sigma), torch.tensor(3.0)) and model.batches == [2]
    x0, uncond = den.with_uncond(x, sigma)
    assert torch.allclose(x0, torch.tensor(3.0)) and torch.allclose(uncond, torch.tensor(-1.0))
    assert model.batches == [2, 6]
    seen = []
    nested = DualCFGDenoiser(model, ms, [cond(3.0)], [cond(1.0)], [cond(-1.0)], cfg_conds=2.0,
                             cfg_cond2_negative=1.0, latent_shape=SHAPE, is_nested=True,
                             post_cfg=[lambda args, x0: seen.append(args.cond_scale) or x0])
    x0, uncond = nested.with_uncond(x, sigma)
    assert torch.allclose(x0, torch.tensor(5.0)) and torch.allclose(uncond, torch.tensor(1.0)) and seen == [2.0]


_area = st.tuples(st.integers(8, 32), st.integers(8, 32), st.integers(0, 24), st.integers(0, 24)).map(
    lambda a: (min(a[0], 32 - a[2]), min(a[1], 32 - a[3]), a[2], a[3]))


@settings(max_examples=25, deadline=None)
@given(areas=st.lists(st.one_of(st.none(), _area), min_size=1, max_size=4),
       strengths=st.lists(st.floats(0.1, 2.0), min_size=4, max_size=4),
       limit=st.integers(1, 12))
def test_splitting_batches_never_changes_the_result(areas, strengths, limit) -> None:
    """Whatever `fits` allows per forward, the guided x0 is the same as with one big batch."""
    model = ToyModel()
    positive = [cond(float(i), area=a, strength=strengths[i]) for i, a in enumerate(areas)]
    x, sigma = torch.randn(SHAPE, generator=torch.Generator().manual_seed(0)), torch.full((2,), 2.0)
    whole = CFGDenoiser(model, MS, positive, [cond(-1.0)], cfg=4.0, latent_shape=SHAPE)(x, sigma)
    split = CFGDenoiser(model, MS, positive, [cond(-1.0)], cfg=4.0, latent_shape=SHAPE,
                        fits=lambda shape: shape[0] <= limit)(x, sigma)
    torch.testing.assert_close(split, whole, atol=1e-5, rtol=1e-5)
