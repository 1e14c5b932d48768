"""The diffusion model's weights during one sampling attempt, switched to the hook group of each batch.

    weights = SamplingWeights(model, unet, groups=hook_groups(positive, negative), load=...)
    with weights:                                   # (un)packs convolutions around the run (prepacking)
        ... model function: weights.activate(inputs.get("hooks"), sigma) before each forward ...

A conditioning entry's `"hooks"` (a diffusion.hooks.HookGroup) reaches sampling.guidance as the opaque
`Cond.hooks`: entries batch only with entries of the same group, and the batch's group comes to the model
function as `inputs["hooks"]`. Before each forward, :meth:`SamplingWeights.activate` advances the keyframe
cursors of the group's hooks to this sigma, and when the group or one of its strengths differs from what the
weights hold, asks the model manager to load a MODEL clone that carries the group's patches at those strengths
after the model's own (`hooks.model_patches`). The manager re-patches only the weights whose patches changed
and restores the others (copy-on-write LoRA patching, model_management.handle), so a batch without hooks runs
on the model's own weights, and the model is clean for the next graph. Clones are kept per (group,
strengths), so their WeightPatch objects are the same each time a set comes back (nothing moves then).

Costs: positive and negative with different groups re-patch the hooks' weights twice per step (ComfyUI does
the same, or caches patched copies when memory allows). Convolutions are prepacked for the run
(diffusion.prepacking) only when at most one hook group is in play (each switch unpacks and repacks them), and
not when the model computes in another dtype (ModelComputeDtype: a packed weight cannot be cast per call).
"""
from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import torch
from torch import Tensor

from . import hooks as hook_values
from .prepacking import prepacked_for_sampling

COMPUTE_DTYPE_OPTION = "compute_dtype"     # DiffusionModel option set by ModelComputeDtype (diffusion.compute_dtype)


def hook_groups(*cond_lists: Sequence | None) -> list:
    """The distinct hook groups (None for entries without hooks) of these sampling.guidance Cond lists."""
    groups: list = []
    for conds in cond_lists:
        for cond in conds or ():
            group = getattr(cond, "hooks", None)
            if not any(group is g for g in groups):
                groups.append(group)
    return groups


class SamplingWeights:
    """See the module docstring. `load(handle)` puts a clone's weights on the device (the manager's
    load_models_for with the attempt's working memory and vram mode)."""

    def __init__(self, model: Any, unet: Any, *, groups: Iterable, load: Callable[[Any], Any]) -> None:
        self.model, self.unet, self.load = model, unet, load
        groups = list(groups)
        self.is_prepacking = len(groups) <= 1 and model.options.get(COMPUTE_DTYPE_OPTION) is None
        self.max_sigma: float | None = None
        self.cursors: dict[int, hook_values.KeyframeCursor] = {}
        self.clones: dict[tuple, Any] = {}
        self.current: tuple = (None,)               # what the weights hold: (group id, strengths) or (None,)
        self._stack = contextlib.ExitStack()

    def __enter__(self) -> SamplingWeights:
        self._pack()
        return self

    def __exit__(self, *exc) -> None:
        self._stack.close()

    def _pack(self) -> None:
        if self.is_prepacking:
            self._stack.enter_context(prepacked_for_sampling(self.model, self.unet))

    def set_sample_sigmas(self, sigmas: Tensor) -> None:
        """The sigmas the sampler walks (ComfyUI's sample_sigmas): keyframes that start before the largest
        guarantee no steps."""
        self.max_sigma = float(sigmas.max()) if len(sigmas) else 0.0

    def _cursor(self, keyframes: hook_values.HookKeyframes, sigma: float) -> hook_values.KeyframeCursor:
        cursor = self.cursors.get(id(keyframes))
        if cursor is None or cursor.frames is not keyframes.keyframes:
            max_sigma = self.max_sigma if self.max_sigma is not None else sigma
            cursor = hook_values.KeyframeCursor(keyframes, self.model.model_sampling.percent_to_sigma, max_sigma)
            self.cursors[id(keyframes)] = cursor
        return cursor

    def activate(self, group: hook_values.HookGroup | None, sigma: Tensor | float) -> None:
        """Make the weights those of `group` at this sigma (called before each forward)."""
        if group is None or not len(group):
            wanted, handle = (None,), None
        else:
            s = float(sigma.reshape(-1)[0]) if isinstance(sigma, Tensor) else float(sigma)
            multipliers = tuple(self._cursor(h.keyframes, s).strength_at(s) for h in group.hooks)
            wanted = (id(group), multipliers)
            handle = self.clones.get(wanted)
            if handle is None:
                handle = self.clones[wanted] = hook_values.model_patches(self.model, group, multipliers)
                handle.hook_group = group                       # keeps the group (and its id) alive
        if wanted == self.current:
            return
        self._stack.close()                                     # packed convolutions back to plain weights
        with torch.inference_mode(False):                       # patched weights stay normal tensors
            self.load(self.model if handle is None else handle)
        self.current = wanted
        self._pack()
