"""Hooks: LoRA weight patches carried by conditioning (or a CLIP), with their strength scheduled over sampling.

ComfyUI's hooks family (comfy/hooks.py, comfy_extras/nodes_hooks.py; behaviour, not code). The values:

- HOOKS = :class:`HookGroup`: an ordered tuple of :class:`WeightHook`. A hook holds a LoRA file's tensors
  (CreateHookLora) or another checkpoint's MODEL / CLIP handles (CreateHookModelAsLora: each shared weight
  patched by `strength * (other - base)`), a model strength, a CLIP strength and its keyframes. Hooks compare
  by `ref`, which clones with other keyframes keep, so combining groups (CombineHooks*) never adds a hook twice.
  A group compares by identity, as in ComfyUI: conditioning entries batch in one model call only when they
  carry the very same group (or none).
- HOOK_KEYFRAMES = :class:`HookKeyframes`: keyframes `(strength, start_percent, guarantee_steps)` sorted by
  start (stable). During sampling a :class:`KeyframeCursor` per keyframe group walks them as the sigmas fall:
  the first keyframe holds from the start; the cursor moves on to a later keyframe once its start sigma is
  reached (`percent_to_sigma(start) >= sigma`) and the current one has run its guaranteed steps (a keyframe
  that starts before the sampled range guarantees none). Each new sigma counts one step.
- TIMESTEPS_RANGE: a `(start_percent, end_percent)` tuple.

Conditioning gets `"hooks"` (appended to a group already there: the combined group is made once per call and
shared by every entry, so the entries still batch together), a mask (`mask`, `set_area_to_bounds`,
`mask_strength`), a timestep range, or `"default": True` (ConditioningSetDefaultCombine: the entry is
sampled only where the list's other entries leave weight uncovered, sampling.guidance).

Sampling (diffusion/hook_sampling.py) patches the model for the hook group of each batch with
:func:`model_patches`; SetClipHooks (:func:`set_clip_hooks`) makes text encoding patch the CLIP the same way
(:func:`clip_patches`, once per keyframe range with `schedule_clip`, the entries then limited to that range by
`clip_start_percent` / `clip_end_percent`) and, with `apply_to_conds`, puts the group on the encoded entries.
"""
from __future__ import annotations

import functools
import logging
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import torch
from torch import Tensor

from model_management import ModelHandle, WeightPatch
from models.lora import build_patches, lora_names_for, module_weight_shapes

from .merging import source_weight

log = logging.getLogger("plexus.hooks")

INTERPOLATIONS = ("linear", "ease_in", "ease_out", "ease_in_out")
CLIP_HOOKS_OPTION = "clip_hooks"          # TextEncoders option: the ClipHooks SetClipHooks put there
Conditioning = list[list[Any]]


# --- keyframes ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class HookKeyframe:
    strength: float
    start_percent: float = 0.0
    guarantee_steps: int = 1


@dataclass(frozen=True, eq=False)
class HookKeyframes:
    """HOOK_KEYFRAMES. Identity matters: the hooks that share one object share one cursor while sampling."""
    keyframes: tuple[HookKeyframe, ...] = ()

    def with_keyframe(self, keyframe: HookKeyframe) -> HookKeyframes:
        """A new group with `keyframe` added, sorted by start percent (equal starts keep their order)."""
        frames = sorted((*self.keyframes, keyframe), key=lambda k: k.start_percent)
        return HookKeyframes(tuple(frames))

    def copy(self) -> HookKeyframes:
        return HookKeyframes(self.keyframes)


NO_KEYFRAMES = HookKeyframes()


def interpolated(start: float, end: float, count: int, method: str) -> list[float]:
    """`count` values from `start` to `end`: linear, or eased by t^2, 1 - (1 - t)^2, (1 - cos(pi t)) / 2
    (t evenly spaced in [0, 1], float32 as ComfyUI's InterpolationMethod)."""
    t = torch.linspace(0, 1, count)
    if method == "linear":
        values = torch.linspace(start, end, count)
    elif method == "ease_in":
        values = (end - start) * t.pow(2) + start
    elif method == "ease_out":
        values = (end - start) * (1 - (1 - t).pow(2)) + start
    elif method == "ease_in_out":
        values = (end - start) * ((1 - torch.cos(t * math.pi)) / 2) + start
    else:
        raise ValueError(f"unknown interpolation {method!r}; choose one of {list(INTERPOLATIONS)}")
    return [float(v) for v in values]


def keyframes_over(strengths: Sequence[float], start_percent: float, end_percent: float,
                   previous: HookKeyframes | None = None, *, is_logged: bool = False) -> HookKeyframes:
    """CreateHookKeyframesInterpolated / FromFloats: one keyframe per strength at evenly spaced starts; the
    first guarantees one step, the others none."""
    frames = previous or NO_KEYFRAMES
    percents = interpolated(start_percent, end_percent, len(strengths), "linear")
    for i, (percent, strength) in enumerate(zip(percents, strengths)):
        frames = frames.with_keyframe(HookKeyframe(float(strength), percent, 1 if i == 0 else 0))
        if is_logged:
            log.info("Hook Keyframe - start_percent:%s = %s", percent, float(strength))
    return frames


class KeyframeCursor:
    """Where one keyframe group stands during one sampling run (ComfyUI's prepare_current_keyframe rules)."""

    def __init__(self, keyframes: HookKeyframes, percent_to_sigma: Callable[[float], float], max_sigma: float):
        self.frames = keyframes.keyframes
        self.start_sigmas = [percent_to_sigma(k.start_percent) for k in self.frames]
        self.max_sigma = max_sigma
        self.index, self.used_steps, self.last_sigma = 0, 0, None

    def _guaranteed(self, i: int) -> int:
        return 0 if self.start_sigmas[i] > self.max_sigma else self.frames[i].guarantee_steps

    def strength_at(self, sigma: float) -> float:
        """The strength multiplier at this sigma (1.0 without keyframes); a new sigma is one more step."""
        if not self.frames:
            return 1.0
        if sigma != self.last_sigma:
            if self.used_steps >= self._guaranteed(self.index):
                for i in range(self.index + 1, len(self.frames)):
                    if self.start_sigmas[i] < sigma:
                        break                                   # starts later in sampling
                    self.index, self.used_steps = i, 0
                    if self._guaranteed(i) > 0:
                        break
            self.used_steps += 1
            self.last_sigma = sigma
        return self.frames[self.index].strength


# --- hooks and groups ----------------------------------------------------------------------------------------

class _Ref:
    """What clones of one hook share (ComfyUI's hook_ref)."""


@dataclass(frozen=True, eq=False)
class WeightHook:
    """LoRA-like weight patches for the MODEL (strength_model) and the CLIP (strength_clip)."""
    lora: Mapping[str, Tensor] | None = None     # a LoRA file's tensors, or
    model_source: ModelHandle | None = None      # model as LoRA: the other checkpoint's MODEL / CLIP
    clip_source: ModelHandle | None = None
    strength_model: float = 1.0
    strength_clip: float = 1.0
    keyframes: HookKeyframes = NO_KEYFRAMES
    source: str = ""                             # file name, for reports
    ref: _Ref = field(default_factory=_Ref)
    built: dict = field(default_factory=dict, repr=False)   # id(module) -> (module, LoRA patches for it)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, WeightHook) and other.ref is self.ref

    def __hash__(self) -> int:
        return id(self.ref)


@dataclass(frozen=True, eq=False)
class HookGroup:
    """HOOKS: hooks in order, each at most once (by ref)."""
    hooks: tuple[WeightHook, ...] = ()

    def __len__(self) -> int:
        return len(self.hooks)

    def combined(self, other: HookGroup | None) -> HookGroup:
        hooks = list(self.hooks)
        for hook in (other.hooks if other is not None else ()):
            if hook not in hooks:
                hooks.append(hook)
        return HookGroup(tuple(hooks))

    def with_keyframes(self, keyframes: HookKeyframes | None) -> HookGroup:
        """Every hook with `keyframes` (one fresh object shared by all of them; None: no keyframes)."""
        frames = keyframes.copy() if keyframes is not None else HookKeyframes()
        return HookGroup(tuple(replace(h, keyframes=frames) for h in self.hooks))


def lora_hook(lora: Mapping[str, Tensor], strength_model: float, strength_clip: float,
              previous: HookGroup | None = None, source: str = "") -> HookGroup:
    """CreateHookLora(ModelOnly): `previous` plus one hook (nothing added when both strengths are 0)."""
    previous = previous or HookGroup()
    if strength_model == 0 and strength_clip == 0:
        return previous
    return previous.combined(HookGroup((WeightHook(lora=lora, strength_model=strength_model,
                                                   strength_clip=strength_clip, source=source),)))


def model_as_lora_hook(model: ModelHandle | None, clip: ModelHandle | None, strength_model: float,
                       strength_clip: float, previous: HookGroup | None = None, source: str = "") -> HookGroup:
    """CreateHookModelAsLora(ModelOnly): each weight the two models share becomes base + s * (other - base)."""
    hook = WeightHook(model_source=model, clip_source=clip, strength_model=strength_model,
                      strength_clip=strength_clip, source=source)
    return (previous or HookGroup()).combined(HookGroup((hook,)))


def combine_all(groups: Iterable[HookGroup | None]) -> HookGroup | None:
    """CombineHooks2/4/8: None without any group, the group itself when there is one."""
    present = [g for g in groups if g is not None]
    if not present:
        return None
    if len(present) == 1:
        return present[0]
    out = present[0].combined(None)
    for group in present[1:]:
        out = out.combined(group)
    return out


# --- weight patches of a hook for one handle --------------------------------------------------------------------

@dataclass(frozen=True, eq=False)
class ModelAsLora:
    """Patch fn: w + (other - base) at full strength, `other` the source handle's weight (its own patches
    in) and `base` the patched handle's unpatched weight (the manager restores it before merging)."""
    source: ModelHandle
    target: ModelHandle
    key: str

    def _difference(self, like: Tensor) -> Tensor:
        other = source_weight(self.source, self.key, target=self.target).to(like.device)
        weights = self.target.shared.weights
        return other - weights.true_value(self.key, weights.home[self.key].to(like.device)).to(torch.float32)

    def add_into(self, weight: Tensor, strength: float) -> None:
        weight.add_(self._difference(weight), alpha=strength)

    def __call__(self, weight: Tensor) -> Tensor:
        return weight + self._difference(weight)


def _model_as_lora_fns(source: ModelHandle, target: ModelHandle) -> dict[str, ModelAsLora]:
    home, other = target.shared.weights.home, source.shared.weights.home
    return {key: ModelAsLora(source, target, key) for key in target.shared.weights.slots
            if key in other and tuple(home[key].shape) == tuple(other[key].shape)
            and home[key].is_floating_point() and not key.endswith((".position_ids", ".logit_scale"))}


def _patch_fns(hook: WeightHook, target: ModelHandle, *, is_clip: bool) -> dict:
    """{weight key: patch fn at full strength} that `hook` has for `target`'s module."""
    if hook.lora is not None:                    # built once per module (the hook's clones share the cache)
        cached = hook.built.get(id(target.module))
        if cached is None or cached[0] is not target.module:
            patches = build_patches(hook.lora, lora_names_for(target.module),
                                    module_weight_shapes(target.module)).patches
            cached = hook.built[id(target.module)] = (target.module, patches)
        return cached[1]
    source = hook.clip_source if is_clip else hook.model_source
    return {} if source is None else _model_as_lora_fns(source, target)


def patched_clone(handle: ModelHandle, hooks: HookGroup, multipliers: Sequence[float], *, is_clip: bool):
    """A clone of `handle` with each hook's patches at its strength times its multiplier, after the handle's
    own patches (hooks with strength 0 add nothing)."""
    twin = handle.clone()
    for hook, multiplier in zip(hooks.hooks, multipliers):
        strength = (hook.strength_clip if is_clip else hook.strength_model) * multiplier
        if strength == 0:
            continue
        fns = _patch_fns(hook, twin, is_clip=is_clip)
        twin.add_patches({k: WeightPatch(fn, strength, hook.source) for k, fn in fns.items()})
    return twin


def model_patches(model: ModelHandle, hooks: HookGroup, multipliers: Sequence[float]):
    """The MODEL clone a batch with `hooks` runs on (see hook_sampling)."""
    return patched_clone(model, hooks, multipliers, is_clip=False)


# --- conditioning ------------------------------------------------------------------------------------------------

def _with(conditioning: Conditioning, values: Mapping[str, Any]) -> Conditioning:
    return [[entry[0], {**entry[1], **values}] for entry in conditioning]


def with_hooks(conditioning: Conditioning, hooks: HookGroup | None, cache: dict | None = None) -> Conditioning:
    """`hooks` on every entry, appended to the group an entry already has (each combination made once)."""
    if hooks is None:
        return conditioning
    cache = {} if cache is None else cache
    out = []
    for entry in conditioning:
        options = dict(entry[1])
        present = options.get("hooks")
        if present is None:
            options["hooks"] = hooks
        else:
            key = (id(present), id(hooks))
            if key not in cache:
                cache[key] = (present.combined(hooks), present, hooks)   # keep both alive: ids stay theirs
            options["hooks"] = cache[key][0]
        out.append([entry[0], options])
    return out


def with_mask(conditioning: Conditioning, mask: Tensor | None, set_cond_area: str, strength: float) -> Conditioning:
    if mask is None:
        return conditioning
    mask = mask.unsqueeze(0) if mask.ndim < 3 else mask
    return _with(conditioning, {"mask": mask, "set_area_to_bounds": set_cond_area != "default",
                                "mask_strength": strength})


def with_timesteps(conditioning: Conditioning, timesteps: tuple[float, float] | None) -> Conditioning:
    if timesteps is None:
        return conditioning
    return _with(conditioning, {"start_percent": timesteps[0], "end_percent": timesteps[1]})


def set_properties(conds: Sequence[Conditioning], strength: float, set_cond_area: str, mask: Tensor | None = None,
                   hooks: HookGroup | None = None, timesteps: tuple[float, float] | None = None) -> list[Conditioning]:
    """(Pair)ConditioningSetProperties: hooks, then mask, then timestep range on each conditioning."""
    cache: dict = {}
    return [with_timesteps(with_mask(with_hooks(c, hooks, cache), mask, set_cond_area, strength), timesteps)
            for c in conds]


def set_properties_and_combine(conds: Sequence[Conditioning], new_conds: Sequence[Conditioning],
                               strength: float = 1.0, set_cond_area: str = "default", mask: Tensor | None = None,
                               hooks: HookGroup | None = None,
                               timesteps: tuple[float, float] | None = None) -> list[Conditioning]:
    """(Pair)ConditioningSetPropertiesAndCombine, PairConditioningCombine: the new entries with the
    properties set, after the existing ones."""
    new = set_properties(new_conds, strength, set_cond_area, mask, hooks, timesteps)
    return [list(c) + list(n) for c, n in zip(conds, new)]


def set_default_and_combine(conds: Sequence[Conditioning], new_conds: Sequence[Conditioning],
                            hooks: HookGroup | None = None) -> list[Conditioning]:
    """(Pair)ConditioningSetDefaultCombine: the new entries marked `default` after the existing ones."""
    cache: dict = {}
    return [list(c) + _with(with_hooks(n, hooks, cache), {"default": True}) for c, n in zip(conds, new_conds)]


def timesteps_ranges(start_percent: float, end_percent: float) -> tuple[tuple[float, float], ...]:
    """ConditioningTimestepsRange: the range, the part before it and the part after it."""
    return (start_percent, end_percent), (0.0, start_percent), (end_percent, 1.0)


# --- the CLIP side -----------------------------------------------------------------------------------------------

@dataclass(frozen=True, eq=False)
class ClipHooks:
    """What SetClipHooks put on a CLIP: the group, whether encoding follows its keyframes, and whether the
    encoded entries carry the group."""
    hooks: HookGroup
    is_scheduled: bool = False
    is_applied_to_conds: bool = True


def set_clip_hooks(clip: Any, hooks: HookGroup | None, apply_to_conds: bool, schedule_clip: bool) -> Any:
    """SetClipHooks: a CLIP clone whose text encoding applies `hooks` (replacing hooks set before)."""
    if hooks is None:
        return clip
    twin = clip.clone()
    twin.options[CLIP_HOOKS_OPTION] = ClipHooks(hooks, schedule_clip, apply_to_conds)
    return twin


def clip_schedule(hooks: HookGroup) -> list[tuple[tuple[float, float], list[float]]]:
    """[((start, end), strength multiplier per hook)]: the progress ranges over which every hook's CLIP
    strength is constant (consecutive keyframes of equal strength merged; ComfyUI's
    get_hooks_for_clip_schedule). A hook without a keyframe in a range counts 1.0."""
    per_hook: list[list[tuple[tuple[float, float], HookKeyframe | None]]] = []
    for hook in hooks.hooks:
        frames = hook.keyframes.keyframes
        if not frames:
            per_hook.append([((0.0, 1.0), None)])
            continue
        ranges, previous = [], frames[0]
        for frame in frames:
            if frame.start_percent > previous.start_percent and not math.isclose(frame.strength, previous.strength):
                ranges.append(((previous.start_percent, frame.start_percent), previous))
                previous = frame
            elif frame.start_percent == previous.start_percent:
                previous = frame
        if not math.isclose(previous.start_percent, 1.0):
            ranges.append(((previous.start_percent, 1.0), previous))
        per_hook.append(ranges)
    bounds = sorted({0.0, *(b for ranges in per_hook for r, _ in ranges for b in r)})
    out = []
    for lo, hi in zip(bounds, bounds[1:]):
        multipliers = []
        for ranges in per_hook:
            frame = next((kf for (a, b), kf in ranges if a < hi and b > lo), None)
            multipliers.append(frame.strength if frame is not None else 1.0)
        out.append(((lo, hi), multipliers))
    return out


def encodes_with_clip_hooks(encode: Callable[..., Conditioning]) -> Callable[..., Conditioning]:
    """Decorator for text-encoding functions `encode(clip, ...) -> CONDITIONING`: with SetClipHooks' hooks on
    the clip, encode with the hooks' CLIP patches (once per keyframe range when scheduled, each range's
    entries limited to it by clip_start_percent / clip_end_percent) and put the group on the entries."""
    @functools.wraps(encode)
    def wrapped(clip: Any, *args: Any, **kwargs: Any) -> Conditioning:
        settings = getattr(clip, "options", {}).get(CLIP_HOOKS_OPTION) if clip is not None else None
        if settings is None:
            return encode(clip, *args, **kwargs)
        hooks = settings.hooks
        plain = clip.clone()
        del plain.options[CLIP_HOOKS_OPTION]
        marks = {"hooks": hooks} if settings.is_applied_to_conds else {}
        if not settings.is_scheduled:
            patched = patched_clone(plain, hooks, [1.0] * len(hooks), is_clip=True)
            return _with(encode(patched, *args, **kwargs), marks)
        out: Conditioning = []
        for (start, end), multipliers in clip_schedule(hooks):
            patched = patched_clone(plain, hooks, multipliers, is_clip=True)
            out += _with(encode(patched, *args, **kwargs),
                         {"clip_start_percent": start, "clip_end_percent": end, **marks})
        return out
    return wrapped


# --- from files (what the Create Hook nodes call) ------------------------------------------------------------------

def lora_hook_from_file(path: Any, strength_model: float, strength_clip: float,
                        previous: HookGroup | None = None) -> HookGroup:
    """CreateHookLora(ModelOnly) on a LoRA file (not read when both strengths are 0)."""
    if strength_model == 0 and strength_clip == 0:
        return previous or HookGroup()
    from models.lora import load_lora_state_dict
    return lora_hook(load_lora_state_dict(path), strength_model, strength_clip, previous, source=path.name)


def model_as_lora_hook_from_file(path: Any, manager: Any, strength_model: float, strength_clip: float,
                                 previous: HookGroup | None = None, embedding_dirs: Sequence = ()) -> HookGroup:
    """CreateHookModelAsLora(ModelOnly) on a checkpoint file (loaded through diffusion.loading; its MODEL and
    CLIP stay registered with the model manager as the hook's sources)."""
    from .loading import load_checkpoint_file
    model, clip, _ = load_checkpoint_file(path, manager, embedding_dirs=embedding_dirs)
    return model_as_lora_hook(model, clip, strength_model, strength_clip, previous, source=path.name)


def float_list(values: Any) -> list[float]:
    """FLOATS: one number or an iterable of numbers (CreateHookKeyframesFromFloats)."""
    if isinstance(values, (int, float)):
        return [float(values)]
    if isinstance(values, Tensor):
        return [float(v) for v in values.reshape(-1)]
    if isinstance(values, Iterable):
        return [float(v) for v in values]
    raise ValueError(f"floats_strength must be a number or a list of numbers, not {type(values).__name__}")
