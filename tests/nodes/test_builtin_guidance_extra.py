"""FreSca, RenormCFG and the DiT Skip Layer Guidance pair: the formulas against independent numpy /
hand-written references, and the SLG nodes through the real Engine on a tiny SD3 checkpoint."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from diffusion import skip_layer_guidance as slg
from diffusion.ksampler import MODEL_CALL_OPTIONS
from execution.errors import PlexusError
from sampling import guidance_variants as gv
from sampling.guidance import CfgArgs
from sampling.model_sampling import FlowSampling
from tests.nodes.test_builtin_sd3 import harness, harness_sd3, pixels, txt2img  # noqa: F401 - fixtures


def _args(cond, uncond, *, sigma=0.5, cfg=3.0, conds=((), ()), evaluate=None, cond_denoise=None):
    x = torch.randn_like(cond)
    return CfgArgs(x, torch.tensor([sigma]), cond, uncond, cfg, conds, evaluate, cond_denoise)


# --- FreSca ---------------------------------------------------------------------------------------------

def _fresca_numpy(update: np.ndarray, low: float, high: float, cutoff: int) -> np.ndarray:
    spectrum = np.fft.fftshift(np.fft.fft2(update, axes=(-2, -1)), axes=(-2, -1))
    mask = np.full(update.shape, high)
    h, w = update.shape[-2:]
    fh, fw = min(cutoff, h // 2), min(cutoff, w // 2)
    mask[..., h // 2 - fh:h // 2 + fh, w // 2 - fw:w // 2 + fw] = low
    return np.fft.ifft2(np.fft.ifftshift(spectrum * mask, axes=(-2, -1)), axes=(-2, -1)).real


@pytest.mark.parametrize("shape,cutoff", [((2, 4, 16, 12), 3), ((1, 4, 9, 7), 20), ((1, 2, 8, 8), 1)])
def test_fresca_scales_low_and_high_frequencies_like_a_numpy_fft(shape, cutoff) -> None:
    torch.manual_seed(0)
    cond, uncond = torch.randn(shape), torch.randn(shape)
    new_cond, new_uncond = gv.fresca(0.7, 1.6, cutoff)(_args(cond, uncond))
    expected = uncond.numpy() + _fresca_numpy((cond - uncond).numpy().astype(np.float64), 0.7, 1.6, cutoff)
    np.testing.assert_allclose(new_cond.numpy(), expected, atol=1e-5)
    assert torch.equal(new_uncond, uncond)


def test_fresca_with_equal_scales_is_a_plain_scaling_and_skips_cfg_one() -> None:
    cond, uncond = torch.randn(1, 4, 8, 8), torch.randn(1, 4, 8, 8)
    new_cond, _ = gv.fresca(1.5, 1.5, 2)(_args(cond, uncond))
    torch.testing.assert_close(new_cond, uncond + 1.5 * (cond - uncond), atol=1e-5, rtol=1e-5)
    untouched = gv.fresca(0.0, 3.0, 2)(_args(cond, uncond, conds=((), None)))
    assert untouched[0] is cond


# --- RenormCFG ------------------------------------------------------------------------------------------

def test_renorm_cfg_caps_each_samples_norm_and_truncates_late_steps() -> None:
    torch.manual_seed(1)
    cond = torch.randn(2, 4, 6, 6)
    uncond = cond.clone()
    uncond[0] = -cond[0]            # sample 0: the guided result is 5x cond, far over the cap
    uncond[1] = cond[1] * 0.98      # sample 1: nearly cond, under the cap
    out = gv.renorm_cfg(cfg_trunc=100.0, renorm=1.5)(_args(cond, uncond, sigma=0.8, cfg=3.0))
    guided = uncond + 3.0 * (cond - uncond)
    assert torch.linalg.vector_norm(out[0]) == pytest.approx(1.5 * float(torch.linalg.vector_norm(cond[0])), rel=1e-5)
    torch.testing.assert_close(out[0], guided[0] * (1.5 * cond[0].norm() / guided[0].norm()))
    torch.testing.assert_close(out[1], guided[1])
    # renorm 0: plain CFG; sigma at or past cfg_trunc: the conditional prediction alone
    torch.testing.assert_close(gv.renorm_cfg(100.0, 0.0)(_args(cond, uncond)), guided)
    assert torch.equal(gv.renorm_cfg(0.5, 1.0)(_args(cond, uncond, sigma=0.5)), cond)


# --- Skip Layer Guidance (DiT) -------------------------------------------------------------------------

class _Skippable(torch.nn.Module):
    def forward(self, x, timesteps, context, y=None, *, skip_blocks=frozenset()):
        return x


class _Plain(torch.nn.Module):
    def forward(self, x, timesteps, context):
        return x


class _FakeModel:
    """The few DiffusionModel members the SLG patches use."""

    def __init__(self, module):
        self.module, self.model_sampling, self.pre, self.post = module, FlowSampling(shift=3.0), [], []

    def clone(self):
        twin = _FakeModel(self.module)
        twin.pre, twin.post = list(self.pre), list(self.post)
        return twin

    def add_pre_cfg_function(self, fn):
        self.pre.append(fn)

    def add_post_cfg_function(self, fn):
        self.post.append(fn)


def _value_by_skipping(base: torch.Tensor):
    """A model pass whose result tells which blocks were skipped: base + sum(skipped)."""
    return lambda: base + sum(MODEL_CALL_OPTIONS.get().get("skip_blocks", ()))


def test_dit_guidance_adds_the_skipped_difference_inside_the_sigma_window_then_rescales() -> None:
    model = _FakeModel(_Skippable())
    patched = slg.with_skip_layer_guidance_dit(model, "1, 3", "7, 8", scale=2.0, start_percent=0.0,
                                               end_percent=0.5, rescaling_scale=0.0)
    (post,) = patched.post
    cond = torch.randn(1, 4, 4, 4)
    x0 = torch.randn(1, 4, 4, 4)
    args = _args(cond, torch.zeros_like(cond), sigma=0.9, cond_denoise=_value_by_skipping(cond))
    torch.testing.assert_close(post(args, x0), x0 + (cond - (cond + 4)) * 2.0)   # blocks 1 and 3 skipped
    outside = _args(cond, torch.zeros_like(cond), sigma=0.1, cond_denoise=_value_by_skipping(cond))
    assert torch.equal(post(outside, x0), x0)                  # sigma(0.5) of shift 3 is 0.75 > 0.1
    rescaled = slg.with_skip_layer_guidance_dit(model, "1", "", 2.0, 0.0, 1.0, rescaling_scale=0.5).post[0]
    guided = x0 + (cond - (cond + 1)) * 2.0
    factor = 0.5 * cond.std() / guided.std() + 0.5
    torch.testing.assert_close(rescaled(_args(cond, cond, sigma=0.9, cond_denoise=_value_by_skipping(cond)), x0),
                               guided * factor)
    assert MODEL_CALL_OPTIONS.get() == {}                      # the skip is reset after the extra pass


def test_dit_simple_reevaluates_only_the_unconditional_branch_with_skipped_blocks() -> None:
    (pre,) = slg.with_skip_layer_guidance_dit_simple(_FakeModel(_Skippable()), "2", "", 0.0, 1.0).pre
    cond, uncond = torch.randn(1, 4, 4, 4), torch.randn(1, 4, 4, 4)
    calls = []

    def evaluate(cond_lists, x, sigma, transformer_options=None):
        calls.append((cond_lists, dict(MODEL_CALL_OPTIONS.get())))
        return [uncond + 10]

    positive, negative = ["pos"], ["neg"]
    new_cond, new_uncond = pre(_args(cond, uncond, conds=(positive, negative), evaluate=evaluate))
    assert new_cond is cond and torch.equal(new_uncond, uncond + 10)
    assert calls == [([negative], {"skip_blocks": frozenset({2})})]
    calls.clear()
    assert pre(_args(cond, uncond, conds=(positive, None), evaluate=evaluate)) == (cond, uncond) and not calls


def test_models_that_cannot_skip_blocks_are_refused_and_empty_layers_change_nothing() -> None:
    with pytest.raises(PlexusError, match="cannot skip"):
        slg.with_skip_layer_guidance_dit(_FakeModel(_Plain()), "7", "", 3.0, 0.0, 1.0, 0.0)
    with pytest.raises(PlexusError, match="cannot skip"):
        slg.with_skip_layer_guidance_dit_simple(_FakeModel(_Plain()), "7", "", 0.0, 1.0)
    model = _FakeModel(_Plain())
    assert slg.with_skip_layer_guidance_dit(model, "", "", 3.0, 0.0, 1.0, 0.0) is model


def test_dit_node_on_sd3_equals_the_sd3_node_and_simple_changes_the_image(harness):  # noqa: F811
    prompt = txt2img(steps=4)
    base = pixels(harness, prompt)
    prompt["12"] = {"class_type": "SkipLayerGuidanceSD3",
                    "inputs": {"model": ["4", 0], "layers": "1", "scale": 3.0, "start_percent": 0.0, "end_percent": 1.0}}
    prompt["3"]["inputs"]["model"] = ["12", 0]
    sd3_guided = pixels(harness, prompt)
    prompt["12"] = {"class_type": "SkipLayerGuidanceDiT",
                    "inputs": {"model": ["4", 0], "double_layers": "1", "single_layers": "7, 8, 9", "scale": 3.0,
                               "start_percent": 0.0, "end_percent": 1.0, "rescaling_scale": 0.0}}
    assert np.array_equal(pixels(harness, prompt), sd3_guided) and not np.array_equal(sd3_guided, base)
    prompt["12"] = {"class_type": "SkipLayerGuidanceDiTSimple",
                    "inputs": {"model": ["4", 0], "double_layers": "1", "single_layers": "",
                               "start_percent": 0.0, "end_percent": 1.0}}
    simple = pixels(harness, prompt)
    assert not np.array_equal(simple, base) and not np.array_equal(simple, sd3_guided)
    # cfg 1: uncond + 1 * (cond - uncond) is cond up to float rounding, whatever the skipped uncond is
    prompt["3"]["inputs"]["cfg"] = 1.0
    assert np.abs(pixels(harness, prompt) - pixels(harness, txt2img(steps=4, cfg=1.0))).max() <= 2
