"""Put a LoRA file's patches on MODEL / CLIP clones: what the LoraLoader nodes call.

Works on anything that holds `model_management.ModelHandle`s (duck-typed: `.module` and
`.add_patches(patches, strength, source)`), found on the object as itself, `.handle`, `.patcher` or
`.handles` (one per text tower, in order). The object must have `clone()`, which gives a copy whose
handles are clones (patches private to the copy). The base module and its weights are never touched:
the handles merge the patches when the model manager puts the weights on the device.
"""
from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from torch import Tensor

from models.lora.keys import lora_names_for, module_weight_shapes
from models.lora.loader import PatchSet, build_patches, is_text_encoder_key, log_report

log = logging.getLogger("plexus.lora")


def handles_of(obj: Any) -> list[Any]:
    """The ModelHandle(s) inside a MODEL / CLIP object (see the module docstring)."""
    if hasattr(obj, "add_patches") and hasattr(obj, "module"):
        return [obj]
    for attr in ("handle", "patcher"):
        inner = getattr(obj, attr, None)
        if inner is not None and hasattr(inner, "add_patches"):
            return [inner]
    many = getattr(obj, "handles", None)
    if many is not None:
        return list(many)
    raise TypeError(f"{type(obj).__name__} holds no model handle to patch (expected a ModelHandle, or "
                    "an object with .handle / .handles)")


@dataclass
class LoraReport:
    """What one LoRA did: per-part patch sets and the keys that matched nothing anywhere."""

    source: str
    parts: dict[str, PatchSet] = field(default_factory=dict)     # "model", "clip", "clip 2" ...
    unmatched: list[str] = field(default_factory=list)
    skipped_text_encoder: list[str] = field(default_factory=list)   # model-only load: TE keys left alone

    @property
    def patched_weights(self) -> int:
        return sum(len(p.patches) for p in self.parts.values())


def patch_handle(handle: Any, lora: Mapping[str, Tensor], strength: float, source: str, *,
                 text_encoder_index: int | None = None, text_encoder_count: int | None = None) -> PatchSet:
    """Record the patches `lora` has for `handle`'s module on `handle` (call it on a clone).
    Strength 0 records nothing (the output is bit-identical either way)."""
    names = lora_names_for(handle.module, text_encoder_index=text_encoder_index,
                           text_encoder_count=text_encoder_count)
    result = build_patches(lora, names, module_weight_shapes(handle.module))
    if strength != 0 and result.patches:
        handle.add_patches(result.patches, strength, source)
    return result


def apply_lora(model: Any, clip: Any | None, lora: Mapping[str, Tensor], strength_model: float,
               strength_clip: float, source: str) -> tuple[Any, Any | None, LoraReport]:
    """Clones of `model` (and `clip`, if given) with the LoRA's patches at the given strengths.

    Keys that patch neither are logged as a warning by name and listed in the report; with no `clip`
    the text-encoder keys are set aside as intended, not reported as unknown."""
    report = LoraReport(source)
    new_model = model.clone()
    report.parts["model"] = patch_handle(handles_of(new_model)[0], lora, strength_model, source)
    unmatched = set(report.parts["model"].unmatched)
    new_clip = None
    if clip is not None:
        new_clip = clip.clone()
        handles = handles_of(new_clip)
        for i, handle in enumerate(handles):
            part = "clip" if i == 0 else f"clip {i + 1}"
            # one handle over every tower (Plexus's CLIP): towers are numbered as found inside it;
            # one handle per tower: the handle's position is the tower's number
            index, count = (i, len(handles)) if len(handles) > 1 else (None, None)
            report.parts[part] = patch_handle(handle, lora, strength_clip, source, text_encoder_index=index,
                                              text_encoder_count=count)
            unmatched &= set(report.parts[part].unmatched)
    else:
        report.skipped_text_encoder = sorted(k for k in unmatched if is_text_encoder_key(k))
        unmatched -= set(report.skipped_text_encoder)
    report.unmatched = sorted(unmatched)
    for part, patch_set in report.parts.items():
        log_report(patch_set, source, part, unmatched=[])
    if report.unmatched:
        log_report(PatchSet(), source, "model or text encoder", unmatched=report.unmatched)
    if report.skipped_text_encoder:
        log.info("%s: %d text-encoder keys left alone (model-only load)", source, len(report.skipped_text_encoder))
    return new_model, new_clip, report
