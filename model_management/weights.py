"""The tensors of one module: their base ("home") copies, their slots, and what is on the device.

A module's weights live in two places. The *home* tensors are the base weights as loaded (on the
CPU, memory-mapped from `.safetensors` where the loader could), and are never written to. What the
module computes with is whatever tensor sits in each parameter/buffer *slot*: the home tensor while
the model is offloaded, a device copy (cast and patched) while it is loaded, or a placeholder while
a streamed module waits for its forward pass. Unloading puts the home tensors back into the slots,
so the base weights are bit-identical after any load/patch/unload cycle without any copy.

A submodule whose class (or the instance itself) sets `CASTS_WEIGHTS_PER_USE = True` casts each weight to its compute dtype when it
uses it (T5-XXL's fp8 weights, models/text/t5.py): its weights go onto the device as stored unless that
would be wider than the compute dtype (`device_dtype`), so a 4.9 GB fp8 T5 is not turned into 9.8 GB of
bf16 (or 19.6 GB of fp32) copies when it is loaded.

:class:`DeviceLedger` counts the bytes Plexus holds on the compute device. On a GPU that is real
memory; on the CPU with `--vram-budget` it is the simulated device, which is how the budget logic
is tested without a GPU.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Protocol

import torch
from torch import Tensor, nn


class DeviceLedger:
    """Bytes on the compute device owned by Plexus's models: resident weights plus streamed ones."""

    def __init__(self) -> None:
        self.bytes = 0
        self.peak_bytes = 0
        self._watchers: list[Callable[[int], None]] = []

    def add(self, nbytes: int) -> None:
        self.bytes += nbytes
        self.peak_bytes = max(self.peak_bytes, self.bytes)
        for watch in list(self._watchers):
            watch(self.bytes)

    def remove(self, nbytes: int) -> None:
        self.bytes -= nbytes
        for watch in list(self._watchers):
            watch(self.bytes)

    def watch(self, callback: Callable[[int], None]) -> Callable[[], None]:
        """Call `callback(bytes_now)` on every change (tests assert the budget there).
        Returns a function that unsubscribes."""
        self._watchers.append(callback)
        return lambda: self._watchers.remove(callback)

    def reset_peak(self) -> None:
        self.peak_bytes = self.bytes


class WeightRebuilder(Protocol):
    """Rebuilds base values of a module's own (converted) weights from where they were loaded, bit for bit
    (models.rebuild.FileRebuilder). Only the `keys` it names may be patched in place."""

    keys: frozenset[str]

    def restore(self, outs: Mapping[str, Tensor]) -> None:
        """Write the base value of each key into its tensor."""


@dataclass(frozen=True)
class Slot:
    owner: nn.Module
    attr: str
    is_parameter: bool


def _element_size(dtype: torch.dtype) -> int:
    return torch.empty((), dtype=dtype).element_size()


def tensor_bytes(t: Tensor) -> int:
    return t.numel() * t.element_size()


class ModuleWeights:
    """Home tensors and slots of one module, keyed by state-dict names ("input_blocks.1.0.weight")."""

    def __init__(self, module: nn.Module) -> None:
        self.module = module
        self.slots: dict[str, Slot] = {}
        self.home: dict[str, Tensor] = {}
        self.aliases: dict[str, str] = {}       # tied weights: second name -> first name
        self.rebuilder: WeightRebuilder | None = None   # set by the loader through ModelManager.register
        self.cast_per_use: set[str] = set()      # keys of CASTS_WEIGHTS_PER_USE submodules
        # (tensors) -> bytes: drops the resident pages of home tensors that view a mapped file (set by the loader)
        self.page_releaser: Callable[[list[Tensor]], int] | None = None
        # stored weight key -> key of the scalar buffer its true value is multiplied by (modules that declare
        # SCALED_WEIGHTS = {weight attr: scale attr}: ComfyUI scaled_fp8 Linears, models/fp8_weights.py)
        self.scales: dict[str, str] = {}
        casting = tuple(name + "." if name else "" for name, m in module.named_modules()
                        if getattr(m, "CASTS_WEIGHTS_PER_USE", False))
        seen: dict[int, str] = {}
        for prefix, owner in module.named_modules(remove_duplicate=False):
            for group, is_param in ((owner._parameters, True), (owner._buffers, False)):
                for attr, tensor in group.items():
                    if tensor is None:
                        continue
                    key = f"{prefix}.{attr}" if prefix else attr
                    if key in self.slots or key in self.aliases:
                        continue
                    if id(tensor) in seen:
                        self.aliases[key] = seen[id(tensor)]
                        continue
                    seen[id(tensor)] = key
                    self.slots[key] = Slot(owner, attr, is_param)
                    self.home[key] = tensor.data if is_param else tensor
                    if casting and key.startswith(casting):
                        self.cast_per_use.add(key)
            for attr, scale_attr in getattr(owner, "SCALED_WEIGHTS", {}).items():
                if getattr(owner, attr, None) is not None and getattr(owner, scale_attr, None) is not None:
                    self.scales[f"{prefix}.{attr}" if prefix else attr] = \
                        f"{prefix}.{scale_attr}" if prefix else scale_attr
        self._scale_keys = frozenset(self.scales.values())

    def keys(self) -> Iterator[str]:
        return iter(self.slots)

    def device_dtype(self, key: str, dtype: torch.dtype | None, patched: bool = False) -> torch.dtype:
        """The dtype of `key` on the device when the model computes in `dtype` (None: as stored): `dtype`
        for floating-point weights, except those cast per use that are stored no wider than it and the
        scales of scaled weights. A `patched` weight cast per use is held in `dtype` (a LoRA on an fp8 T5 is
        not rounded back to fp8), and a patched scaled weight as its true value in `dtype` (float32 when the
        model keeps its stored dtypes)."""
        home = self.home[key]
        if patched and key in self.scales:
            return dtype or torch.float32
        if dtype is None or not home.is_floating_point() or key in self._scale_keys:
            return home.dtype               # scales (SCALED_WEIGHTS) stay as stored: float32 int8 / fp8 scales
        if key in self.cast_per_use and home.element_size() <= _element_size(dtype) and not patched:
            return home.dtype
        return dtype

    def widened_by(self, patched_keys: Iterable[str]) -> frozenset[str]:
        """Those of `patched_keys` that a patch makes wider on the device than as stored (fp8 weights cast
        per use and scaled weights: see `device_dtype`)."""
        return frozenset(k for k in patched_keys if k in self.scales or k in self.cast_per_use)

    def true_value(self, key: str, tensor: Tensor) -> Tensor:
        """`tensor` (the stored value of `key`, on any device) as the value it stands for: a scaled weight
        times its scale, in float32 (what patches must be merged into); any other weight as it is."""
        scale_key = self.scales.get(key)
        if scale_key is None:
            return tensor
        return tensor.float() * self.home[scale_key].to(tensor.device, torch.float32)

    def nbytes(self, key: str, dtype: torch.dtype | None = None, patched: bool = False) -> int:
        return self.home[key].numel() * _element_size(self.device_dtype(key, dtype, patched))

    def total_bytes(self, dtype: torch.dtype | None = None, widened: frozenset[str] = frozenset()) -> int:
        return sum(self.nbytes(k, dtype, k in widened) for k in self.slots)

    def current(self, key: str) -> Tensor:
        slot = self.slots[key]
        tensor = getattr(slot.owner, slot.attr)
        return tensor.data if slot.is_parameter else tensor

    def put(self, key: str, tensor: Tensor) -> None:
        """Place `tensor` in the slot; parameters keep their `nn.Parameter` object."""
        slot = self.slots[key]
        if slot.is_parameter:
            slot.owner._parameters[slot.attr].data = tensor
        else:
            slot.owner._buffers[slot.attr] = tensor

    def put_home(self, key: str) -> None:
        self.put(key, self.home[key])

    def replace_home(self, state: dict[str, Tensor]) -> None:
        """New base tensors (a dropped model reloaded from disk): same keys, shapes and dtypes."""
        missing = [k for k in self.slots if k not in state]
        if missing:
            raise KeyError(f"reloaded weights lack {len(missing)} keys, e.g. {missing[:3]}")
        for key in self.slots:
            new, old = state[key], self.home[key]
            if new.shape != old.shape:
                raise ValueError(f"reloaded weight {key} has shape {tuple(new.shape)}, "
                                 f"expected {tuple(old.shape)}")
            self.home[key] = new
            self.put(key, new)
        self.rebuilder = None                   # new tensors: the loader's rebuilder no longer describes them

    def release_home(self) -> None:
        """Drop every base tensor (RAM eviction): slots hold one-element NaN placeholders until
        `replace_home` (meta tensors cannot take a parameter's place in torch)."""
        for key, home in self.home.items():
            empty = placeholder(home, home.device, None)
            self.home[key] = empty
            self.put(key, empty)
        self.rebuilder = None


def placeholder(home: Tensor, device: torch.device, dtype: torch.dtype | None) -> Tensor:
    """What a streamed weight's slot holds between forward passes: right shape, dtype and device, one
    element of storage, NaN-filled so that a use outside the streaming hooks shows up in the output."""
    target = dtype if (dtype is not None and home.is_floating_point()) else home.dtype
    fill = float("nan") if target.is_floating_point else 0
    return torch.full((), fill, dtype=target, device=device).expand(home.shape)
