"""DeepCache-style block reuse (models/unet_deep_cache.py, diffusion/deep_cache.py, the PlexusDeepCache node)."""
from __future__ import annotations

import pytest
import torch

from diffusion import conditioning, deep_cache, ksampler, loading
from model_management import MemorySettings, ModelManager
from models.testing import tiny_sdxl_unet_config, tiny_unet_config
from models.unet import UNetModel
from models.unet_deep_cache import forward_parts, max_depth
from nodes.builtin.deep_cache import PlexusDeepCache


def _inputs(config, batch: int = 2):
    x = torch.randn(batch, config.in_channels, 16, 16)
    t = torch.tensor([500.0] * batch)
    context = torch.randn(batch, 77, config.context_dim)
    y = torch.randn(batch, config.adm_in_channels) if config.adm_in_channels else None
    return x, t, context, y


@pytest.mark.parametrize("config", [tiny_unet_config("sd1"), tiny_sdxl_unet_config()], ids=["sd1", "sdxl"])
def test_split_forward_equals_the_plain_forward(config):
    unet = UNetModel(config).eval()
    x, t, context, y = _inputs(config)
    with torch.no_grad():
        plain = unet(x, t, context, y) if y is not None else unet(x, t, context)
        for depth in range(1, max_depth(unet) + 1):
            full, deep = forward_parts(unet, x, t, context, depth=depth, y=y)
            torch.testing.assert_close(full, plain, rtol=0, atol=0)
            # the shallow path on the deep feature of the same inputs rebuilds the same prediction
            cached, _ = forward_parts(unet, x, t, context, depth=depth, y=y, deep=deep)
            torch.testing.assert_close(cached, plain, rtol=1e-6, atol=1e-6)
            # and the deep feature is what it stands in for: another one changes the output
            other, _ = forward_parts(unet, x, t, context, depth=depth, y=y, deep=deep + 1.0)
            assert not torch.allclose(other, plain)
    with pytest.raises(ValueError, match="cache depth"):
        forward_parts(unet, x, t, context, depth=max_depth(unet) + 1, y=y)


def test_uniform_schedule_and_call_keys():
    """Interval 3 over 7 timesteps: evaluations 0, 3, 6 are full; each call of a step keeps its own feature."""
    config = tiny_unet_config("sd1")
    unet = UNetModel(config).eval()
    middle_calls = []
    unet.middle_block.register_forward_pre_hook(lambda m, a: middle_calls.append(1))
    forward = deep_cache.DeepCacheForward(unet, unet, deep_cache.DeepCacheSettings(3, 1), float("inf"), float("-inf"))
    x, _, context, _ = _inputs(config, batch=1)
    with torch.no_grad():
        for step in range(7):
            t = torch.tensor([900.0 - 100 * step])
            forward(x, t, context)          # the cond half
            forward(x * 0.5, t, context)    # the uncond half, a second call of the same step
    assert len(middle_calls) == 3 * 2
    assert forward.evaluations == 7 and forward.reused == 4 * 2
    assert "8 cached calls over 7 evaluations" in forward.summary()


SAMPLE_ARGS = {"seed": 3, "steps": 8, "cfg": 5.0, "sampler_name": "euler", "scheduler": "normal"}


def test_node_through_ksampler(tiny_sd15):
    model, clip, _ = loading.load_checkpoint_file(tiny_sd15, ModelManager(MemorySettings(force_fp32=True)))
    positive, negative = conditioning.encode_text(clip, "a cat"), conditioning.encode_text(clip, "a dog")
    middle_calls = []
    model.module.middle_block.register_forward_pre_hook(lambda m, a: middle_calls.append(1))

    def sample(m):
        middle_calls.clear()
        latent = ksampler.ksample(m, {"samples": torch.zeros(1, 4, 8, 8)}, positive, negative, **SAMPLE_ARGS)
        return latent["samples"], len(middle_calls)

    plain, plain_calls = sample(model)
    (every,) = PlexusDeepCache().run(model, 1, 1, 0.0, 1.0)               # interval 1: every step full
    out, n = sample(every)
    torch.testing.assert_close(out, plain, rtol=0, atol=0)
    assert n == plain_calls == SAMPLE_ARGS["steps"]
    assert deep_cache.OPTION not in model.options                         # the node clones

    (cached,) = PlexusDeepCache().run(model, 3, 1, 0.0, 1.0)
    out, n = sample(cached)
    assert n == 3 and torch.isfinite(out).all()                          # steps 0, 3, 6 full
    assert not torch.equal(out, plain)

    (late,) = PlexusDeepCache().run(model, 3, 1, 0.5, 1.0)               # the first half all full
    _, n = sample(late)
    assert n == 4 + 2                                                    # 4 before the window, then 2 of 4
