"""Model and CLIP merges as copy-on-write weight patches: the result is a clone of the first handle whose
weights are combined with the second handle's when the model manager loads it, so no merged copy of the
weights is ever held (the same mechanism as LoRA, model_management.handle).

    merged = merge_weighted(model1, model2, ratio=0.7)            # 0.7 model1 + 0.3 model2
    merged = merge_by_blocks(model1, model2, {"input": 1.0, "middle": 0.5, "out": 0.0})
    merged = merge_add(model1, model2); merged = merge_subtract(model1, model2, multiplier=1.0)

Per key (ComfyUI's ModelMerge* semantics): weighted w = r w1 + (1 - r) w2; add w = w1 + w2; subtract
w = m (w1 - w2). Keys are the module's own state-dict names (the UNet's `input_blocks.4.1...`, MM-DiT's
`joint_blocks.3...`, the text towers' `towers.clip_l.model...`); a key the second model lacks, or has
with another shape, is left as the first model's. The second handle's own patches (its LoRAs) are part of
its weights. CLIP merges skip `position_ids` and `logit_scale`, as ComfyUI does.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import torch
from torch import Tensor

from model_management import ModelHandle, WeightPatch, apply_patches

CLIP_SKIPPED_SUFFIXES = (".position_ids", ".logit_scale")


def source_weight(source: ModelHandle, key: str, *, target: ModelHandle | None = None) -> Tensor:
    """`source`'s weight `key` in fp32 with its own patches merged in, read from its base tensor.

    A base tensor may hold another clone's patches merged in place while its model is loaded: then the
    source model is unloaded first (which rebuilds the base values). When the source shares its module
    with the handle being loaded (`target`), the manager has already restored that key before merging."""
    manager = getattr(source, "manager", None)
    if manager is not None and (target is None or source.shared is not target.shared):
        record = manager.record_of(source)
        if record is not None and key in record.patched_in_place:
            manager.unload(source)
    weights = source.shared.weights
    base = weights.true_value(key, weights.home[key])     # a scaled fp8 weight: times its scale
    patches = source.patches.get(key)
    return apply_patches(base, patches, key, out_dtype=torch.float32) if patches else base.float()


@dataclass(frozen=True, eq=False)
class _FromSource:
    """Patch fn: (w1 fp32) -> w combined with the source's weight (kind: "weight", "add", "subtract")."""
    source: ModelHandle
    target: ModelHandle
    key: str
    kind: str
    multiplier: float = 1.0

    def __call__(self, weight: Tensor) -> Tensor:
        other = source_weight(self.source, self.key, target=self.target).to(weight.device)
        if self.kind == "weight":
            return other                                 # blended by the patch strength: lerp(w1, w2, 1 - r)
        if self.kind == "add":
            return weight + other
        return self.multiplier * (weight - other)


def _shared_keys(first: ModelHandle, second: ModelHandle, skip: tuple[str, ...]) -> list[str]:
    home1, home2 = first.shared.weights.home, second.shared.weights.home
    return [k for k in first.shared.weights.slots
            if k in second.shared.weights.slots and not k.endswith(skip)
            and tuple(home1[k].shape) == tuple(home2[k].shape) and home1[k].is_floating_point()]


def _merge(first: ModelHandle, second: ModelHandle, kind: str, *, ratio_of: Callable[[str], float] | None = None,
           multiplier: float = 1.0, skip: tuple[str, ...] = ()) -> ModelHandle:
    twin = first.clone()
    source = f"merge ({kind}) with {second.name}"
    patches: dict[str, WeightPatch] = {}
    for key in _shared_keys(first, second, skip):
        fn = _FromSource(second, twin, key, kind, multiplier)
        if kind == "weight":
            ratio = ratio_of(key)
            if ratio == 1.0:
                continue                                 # all of model1: nothing to patch
            patches[key] = WeightPatch(fn, 1.0 - ratio, source)
        else:
            patches[key] = WeightPatch(fn, 1.0, source)
    twin.add_patches(patches)
    return twin


def merge_weighted(first: ModelHandle, second: ModelHandle, ratio: float, *, is_clip: bool = False) -> ModelHandle:
    """ModelMergeSimple / CLIPMergeSimple: ratio * first + (1 - ratio) * second."""
    return _merge(first, second, "weight", ratio_of=lambda key: ratio,
                  skip=CLIP_SKIPPED_SUFFIXES if is_clip else ())


def block_ratio(ratios: Mapping[str, float]) -> Callable[[str], float]:
    """Longest matching key prefix picks the ratio; keys no prefix matches take the first ratio."""
    default = next(iter(ratios.values()))

    def ratio_of(key: str) -> float:
        best, length = default, 0
        for prefix, ratio in ratios.items():
            if key.startswith(prefix) and len(prefix) > length:
                best, length = ratio, len(prefix)
        return best
    return ratio_of


def merge_by_blocks(first: ModelHandle, second: ModelHandle, ratios: Mapping[str, float]) -> ModelHandle:
    """ModelMergeBlocks and the per-architecture ModelMergeSD1 / SDXL / SD3_2B / ...: the ratio of each key
    is that of its longest matching prefix (e.g. "input_blocks.4."), weighted as merge_weighted."""
    if not ratios:
        raise ValueError("a block merge needs at least one block ratio")
    return _merge(first, second, "weight", ratio_of=block_ratio(ratios))


def merge_add(first: ModelHandle, second: ModelHandle, *, is_clip: bool = False) -> ModelHandle:
    """ModelMergeAdd / CLIPMergeAdd: first + second."""
    return _merge(first, second, "add", skip=CLIP_SKIPPED_SUFFIXES if is_clip else ())


def merge_subtract(first: ModelHandle, second: ModelHandle, multiplier: float, *, is_clip: bool = False) -> ModelHandle:
    """ModelMergeSubtract / CLIPMergeSubtract: multiplier * (first - second)."""
    return _merge(first, second, "subtract", multiplier=multiplier, skip=CLIP_SKIPPED_SUFFIXES if is_clip else ())
