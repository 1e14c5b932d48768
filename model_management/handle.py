"""Model handles: lightweight clones over one shared module, each with its own patches and options.

A :class:`ModelHandle` is what nodes pass around as MODEL / CLIP / VAE. Cloning is cheap: the clone
shares the `nn.Module` and its base weights and copies only the patch table and the options. Patches
are recorded, never applied, on the handle; the :class:`~model_management.registry.ModelManager`
applies the patches of the handle being loaded when it puts weights on the compute device (merged in
fp32, then cast back) and takes them off by putting the base tensors back. So two graphs with
different patches on one checkpoint never see each other's patches, and the base weights are
bit-identical afterwards.

A patch is a callable `(weight_fp32) -> patched_weight_fp32` at full strength plus a strength; it is
blended as `lerp(w, fn(w), strength)` (exactly `fn(w)` at 1.0, exactly `w` at 0.0); a patch whose fn also has
`add_into(w_fp32, strength)` (additive formats: w + strength * delta) is applied in place through it,
which saves two passes and two allocations per weight (models/lora). When every patch on a weight
also has `row_adder(like, strength) -> add(rows_fp32, start)` (adds `strength * delta[start:start +
len(rows)]` into a block of rows in place), the weight is merged in row chunks through one small fp32
scratch buffer and cast straight into the output: no full-size fp32 copy of the weight exists at any
time. Several patches on one key apply in the order they were added, each seeing the result of the
previous one. LoRA-style formats build such callables; this module knows nothing about them.

Where the base weights are the model's own converted copies on the compute device (a fp16 file loaded as a
bf16 UNet on the CPU) and the loader says how to rebuild them from the file (a `WeightRebuilder`), the
manager merges patches into them in place (`apply_patches(..., out=weight)`) and rebuilds the base values
when the patches come off, instead of holding a patched copy next to the base.
"""
from __future__ import annotations

import itertools
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from model_management.weights import ModuleWeights

PatchFn = Callable[[Tensor], Tensor]


@dataclass(frozen=True, eq=False)
class WeightPatch:
    fn: PatchFn
    strength: float = 1.0
    source: str = ""          # what it came from ("my_lora.safetensors"), for reports


PatchRows = Callable[[Tensor, int], None]      # (rows_fp32, first_row) -> None: adds delta's rows in place
CHUNK_BYTES = 1 << 20                          # fp32 scratch per row chunk: small enough to stay in cache


def apply_patches(weight: Tensor, patches: tuple[WeightPatch, ...], key: str = "",
                  out_dtype: torch.dtype | None = None, *, out: Tensor | None = None) -> Tensor:
    """Merge `patches` into `weight` in fp32 and cast to `out_dtype` (default: the weight's dtype).
    Writes the result into `out` when given (which may be `weight` itself: merging in place, row block by row
    block where the patches allow it); otherwise never writes to `weight`."""
    out_dtype = out.dtype if out is not None else (out_dtype or weight.dtype)
    if weight.ndim >= 1 and all(getattr(p.fn, "row_adder", None) is not None for p in patches):
        return _apply_by_rows(weight, patches, out_dtype, out=out)
    merged = _merge_whole(weight, patches, key)
    if out is not None:
        return out.copy_(merged)
    return merged.to(out_dtype)


def _merge_whole(weight: Tensor, patches: tuple[WeightPatch, ...], key: str) -> Tensor:
    """The fp32 merge of the whole weight (a new tensor)."""
    w32 = weight.float()
    if w32.data_ptr() == weight.data_ptr():
        w32 = w32.clone()                      # the weight was fp32 already: work on a copy
    for patch in patches:
        add_into = getattr(patch.fn, "add_into", None)
        if add_into is not None:                 # additive patch (LoRA & co): w += strength * delta, in place
            if patch.strength != 0:
                add_into(w32, patch.strength)
            continue
        patched = patch.fn(w32).float()
        if patched.shape != w32.shape:
            raise ValueError(f"patch {patch.source or patch.fn!r} on {key or 'a weight'} returned shape "
                             f"{tuple(patched.shape)} for a weight of shape {tuple(w32.shape)}")
        w32 = torch.lerp(w32, patched, patch.strength)
    return w32


def _apply_by_rows(weight: Tensor, patches: tuple[WeightPatch, ...], out_dtype: torch.dtype,
                   chunk_bytes: int | None = None, out: Tensor | None = None) -> Tensor:
    """`apply_patches` for row-wise additive patches: each block of rows is converted to fp32 in a reused
    scratch buffer, gets every patch's rows added in order, and is cast into the output (preallocated, or
    `out`, which may be `weight`: each block is read before it is written; an fp32 output that is not the
    weight is its own scratch). Same result as merging the whole weight up to fp32 rounding of the matmul;
    bit-identical when every strength is 0."""
    # On the CPU each chunk's ops are too small to gain from a thread team, and on a busy machine every
    # op's barrier can wait a whole time slice for a descheduled worker (measured: 0.7 s single-threaded
    # against 1-9 s with 2 threads at load 3-4 on 2 cores), so the whole merge (the factors' fp32 copies
    # included) runs on the calling thread alone.
    threads = torch.get_num_threads()
    is_single = weight.device.type == "cpu" and threads > 1
    if is_single:
        torch.set_num_threads(1)
    try:
        adders: list[PatchRows] = [p.fn.row_adder(weight, p.strength) for p in patches if p.strength != 0]
        if out is None:
            out = torch.empty(weight.shape, dtype=out_dtype, device=weight.device)
        elif not adders:
            return out if out is weight else out.copy_(weight)
        rows = weight.shape[0]
        row_numel = weight[0].numel() if rows else 1
        step = max(1, (chunk_bytes or CHUNK_BYTES) // (4 * max(1, row_numel)))      # rows per chunk
        is_direct = out_dtype == torch.float32 and out is not weight
        scratch = None if is_direct else torch.empty((min(step, rows), *weight.shape[1:]), dtype=torch.float32,
                                                     device=weight.device)
        for start in range(0, rows, step):
            stop = min(start + step, rows)
            block = out[start:stop] if is_direct else scratch[:stop - start]   # [n, ...] fp32
            block.copy_(weight[start:stop])
            for add in adders:
                add(block, start)
            if not is_direct:
                out[start:stop].copy_(block)
        return out
    finally:
        if is_single:
            torch.set_num_threads(threads)


class SharedModule:
    """The part every clone shares: the module, its base weights and its offload units' names."""

    _ids = itertools.count(1)

    def __init__(self, module: nn.Module) -> None:
        self.module = module
        self.weights = ModuleWeights(module)
        self.offload_blocks: tuple[str, ...] = tuple(getattr(type(module), "OFFLOAD_BLOCKS", ()))
        self.id = next(self._ids)
        # (manager, callback) of the manager whose weights sit in the slots now; a second manager in the
        # process (tests build many) calls it to take them back to the base weights before placing its own
        self.placed_by: tuple[object, Callable[[], None]] | None = None

    @classmethod
    def of(cls, module: nn.Module) -> SharedModule:
        """The one shared state of `module` (created on first use, so all handles agree)."""
        shared = module.__dict__.get("_plexus_shared")
        if shared is None:
            shared = cls(module)
            module.__dict__["_plexus_shared"] = shared
        return shared


class ModelHandle:
    """A module plus the patches and options one graph wants on it."""

    def __init__(self, module: nn.Module, *, name: str = "", source_key: str | None = None,
                 options: Mapping[str, Any] | None = None) -> None:
        self.shared = SharedModule.of(module)
        self.name = name or type(module).__name__
        self.source_key = source_key            # what it was loaded from: "checkpoints/sd15.safetensors#unet"
        self.patches: dict[str, tuple[WeightPatch, ...]] = {}
        self.options: dict[str, Any] = dict(options or {})

    @property
    def module(self) -> nn.Module:
        return self.shared.module

    def clone(self) -> ModelHandle:
        twin = ModelHandle.__new__(ModelHandle)
        twin.shared, twin.name, twin.source_key = self.shared, self.name, self.source_key
        twin.patches = dict(self.patches)       # tuples inside are immutable: sharing them is safe
        twin.options = dict(self.options)
        return twin

    def add_patches(self, patches: Mapping[str, PatchFn | WeightPatch], strength: float = 1.0,
                    source: str = "") -> list[str]:
        """Record patches on this handle (call it on a clone). Returns the keys that exist in the model;
        keys the model lacks are skipped, as a LoRA for another architecture would be."""
        added = []
        for key, patch in patches.items():
            if key not in self.shared.weights.slots:
                continue
            if not isinstance(patch, WeightPatch):
                patch = WeightPatch(patch, strength, source)
            self.patches[key] = self.patches.get(key, ()) + (patch,)
            added.append(key)
        return added

    def patched_keys(self) -> set[str]:
        return set(self.patches)

    def is_clone_of(self, other: ModelHandle) -> bool:
        return self.shared is other.shared

    def __repr__(self) -> str:
        return f"ModelHandle({self.name!r}, {len(self.patches)} patched weights)"
