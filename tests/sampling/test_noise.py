"""Seeded noise is ComfyUI's: same seed -> same tensors."""
from __future__ import annotations

import pytest
import torch

from sampling.noise import (
    BrownianTreeNoiseSampler,
    gaussian_noise_sampler,
    inpaint_noise,
    prepare_noise,
    zero_noise,
)


@pytest.mark.parametrize("seed", [0, 42, 2 ** 32 + 5, 0xFFFFFFFFFFFFFFFF])
def test_prepare_noise_is_manual_seed_then_randn(seed: int) -> None:
    latent = torch.zeros(2, 4, 8, 8)
    state = torch.random.get_rng_state()
    try:
        torch.manual_seed(seed)                          # what ComfyUI's prepare_noise does
        expected = torch.randn(latent.size(), dtype=torch.float32, device="cpu")
    finally:
        torch.random.set_rng_state(state)
    assert torch.equal(prepare_noise(latent, seed), expected)


def test_prepare_noise_leaves_global_rng_alone() -> None:
    state = torch.random.get_rng_state()
    prepare_noise(torch.zeros(1, 4, 8, 8), 123)
    assert torch.equal(torch.random.get_rng_state(), state)


def test_batch_index_reproduces_each_position() -> None:
    """Position k is the k-th [1, C, H, W] draw of the seed's generator, whatever else is in the batch."""
    seed = 77
    g = torch.Generator().manual_seed(seed)
    draws = [torch.randn(1, 4, 8, 8, generator=g) for _ in range(5)]
    got = prepare_noise(torch.zeros(3, 4, 8, 8), seed, batch_index=[4, 1, 1])
    assert torch.equal(got[0], draws[4][0])
    assert torch.equal(got[1], draws[1][0]) and torch.equal(got[2], draws[1][0])
    alone = prepare_noise(torch.zeros(1, 4, 8, 8), seed, batch_index=[1])
    assert torch.equal(alone[0], got[1])


def test_noise_takes_the_latent_dtype_but_is_drawn_in_float32() -> None:
    half = prepare_noise(torch.zeros(1, 4, 8, 8, dtype=torch.float16), 5)
    assert half.dtype == torch.float16
    assert torch.equal(half, prepare_noise(torch.zeros(1, 4, 8, 8), 5).half())
    assert torch.equal(zero_noise(torch.ones(1, 4, 2, 2)), torch.zeros(1, 4, 2, 2))


def test_gaussian_noise_sampler_seeds_like_comfyui() -> None:
    """ComfyUI 0.3.64 `default_noise_sampler(x, seed=extra_args["seed"])`: one generator on x's device
    seeded with the sampler's seed itself, one randn of x's whole shape per call."""
    x = torch.zeros(1, 4, 8, 8)
    sampler = gaussian_noise_sampler(x, seed=10)
    g = torch.Generator().manual_seed(10)
    assert torch.equal(sampler(torch.tensor(1.0), torch.tensor(0.5)), torch.randn(x.size(), generator=g))
    assert torch.equal(sampler(torch.tensor(0.5), torch.tensor(0.1)), torch.randn(x.size(), generator=g))
    # the same seed as the initial noise, so on the CPU the first draw repeats it for a batch of one
    assert torch.equal(gaussian_noise_sampler(x, seed=10)(torch.tensor(1.0), torch.tensor(0.5)),
                       prepare_noise(x, 10))
    assert torch.equal(inpaint_noise(x.shape, 10), torch.randn(x.size(), generator=torch.Generator().manual_seed(11)))


def test_gaussian_noise_for_a_batch_is_one_draw_of_the_whole_batch() -> None:
    """A batch of 2 draws [2, C, H, W] at once: item 1 is the second half of that draw (not a draw of its
    own), which is what LatentFromBatch then picks in ComfyUI."""
    batch = gaussian_noise_sampler(torch.zeros(2, 4, 8, 8), seed=3)(torch.tensor(1.0), torch.tensor(0.5))
    whole = torch.randn((2, 4, 8, 8), generator=torch.Generator().manual_seed(3))
    assert torch.equal(batch, whole)
    single = gaussian_noise_sampler(torch.zeros(1, 4, 8, 8), seed=3)(torch.tensor(1.0), torch.tensor(0.5))
    assert torch.equal(batch[:1], single) and not torch.equal(batch[1:], single)
    assert batch.dtype == torch.float32
    half = gaussian_noise_sampler(torch.zeros(1, 4, 8, 8, dtype=torch.float64), seed=3)(torch.tensor(1.0),
                                                                                        torch.tensor(0.5))
    assert half.dtype == torch.float64                         # x's dtype, drawn in it


def test_brownian_tree_is_reproducible_and_consistent() -> None:
    x = torch.zeros(2, 4, 8, 8)
    a = BrownianTreeNoiseSampler(x, 0.03, 14.6, seed=3)
    b = BrownianTreeNoiseSampler(x, 0.03, 14.6, seed=3)
    c = BrownianTreeNoiseSampler(x, 0.03, 14.6, seed=4)
    s0, s1, s2 = torch.tensor(10.0), torch.tensor(5.0), torch.tensor(1.0)
    n01 = a(s0, s1)
    assert torch.equal(n01, b(s0, s1))
    assert not torch.allclose(n01, c(s0, s1))
    # Brownian increments add up: W(s0->s2) = W(s0->s1) + W(s1->s2), each normalised by sqrt(|dt|)
    whole = a(s0, s2) * 3.0
    parts = n01 * 5.0 ** 0.5 + a(s1, s2) * 4.0 ** 0.5
    torch.testing.assert_close(whole, parts, atol=1e-4, rtol=1e-4)
    assert 0.8 < float(a(s0, s2).std()) < 1.2


def test_brownian_tree_with_one_seed_per_batch_position() -> None:
    x = torch.zeros(2, 4, 8, 8)
    batched = BrownianTreeNoiseSampler(x, 0.03, 14.6, seed=[3, 9])
    single = BrownianTreeNoiseSampler(x[:1], 0.03, 14.6, seed=9)
    s0, s1 = torch.tensor(10.0), torch.tensor(5.0)
    torch.testing.assert_close(batched(s0, s1)[1], single(s0, s1)[0])
    with pytest.raises(ValueError, match="one seed per batch position"):
        BrownianTreeNoiseSampler(x, 0.03, 14.6, seed=[1])


def test_noise_mask_is_resized_bilinearly_without_rounding() -> None:
    """ComfyUI `utils.reshape_mask`: bilinear to the latent size, fractional edge values kept (a mask edge
    between latent pixels gives a partial blend), channels repeated, batch repeated to the latent's."""
    from sampling.sample import prepare_mask
    mask = torch.zeros(1, 16, 16)
    mask[:, :, :6] = 1.0                                # 6 of 16 columns: the edge falls inside latent column 1
    m = prepare_mask(mask, (2, 4, 4, 4))
    assert m.shape == (2, 4, 4, 4)
    assert torch.equal(m[:, :, :, 0], torch.ones(2, 4, 4))
    assert torch.allclose(m[:, :, :, 1], torch.full((2, 4, 4), 0.5))   # bilinear at x = 5.5: half in
    assert torch.equal(m[:, :, :, 2:], torch.zeros(2, 4, 4, 2))
