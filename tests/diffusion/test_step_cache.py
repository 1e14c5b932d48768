"""EasyCache / LazyCache (diffusion.step_cache): the skip rule on a scripted denoiser, worked out by hand,
per-entry reuse in EasyCache, and both nodes through KSampler on a tiny SD1.5 checkpoint (threshold 0 is
the uncached run exactly; a high threshold skips UNet calls)."""
from __future__ import annotations

import pytest
import torch

from diffusion import conditioning, ksampler, loading, step_cache
from model_management import MemorySettings, ModelManager
from nodes.builtin.step_cache import EasyCache, LazyCache


def _run_state(kind: str, threshold: float = 0.2) -> step_cache.StepCacheRun:
    return step_cache.StepCacheRun(step_cache.StepCacheSettings(kind, threshold), start_sigma=1e9, end_sigma=0.0)


def test_lazycache_rule_by_hand():
    run = _run_state("LazyCache")
    calls = []

    def guider(x, sigma):                                   # x0 = 2x + (index of the computed call)
        calls.append(float(x.mean()))
        return 2 * x + (len(calls) - 1) * (2.0 if len(calls) == 3 else 1.0)

    denoiser = run.wrap_denoiser(guider)
    sigma = torch.tensor([1.0])
    outs = [float(denoiser(torch.full((1, 4, 16, 16), v), sigma).mean()) for v in (1.0, 1.5, 1.6, 1.7, 1.71)]
    # step 0: computed, 2. step 1: no rate yet, computed, 3 + 1 = 4; rate k = (4 - 2) / 0.5 = 4.
    # step 2: change 0.1, accumulated 4 * 0.1 / 4 = 0.1 < 0.2: reused, 1.6 + (4 - 1.5) = 4.1.
    # step 3: change from the last computed input 0.2, accumulated 0.1 + 0.2 = 0.3: computed, 3.4 + 4 = 7.4;
    #         k = (7.4 - 4) / 0.2 = 17. step 4: 17 * 0.01 / 7.4 = 0.023 < 0.2: reused, 1.71 + (7.4 - 1.7) = 7.41.
    assert outs == pytest.approx([2.0, 4.0, 4.1, 7.4, 7.41], abs=1e-5)
    assert calls == pytest.approx([1.0, 1.5, 1.7])
    assert run.summary() == "LazyCache - skipped 2/5 steps (1.67x speedup)"


def test_step_window_is_respected():
    run = step_cache.StepCacheRun(step_cache.StepCacheSettings("LazyCache", 3.0), start_sigma=5.0, end_sigma=1.0)
    calls = []
    denoiser = run.wrap_denoiser(lambda x, s: calls.append(float(s)) or x * 0.5)
    for s in (8.0, 6.0, 4.0, 3.0, 2.0, 1.0, 0.5):
        denoiser(torch.full((1, 1, 8, 8), s), torch.tensor([s]))
    # before the start (8, 6) and from the end on (1, 0.5) always computed; 4 computed (no rate yet: before
    # the start no input change is measured), k = |2 - 3| / 2 = 0.5; 3: 0.5 * 1 / 2 = 0.25 and 2: + 0.5 * 2 / 2,
    # both under 3.0, reused
    assert calls == [8.0, 6.0, 4.0, 1.0, 0.5]


def test_easycache_reuses_each_entry_difference():
    run = _run_state("EasyCache", threshold=1.0)
    entries = [(0, 0), (1, 0)]

    def unet(x, t, inputs):                                  # cond row: x + 1, uncond row: x - 1
        return x + torch.tensor([1.0, -1.0]).view(2, 1, 1, 1)
    fn = run.wrap_model_function(unet)
    denoiser = run.wrap_denoiser(lambda x, s: fn(x, s, {"transformer_options": {"sigmas": s, "uuids": entries}}))
    outs = [denoiser(torch.full((2, 1, 8, 8), v), torch.tensor([1.0, 1.0])) for v in (1.0, 1.1, 1.2, 1.3)]
    assert run.tracker.skipped >= 1
    for v, out in zip((1.0, 1.1, 1.2, 1.3), outs):
        torch.testing.assert_close(out[0], torch.full((1, 8, 8), v + 1.0))
        torch.testing.assert_close(out[1], torch.full((1, 8, 8), v - 1.0))


SAMPLE_ARGS = {"seed": 3, "steps": 8, "cfg": 5.0, "sampler_name": "euler", "scheduler": "normal"}


@pytest.mark.parametrize("node", [EasyCache, LazyCache])
def test_nodes_through_ksampler(tiny_sd15, node):
    model, clip, _ = loading.load_checkpoint_file(tiny_sd15, ModelManager(MemorySettings(force_fp32=True)))
    positive, negative = conditioning.encode_text(clip, "a cat"), conditioning.encode_text(clip, "a dog")
    calls = []
    model.module.register_forward_pre_hook(lambda m, a: calls.append(1))

    def sample(m):
        calls.clear()
        latent = ksampler.ksample(m, {"samples": torch.zeros(1, 4, 8, 8)}, positive, negative, **SAMPLE_ARGS)
        return latent["samples"], len(calls)

    plain, plain_calls = sample(model)
    (exact,) = node().run(model, 0.0, 0.15, 0.95, False)
    out, n = sample(exact)
    torch.testing.assert_close(out, plain, rtol=0, atol=0)
    assert n == plain_calls == SAMPLE_ARGS["steps"]
    assert step_cache.OPTION not in model.options                         # the node clones

    (lazy,) = node().run(model, 3.0, 0.0, 1.0, True)
    out, n = sample(lazy)
    assert n < plain_calls and torch.isfinite(out).all()
    assert not torch.equal(out, plain)
