"""The hooks family's values and rules without a model: keyframe cursors, CLIP schedules, combining groups,
conditioning properties, "default" entries in the batched evaluation, and ModelComputeDtype's cast."""
from __future__ import annotations

import copy
import math

import pytest
import torch

from diffusion import hooks
from sampling.guidance import calc_cond_batch, conds_from_conditioning


def percent_to_sigma(p: float) -> float:
    """A stand-in model sampling: sigma 10 at the start, 0 at the end (ComfyUI's huge value at 0 %)."""
    return 999999999.9 if p <= 0 else 10.0 * (1.0 - p)


def frames(*spec: tuple) -> hooks.HookKeyframes:
    out = hooks.NO_KEYFRAMES
    for strength, start, *guarantee in spec:
        out = out.with_keyframe(hooks.HookKeyframe(strength, start, *guarantee))
    return out


def walk(keyframes: hooks.HookKeyframes, sigmas: list[float]) -> list[float]:
    cursor = hooks.KeyframeCursor(keyframes, percent_to_sigma, max(sigmas))
    return [cursor.strength_at(s) for s in sigmas]


def test_keyframes_switch_once_their_start_sigma_is_reached() -> None:
    # starts at sigma 1e9 (0 %), 7 (30 %), 4 (60 %)
    assert walk(frames((1.0, 0.0), (0.5, 0.3), (0.0, 0.6)), [10, 8, 6, 4, 2]) == [1.0, 1.0, 0.5, 0.0, 0.0]
    assert walk(hooks.NO_KEYFRAMES, [10, 5]) == [1.0, 1.0]
    # the first keyframe holds from the start even when it starts later
    assert walk(frames((0.3, 0.5)), [10, 8]) == [0.3, 0.3]


def test_a_keyframe_runs_its_guaranteed_steps_and_zero_guarantee_ones_are_passed_over() -> None:
    # 0 % (1 guaranteed step, but it starts before the range: none), 10 % and 20 % (none): both reached at 5
    assert walk(frames((1.0, 0.0, 1), (2.0, 0.1, 0), (3.0, 0.2, 0)), [10, 5]) == [1.0, 3.0]
    # two keyframes reached at once: the one with a guaranteed step is held for that step first
    assert walk(frames((1.0, 0.0), (2.0, 0.1, 1), (3.0, 0.2, 1)), [10, 5, 4]) == [1.0, 2.0, 3.0]


def test_the_same_sigma_again_is_not_another_step() -> None:
    cursor = hooks.KeyframeCursor(frames((1.0, 0.0), (2.0, 0.1, 1), (3.0, 0.2, 1)), percent_to_sigma, 10.0)
    assert [cursor.strength_at(s) for s in (10, 10, 5, 5, 5, 4)] == [1.0, 1.0, 2.0, 2.0, 2.0, 3.0]


def test_keyframe_sorting_is_stable_and_interpolation_follows_comfyui() -> None:
    kf = frames((1.0, 0.5), (2.0, 0.1), (3.0, 0.5))
    assert [k.strength for k in kf.keyframes] == [2.0, 1.0, 3.0]
    assert hooks.interpolated(0.0, 1.0, 3, "linear") == [0.0, 0.5, 1.0]
    assert hooks.interpolated(0.0, 1.0, 3, "ease_in") == [0.0, 0.25, 1.0]
    assert hooks.interpolated(0.0, 1.0, 3, "ease_out") == [0.0, 0.75, 1.0]
    assert hooks.interpolated(0.0, 2.0, 3, "ease_in_out") == pytest.approx([0.0, 1.0, 2.0])
    made = hooks.keyframes_over([0.1, 0.2, 0.3], 0.2, 0.6)
    assert [k.strength for k in made.keyframes] == pytest.approx([0.1, 0.2, 0.3])
    assert [k.start_percent for k in made.keyframes] == pytest.approx([0.2, 0.4, 0.6])      # float32, as ComfyUI
    assert [k.guarantee_steps for k in made.keyframes] == [1, 0, 0]
    assert hooks.float_list(0.5) == [0.5] and hooks.float_list([1, 2]) == [1.0, 2.0]
    with pytest.raises(ValueError):
        hooks.interpolated(0, 1, 2, "cubic")


def test_clip_schedule_ranges_merge_equal_strengths() -> None:
    a = hooks.WeightHook(lora={}, keyframes=frames((1.0, 0.0), (1.0, 0.3), (0.0, 0.5)))
    b = hooks.WeightHook(lora={})
    schedule = hooks.clip_schedule(hooks.HookGroup((a, b)))
    assert schedule == [((0.0, 0.5), [1.0, 1.0]), ((0.5, 1.0), [0.0, 1.0])]
    late = hooks.WeightHook(lora={}, keyframes=frames((0.4, 0.25)))
    assert hooks.clip_schedule(hooks.HookGroup((late,))) == [((0.0, 0.25), [1.0]), ((0.25, 1.0), [0.4])]


def test_groups_combine_each_hook_once_and_keyframes_keep_the_hook() -> None:
    a, b = hooks.lora_hook({}, 1.0, 1.0), hooks.lora_hook({}, 0.5, 0.0)
    assert hooks.lora_hook({}, 0.0, 0.0, a) is a                          # both strengths 0: nothing added
    both = hooks.combine_all([a, None, b, a])
    assert [h.strength_model for h in both.hooks] == [1.0, 0.5]
    assert hooks.combine_all([None, None]) is None and hooks.combine_all([None, b]) is b
    kf = frames((0.0, 0.5))
    scheduled = both.with_keyframes(kf)
    assert scheduled.hooks == both.hooks                                  # same refs: the same hooks
    assert scheduled.hooks[0].keyframes is scheduled.hooks[1].keyframes is not kf
    assert both.combined(scheduled).hooks == both.hooks


def test_conditioning_properties_and_combines() -> None:
    cond = [[torch.zeros(1, 2, 3), {"pooled_output": torch.zeros(1, 3)}]]
    group, other = hooks.lora_hook({}, 1.0, 1.0), hooks.lora_hook({}, 0.5, 0.5)
    mask = torch.ones(4, 4)
    pos, neg = hooks.set_properties([cond, cond], 0.7, "mask bounds", mask, group, (0.1, 0.8))
    assert pos[0][1]["hooks"] is group and neg[0][1]["hooks"] is group
    assert pos[0][1]["mask"].shape == (1, 4, 4) and pos[0][1]["set_area_to_bounds"] is True
    assert pos[0][1]["mask_strength"] == 0.7 and (pos[0][1]["start_percent"], pos[0][1]["end_percent"]) == (0.1, 0.8)
    assert "hooks" not in cond[0][1]                                          # inputs are never changed
    # appended hooks: one combined group shared by both lists, so they still batch together
    pos2, neg2 = hooks.set_properties([pos, neg], 1.0, "default", hooks=other)
    assert pos2[0][1]["hooks"] is neg2[0][1]["hooks"] and len(pos2[0][1]["hooks"]) == 2
    (combined,) = hooks.set_properties_and_combine([cond], [cond], hooks=group)
    assert len(combined) == 2 and "hooks" not in combined[0][1] and combined[1][1]["hooks"] is group
    (with_default,) = hooks.set_default_and_combine([cond], [cond])
    assert with_default[1][1]["default"] is True and "default" not in with_default[0][1]
    assert hooks.timesteps_ranges(0.2, 0.7) == ((0.2, 0.7), (0.0, 0.2), (0.7, 1.0))


def _constant_model(x, sigma, inputs):
    """x0 = each chunk's first cross-attention value everywhere."""
    return inputs["c_crossattn"][:, :1, :1].reshape(-1, 1, 1, 1).expand_as(x).clone()


def test_default_entries_fill_what_the_others_leave_uncovered() -> None:
    left = torch.zeros(1, 8, 8)
    left[:, :, :4] = 1.0
    a = [torch.full((1, 2, 3), 2.0), {"mask": left}]
    default = [torch.full((1, 2, 3), 5.0), {"default": True}]
    x, sigma = torch.zeros(1, 4, 8, 8), torch.tensor([1.0])
    (out,) = calc_cond_batch(_constant_model, [conds_from_conditioning([a, default])], x, sigma)
    assert torch.allclose(out[..., :4], torch.full_like(out[..., :4], 2.0))
    assert torch.allclose(out[..., 4:], torch.full_like(out[..., 4:], 5.0))
    # covered everywhere: the default entry is not evaluated at all
    calls = []
    full = [torch.full((1, 2, 3), 2.0), {}]
    calc_cond_batch(lambda x, s, i: calls.append(len(x)) or _constant_model(x, s, i),
                    [conds_from_conditioning([full, default])], x, sigma)
    assert calls == [1]


def test_entries_with_other_hook_groups_run_in_other_batches() -> None:
    g = hooks.lora_hook({}, 1.0, 1.0)
    pos = [[torch.full((1, 2, 3), 1.0), {"hooks": g}]]
    neg_same = [[torch.full((1, 2, 3), 3.0), {"hooks": g}]]
    neg_none = [[torch.full((1, 2, 3), 3.0), {}]]
    x, sigma = torch.zeros(1, 4, 8, 8), torch.tensor([1.0])
    for neg, expected in ((neg_same, [(2, True)]), (neg_none, [(1, True), (1, False)])):
        calls = []

        def model(x, s, inputs):
            calls.append((len(x), inputs.get("hooks") is g))
            return _constant_model(x, s, inputs)
        calc_cond_batch(model, [conds_from_conditioning(pos), conds_from_conditioning(neg)], x, sigma)
        assert sorted(calls, reverse=True) == expected


def test_model_compute_dtype_casts_the_layers_and_matches_a_bf16_copy() -> None:
    from models.compute_cast import computing_in
    from models.testing import tiny_unet_config
    from models.unet import UNetModel
    torch.manual_seed(0)
    unet = UNetModel(tiny_unet_config("sd1")).eval()
    x, t = torch.randn(1, 4, 8, 8), torch.tensor([500.0])
    context = torch.randn(1, 77, unet.config.context_dim)
    seen = []
    hook = unet.out[2].register_forward_pre_hook(lambda m, args: seen.append(args[0].dtype))
    with torch.no_grad():
        plain = unet(x, t, context)
        with computing_in(unet, torch.bfloat16):
            cast = unet(x, t, context)
        reference = copy.deepcopy(unet).to(torch.bfloat16)(x, t, context)
    hook.remove()
    assert seen[:2] == [torch.float32, torch.bfloat16] and cast.dtype == torch.bfloat16
    assert unet.compute_dtype is None and next(unet.parameters()).dtype == torch.float32    # nothing kept
    torch.testing.assert_close(cast.float(), reference.float(), atol=1e-2, rtol=1e-2)
    assert not torch.equal(cast.float(), plain)
    assert math.isclose(float((cast.float() - plain).abs().max()), 0.0, abs_tol=0.1)
