"""Guidance and model patches through diffusion.ksampler on a tiny random-weight SD1.5 checkpoint.

One Euler step to sigma 0 returns the guided x0 itself (x + (x - x0) / s * (0 - s) = x0), and the latent
format is linear, so each guidance formula can be checked on the sampled outputs of its parts."""
from __future__ import annotations

import math

import pytest
import torch

from diffusion import conditioning, guidance_patches as gp, ksampler, loading
from model_management import MemorySettings, ModelManager
from models import unet_patches
from sampling.model_sampling import Eps, VPrediction
from sampling.model_sampling_continuous import (
    PLAYGROUND_V25,
    ContinuousEDMSampling,
    ContinuousVSampling,
    EDMPrediction,
    continuous_edm,
)


@pytest.fixture(scope="module")
def parts(tmp_path_factory):
    from tests.diffusion.helpers import write_tiny
    path = write_tiny(tmp_path_factory.mktemp("ckpt") / "tiny.safetensors")
    model, clip, _ = loading.load_checkpoint_file(path, ModelManager(MemorySettings(force_fp32=True)))
    return model, clip, conditioning.encode_text(clip, "a cat"), conditioning.encode_text(clip, "a dog")


def _sample(model, positive, negative, *, cfg=5.0, steps=1, size=8, seed=3) -> torch.Tensor:
    return ksampler.ksample(model, {"samples": torch.zeros(1, 4, size, size)}, positive, negative, seed=seed,
                            steps=steps, cfg=cfg, sampler_name="euler", scheduler="normal")["samples"]


def test_perturbed_attention_guidance_adds_scale_times_cond_minus_perturbed(parts):
    model, _, pos, neg = parts
    guided = _sample(gp.with_perturbed_attention_guidance(model, 2.0), pos, neg)
    plain = _sample(model, pos, neg)
    cond_only = _sample(model, pos, neg, cfg=1.0)
    perturbed_model = model.clone()
    perturbed_model.set_model_attn1_replace(lambda q, k, v, extra: v, "middle", 0)
    perturbed = _sample(perturbed_model, pos, neg, cfg=1.0)
    assert not torch.allclose(perturbed, cond_only, atol=1e-4)
    torch.testing.assert_close(guided, plain + 2.0 * (cond_only - perturbed), rtol=1e-3, atol=1e-3)
    torch.testing.assert_close(_sample(gp.with_perturbed_attention_guidance(model, 0.0), pos, neg), plain)


def test_cfg_variants_run_through_the_sampler_and_change_the_result(parts):
    from sampling import guidance_variants as gv
    model, _, pos, neg = parts
    plain = _sample(model, pos, neg, steps=2)
    for patched in (gp.with_post_cfg(model, gv.cfg_zero_star), gp.with_post_cfg(model, gv.cfg_norm(0.9)),
                    gp.with_apg(model, 0.5, 1.0, 0.3), gp.with_pre_cfg(model, gv.tangential_damping),
                    gp.with_post_cfg(model, gv.epsilon_scaling(1.05)), gp.with_post_cfg(model, gv.mahiro)):
        out = _sample(patched, pos, neg, steps=2)
        assert torch.isfinite(out).all() and not torch.allclose(out, plain, atol=1e-4)
    torch.testing.assert_close(_sample(gp.with_post_cfg(model, gv.epsilon_scaling(1.0)), pos, neg, steps=2), plain)


def test_perp_neg_patch_with_zero_neg_scale_is_cfg_against_the_empty_prompt(parts):
    model, clip, pos, neg = parts
    empty = conditioning.encode_text(clip, "")
    out = _sample(gp.with_perp_neg(model, empty, 0.0), pos, neg)
    torch.testing.assert_close(out, _sample(model, pos, empty), rtol=1e-3, atol=1e-3)   # batch of 1 vs 2


def test_self_attention_multiply_scales_q_and_v_like_an_attention_replace(parts):
    model, _, pos, neg = parts
    multiplied = gp.with_unet_attention_multiplied(model, "attn1", 2.0, 1.0, 0.5, 1.0)
    assert multiplied.patched_keys() and not model.patched_keys()
    replaced = model.clone()
    every_block = [("input", i) for i in range(6)] + [("middle", 0)] + [("output", i) for i in range(6)]
    for block, index in every_block:
        replaced.set_model_attn1_replace(
            lambda q, k, v, extra: unet_patches.attention(2.0 * q, k, 0.5 * v, extra["n_heads"]), block, index)
    ones = gp.with_unet_attention_multiplied(model, "attn2", 1.0, 1.0, 1.0, 1.0)
    plain = _sample(model, pos, neg)
    assert not ones.patched_keys()
    out = _sample(multiplied, pos, neg)
    assert not torch.allclose(out, plain, atol=1e-4)
    torch.testing.assert_close(out, _sample(replaced, pos, neg), rtol=1e-4, atol=1e-4)


def test_clip_attention_multiply_patches_every_tower_and_changes_the_encoding(parts):
    _, clip, pos, _ = parts
    same = gp.with_clip_attention_multiplied(clip, 1.0, 1.0, 1.0, 1.0)
    torch.testing.assert_close(conditioning.encode_text(same, "a cat")[0][0], pos[0][0])
    changed = gp.with_clip_attention_multiplied(clip, 1.0, 1.0, 1.0, 0.0)
    keys = changed.patched_keys()
    assert keys and all(k.endswith(("out_proj.weight", "out_proj.bias")) for k in keys)
    assert not torch.allclose(conditioning.encode_text(changed, "a cat")[0][0], pos[0][0], atol=1e-4)


def test_deep_shrink_changes_sampling_only_inside_its_sigma_range(parts):
    model, _, pos, neg = parts
    plain = _sample(model, pos, neg, steps=2, size=16)
    inside = gp.with_downscale(model, 3, 2.0, 0.0, 1.0, True, "bicubic", "bicubic")
    outside = gp.with_downscale(model, 3, 2.0, 0.0, 0.0, True, "bicubic", "bicubic")
    out = _sample(inside, pos, neg, steps=2, size=16)
    assert out.shape == plain.shape and not torch.allclose(out, plain, atol=1e-4)
    torch.testing.assert_close(_sample(outside, pos, neg, steps=2, size=16), plain)
    with pytest.raises(ValueError, match="resize method"):
        gp.with_downscale(model, 3, 2.0, 0.0, 1.0, True, "lanczos3", "bicubic")


# --- continuous model samplings ---------------------------------------------------------------------------

def test_continuous_edm_sampling_maps_sigma_like_karras_c_noise():
    ms = ContinuousEDMSampling(EDMPrediction(0.5), sigma_min=0.002, sigma_max=120.0, sigma_data=0.5)
    sigma = torch.tensor([0.5, 3.0, 80.0])
    torch.testing.assert_close(ms.timestep(sigma), sigma.log() / 4)
    torch.testing.assert_close(ms.sigma(ms.timestep(sigma)), sigma)
    assert float(ms.sigma_min) == pytest.approx(0.002) and float(ms.sigma_max) == pytest.approx(120.0, rel=1e-5)
    assert ms.percent_to_sigma(0.5) == pytest.approx(math.sqrt(0.002 * 120.0), rel=1e-5)
    torch.testing.assert_close(ms.input_scale(sigma), 1 / (sigma ** 2 + 0.25).sqrt())


def test_edm_prediction_is_karras_preconditioning():
    x, f = torch.randn(3, 4, 2, 2), torch.randn(3, 4, 2, 2)
    sigma = torch.tensor([0.1, 1.0, 10.0])
    s = sigma.view(3, 1, 1, 1)
    c_skip, c_out = 0.25 / (s ** 2 + 0.25), s * 0.5 / (s ** 2 + 0.25).sqrt()
    torch.testing.assert_close(EDMPrediction(0.5).to_x0(f, x, sigma), c_skip * x + c_out * f)


def test_continuous_v_timestep_is_the_cosine_time():
    ms = ContinuousVSampling(VPrediction(1.0), sigma_min=0.03, sigma_max=500.0)
    sigma = torch.tensor([0.03, 1.0, 500.0])
    torch.testing.assert_close(ms.timestep(sigma), 2 * sigma.atan() / math.pi)
    torch.testing.assert_close(ms.sigma(ms.timestep(sigma)), sigma, rtol=1e-4, atol=1e-4)


def test_continuous_edm_choices():
    ms, fmt = continuous_edm("eps", 0.002, 120.0)
    assert isinstance(ms.prediction, Eps) and fmt is None
    ms, fmt = continuous_edm("edm_playground_v2.5", 0.002, 120.0)
    assert isinstance(ms.prediction, EDMPrediction) and fmt is PLAYGROUND_V25 and ms.sigma_data == 0.5
    with pytest.raises(ValueError, match="cosmos_rflow"):
        continuous_edm("cosmos_rflow", 0.002, 120.0)


def test_playground_latent_format_normalises_per_channel():
    z = torch.randn(1, 4, 3, 3) * 5
    mean = torch.tensor(PLAYGROUND_V25.channel_mean).view(1, 4, 1, 1)
    std = torch.tensor(PLAYGROUND_V25.channel_std).view(1, 4, 1, 1)
    torch.testing.assert_close(PLAYGROUND_V25.process_in(z), (z - mean) * 0.5 / std)
    torch.testing.assert_close(PLAYGROUND_V25.process_out(PLAYGROUND_V25.process_in(z)), z, rtol=1e-5, atol=1e-5)


def test_model_sampling_patches_sample_with_their_schedules(parts):
    model, _, pos, neg = parts
    edm = gp.with_continuous_edm_sampling(model, "edm_playground_v2.5", 80.0, 0.002)
    assert edm.latent_format is PLAYGROUND_V25 and model.latent_format is not PLAYGROUND_V25
    v = gp.with_continuous_v_sampling(model, 500.0, 0.03)
    aura = gp.with_aura_flow_sampling(model, 1.73)
    assert float(aura.model_sampling.timestep(torch.tensor(0.5))) == pytest.approx(0.5)
    outs = [_sample(m, pos, neg, steps=2) for m in (edm, v, aura)]
    assert all(torch.isfinite(o).all() for o in outs)
    assert not torch.allclose(outs[0], outs[1])


# --- Differential Diffusion --------------------------------------------------------------------------------

def test_differential_mask_thresholds_by_sampling_progress():
    from sampling.differential_diffusion import differential_mask
    from sampling.model_sampling import DiscreteSampling
    from sampling.schedules import karras_sigmas
    ms = DiscreteSampling()
    sigmas = karras_sigmas(5, float(ms.sigma_min), float(ms.sigma_max))
    mask = torch.tensor([0.0, 0.3, 0.6, 1.0]).view(1, 1, 2, 2)
    fn = differential_mask(ms)
    first = fn(sigmas[:1], mask, sigmas)
    assert first.flatten().tolist() == [0.0, 0.0, 0.0, 1.0]          # threshold 1 at the start
    t = lambda s: float(ms.timestep(torch.tensor([s])))
    tau = (t(float(sigmas[2])) - t(float(ms.sigma_min))) / (t(float(sigmas[0])) - t(float(ms.sigma_min)))
    middle = fn(sigmas[2:3], mask, sigmas)
    assert middle.flatten().tolist() == [float(v >= tau) for v in (0.0, 0.3, 0.6, 1.0)]
    blended = differential_mask(ms, 0.25)(sigmas[2:3], mask, sigmas)
    torch.testing.assert_close(blended, 0.25 * middle + 0.75 * mask)


def test_differential_diffusion_changes_masked_sampling_only(parts):
    """Without a noise mask the function is never consulted; with one, pixels join as progress passes
    their mask value (at the last step, sigma_min, every pixel is regenerated, as in ComfyUI)."""
    model, _, pos, neg = parts
    latent = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(2))

    def run(m, mask=None):
        samples = {"samples": latent} if mask is None else {"samples": latent, "noise_mask": mask}
        return ksampler.ksample(m, samples, pos, neg, seed=3, steps=3, cfg=4.0, sampler_name="euler",
                                scheduler="normal", denoise=0.8)["samples"]
    dd = gp.with_differential_diffusion(model)
    torch.testing.assert_close(run(dd), run(model))
    soft = torch.linspace(0, 1, 64).view(1, 8, 8)
    assert not torch.allclose(run(dd, soft), run(model, soft), atol=1e-3)


# --- Self-Attention Guidance -------------------------------------------------------------------------------

def test_sag_attention_matches_sdpa_and_returns_probabilities():
    from diffusion.sag import attention_with_probabilities
    q, k, v = (torch.randn(2, 6, 16) for _ in range(3))
    out, p = attention_with_probabilities(q, k, v, heads=4)
    torch.testing.assert_close(out, unet_patches.attention(q, k, v, 4), rtol=1e-5, atol=1e-5)
    assert p.shape == (8, 6, 6)
    torch.testing.assert_close(p.sum(-1), torch.ones(8, 6))


def test_sag_blur_is_scipy_gaussian_with_mirror_padding():
    import numpy as np
    import scipy.ndimage
    from diffusion.sag import gaussian_blur
    x = torch.randn(1, 2, 12, 10)
    expected = np.stack([scipy.ndimage.gaussian_filter(x[0, c].double().numpy(), 2.0, mode="mirror", truncate=2.0)
                         for c in range(2)])
    np.testing.assert_allclose(gaussian_blur(x, 2.0)[0].double().numpy(), expected, rtol=1e-4, atol=1e-5)


def test_sag_degrades_only_where_attention_concentrates():
    from diffusion.sag import degraded_x0, gaussian_blur
    x0 = torch.randn(1, 4, 8, 8)
    uniform = torch.full((2, 16, 16), 1 / 16)                      # every key receives exactly 1: no mask
    torch.testing.assert_close(degraded_x0(x0, uniform, 2.0), x0)
    focused = torch.zeros(2, 16, 16)
    focused[:, :, 0] = 1.0                                         # all queries look at key 0 (grid cell 0, 0)
    out = degraded_x0(x0, focused, 2.0)
    blurred = gaussian_blur(x0, 2.0)
    torch.testing.assert_close(out[..., :2, :2], blurred[..., :2, :2])
    torch.testing.assert_close(out[..., 2:, :], x0[..., 2:, :])


def test_self_attention_guidance_through_the_sampler(parts):
    from diffusion.sag import with_self_attention_guidance
    model, _, pos, neg = parts
    plain = _sample(model, pos, neg, steps=2, size=16)
    off = _sample(with_self_attention_guidance(model, 0.0, 2.0), pos, neg, steps=2, size=16)
    torch.testing.assert_close(off, plain, rtol=2e-3, atol=2e-3)      # explicit softmax vs SDPA only
    on = _sample(with_self_attention_guidance(model, 0.8, 2.0), pos, neg, steps=2, size=16)
    assert torch.isfinite(on).all() and not torch.allclose(on, plain, atol=1e-3)
    small = _sample(with_self_attention_guidance(model, 0.8, 2.0), pos, neg, steps=2, size=4)
    torch.testing.assert_close(small, _sample(model, pos, neg, steps=2, size=4), rtol=2e-3, atol=2e-3)
