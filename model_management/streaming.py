"""Partial loading: whole modules resident up to a budget, the rest streamed in for their forward pass.

A model is cut into *offload units*. The blocks named by the model class's `OFFLOAD_BLOCKS`
attribute (e.g. `("input_blocks", "middle_block", "output_blocks")`) give one unit per child block;
every other module that owns weights directly is a unit of its own (its direct weights only). When a
budget cannot hold the largest block and the model class sets `OFFLOAD_LAYERS = True` (its layers'
weights are read only inside the layers' own forward, where the hooks see them), the registry cuts
again at layer granularity (`max_unit_bytes`): the blocks too large to stream whole become one unit per
layer.
:func:`plan_load` keeps units resident, in module order, while they fit the budget less room for
the largest streamed unit (twice that with prefetch). A :class:`Streamer` installs forward hooks on
the streamed units: the pre-hook puts the unit's weights on the device (cast and patched, through the
`fetch` callable the registry gives it) and the post-hook puts placeholders back, so at every moment
resident + in-flight bytes stay under the budget.

On CUDA the copies are issued on a side stream from page-locked host memory with `non_blocking`,
one unit ahead of the compute stream (prefetch), and the compute stream waits on an event before
using them. Elsewhere the copies are synchronous.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from model_management.weights import DeviceLedger, ModuleWeights, placeholder

Fetch = Callable[[str, bool], Tensor]      # (key, non_blocking) -> the weight on the compute device


@dataclass(frozen=True)
class OffloadUnit:
    name: str                  # module path; "" is the root module
    module: nn.Module
    keys: tuple[str, ...]
    nbytes: int
    is_container: bool = False  # its module encloses other units: streamed, it stays in through theirs


@dataclass(frozen=True)
class LoadPlan:
    resident: tuple[OffloadUnit, ...]
    streamed: tuple[OffloadUnit, ...]
    stream_reserve_bytes: int = 0      # device room kept for streamed units in flight

    @property
    def is_full(self) -> bool:
        return not self.streamed

    @property
    def resident_bytes(self) -> int:
        return sum(u.nbytes for u in self.resident)

    @property
    def peak_bytes(self) -> int:
        return self.resident_bytes + self.stream_reserve_bytes


def offload_units(module: nn.Module, weights: ModuleWeights, block_names: tuple[str, ...],
                  dtype: torch.dtype | None = None, max_unit_bytes: int | None = None,
                  widened: frozenset[str] = frozenset()) -> list[OffloadUnit]:
    """Cut `module` into units, in the order its weights were registered (about forward order). `widened`:
    keys that patches make wider on the device than stored (ModuleWeights.device_dtype); sized so.

    `max_unit_bytes`: a block larger than this is not one unit but one unit per layer inside it (per
    module that owns weights directly), so a budget that holds the largest single layer can stream it."""
    blocks: dict[str, nn.Module] = {}
    for name in block_names:
        block = module.get_submodule(name)
        children = list(block.named_children()) if isinstance(block, (nn.ModuleList, nn.Sequential)) else []
        for child_name, child in children or [("", block)]:
            blocks[f"{name}.{child_name}" if child_name else name] = child
    if max_unit_bytes is not None:
        size: dict[str, int] = {}
        for key in weights.keys():
            block_name = next((b for b in blocks if key.startswith(b + ".")), None)
            if block_name is not None:
                size[block_name] = size.get(block_name, 0) + weights.nbytes(key, dtype, key in widened)
        blocks = {b: m for b, m in blocks.items() if size.get(b, 0) <= max_unit_bytes}

    keys_of: dict[str, list[str]] = {}
    for key in weights.keys():
        owner_path = key.rpartition(".")[0]
        unit_name = next((b for b in blocks if key.startswith(b + ".")), None)
        keys_of.setdefault(unit_name if unit_name is not None else "\0" + owner_path, []).append(key)

    names = [unit_id.removeprefix("\0") for unit_id in keys_of]
    units = []
    for unit_id, keys in keys_of.items():
        name = unit_id.removeprefix("\0")
        owner = blocks[unit_id] if unit_id in blocks else (module.get_submodule(name) if name else module)
        is_container = any(other != name and (name == "" or other.startswith(name + ".")) for other in names)
        units.append(OffloadUnit(name, owner, tuple(keys), sum(weights.nbytes(k, dtype, k in widened) for k in keys),
                                 is_container))
    return units


class BudgetTooSmall(torch.OutOfMemoryError):
    """Not even one streamed unit fits next to the working memory: an OOM the fall-back chain sees."""


def plan_load(units: list[OffloadUnit], weight_budget_bytes: int | None, *, prefetch: bool = False,
              max_resident_bytes: int | None = None) -> LoadPlan:
    """Which units stay resident for a budget (None = no limit). `max_resident_bytes=0` streams everything."""
    total = sum(u.nbytes for u in units)
    cap = max_resident_bytes if max_resident_bytes is not None else total
    if (weight_budget_bytes is None or total <= weight_budget_bytes) and total <= cap:
        return LoadPlan(tuple(units), ())
    budget = weight_budget_bytes if weight_budget_bytes is not None else total
    # In flight at once: every enclosing unit (held through the units inside it) plus one leaf unit,
    # or two with prefetch. Reserving room for all of them bounds the peak whatever ends up streamed.
    largest = max((u.nbytes for u in units if not u.is_container), default=0)
    reserve = sum(u.nbytes for u in units if u.is_container) + largest * (2 if prefetch else 1)
    if budget < reserve:
        raise BudgetTooSmall(
            f"streaming needs {reserve / 2**20:.2f} MiB on the device (the largest module "
            f"{largest / 2**20:.2f} MiB{', twice with prefetch' if prefetch else ''}, "
            "plus enclosing modules) "
            f"but only {max(budget, 0) / 2**20:.2f} MiB is left after the working memory")
    room = min(budget - reserve, cap)
    resident, streamed = [], []
    for unit in units:
        if unit.nbytes <= room:
            resident.append(unit)
            room -= unit.nbytes
        else:
            streamed.append(unit)
    return LoadPlan(tuple(resident), tuple(streamed), reserve if streamed else 0)


@dataclass
class _InFlight:
    tensors: dict[str, Tensor]
    event: object | None = None        # torch.cuda.Event on CUDA
    users: int = 0
    is_placed: bool = False            # its tensors sit in the module's slots


@dataclass
class Streamer:
    """Forward hooks that stream the weights of `units` onto `device` around each unit's forward."""

    weights: ModuleWeights
    units: tuple[OffloadUnit, ...]
    device: torch.device
    dtype: torch.dtype | None
    ledger: DeviceLedger
    fetch: Fetch
    is_async: bool = False             # CUDA: side stream + prefetch of the next unit
    _hooks: list = field(default_factory=list)
    _live: dict[str, _InFlight] = field(default_factory=dict)
    _order: dict[str, int] = field(default_factory=dict)
    _copy_stream: object | None = None

    def install(self) -> None:
        self._order = {u.name: i for i, u in enumerate(self.units)}
        for unit in self.units:
            for key in unit.keys:
                self.weights.put(key, placeholder(self.weights.home[key], self.device,
                                                  self.weights.device_dtype(key, self.dtype)))
            self._hooks.append(unit.module.register_forward_pre_hook(self._make_pre(unit)))
            self._hooks.append(unit.module.register_forward_hook(self._make_post(unit), always_call=True))
        if self.is_async:
            self._copy_stream = torch.cuda.Stream(self.device)

    def remove(self) -> None:
        """Take the hooks off and give back whatever is still in flight (the caller re-places the slots)."""
        for hook in self._hooks:
            hook.remove()
        self._hooks.clear()
        for name in list(self._live):
            self._release(self.units[self._order[name]])

    def _make_pre(self, unit: OffloadUnit):
        def pre_hook(module, args):
            self._acquire(unit)
            if self.is_async and not any(live.users == 0 for live in self._live.values()):
                # one prefetch at a time: an unused one (forward order differs from module order)
                # must be consumed first, so at most two leaf units are ever in flight
                nxt = self._order[unit.name] + 1
                if nxt < len(self.units) and self.units[nxt].name not in self._live:
                    self._start_copy(self.units[nxt])
        return pre_hook

    def _make_post(self, unit: OffloadUnit):
        def post_hook(module, args, output):
            live = self._live.get(unit.name)
            if live is not None:
                live.users -= 1
                if live.users <= 0:
                    self._release(unit)
        return post_hook

    def _start_copy(self, unit: OffloadUnit) -> _InFlight:
        if self._copy_stream is not None:
            # patches may read tensors the compute stream produced: start after what is queued there
            self._copy_stream.wait_stream(torch.cuda.current_stream(self.device))
            with torch.cuda.stream(self._copy_stream):
                tensors = {k: self.fetch(k, True) for k in unit.keys}
                event = torch.cuda.Event()
                event.record(self._copy_stream)
            live = _InFlight(tensors, event)
        else:
            live = _InFlight({k: self.fetch(k, False) for k in unit.keys})
        self._live[unit.name] = live
        self.ledger.add(unit.nbytes)           # after the copy: a failed one (OOM) leaves no count behind
        return live

    def _acquire(self, unit: OffloadUnit) -> None:
        live = self._live.get(unit.name) or self._start_copy(unit)
        if live.users == 0:
            if live.event is not None:
                compute = torch.cuda.current_stream(self.device)
                compute.wait_event(live.event)
                for tensor in live.tensors.values():
                    tensor.record_stream(compute)   # the allocator must not reuse it before compute is done
            for key, tensor in live.tensors.items():
                self.weights.put(key, tensor)
            live.is_placed = True
        live.users += 1

    def _release(self, unit: OffloadUnit) -> None:
        live = self._live.pop(unit.name)
        if live.is_placed:
            for key in unit.keys:
                self.weights.put(key, placeholder(self.weights.home[key], self.device,
                                                  self.weights.device_dtype(key, self.dtype)))
        self.ledger.remove(unit.nbytes)


# --- page-locked host memory (CUDA) --------------------------------------------------------------

def pin_in_place(tensors: list[Tensor], pinned: set[int]) -> int:
    """Page-lock the host storages of `tensors` without copying them (cudaHostRegister), so that
    streamed copies can be asynchronous; a storage that cannot be registered (e.g. a read-only file
    mapping on an old driver) stays pageable and its copies are synchronous. Returns bytes pinned."""
    cudart = torch.cuda.cudart()
    done = 0
    for tensor in tensors:
        storage = tensor.untyped_storage()
        ptr, size = storage.data_ptr(), storage.nbytes()
        if ptr in pinned or size == 0 or tensor.device.type != "cpu" or tensor.is_pinned():
            continue
        for flags in (0, 8):                      # 8 = cudaHostRegisterReadOnly (mapped files)
            if int(cudart.cudaHostRegister(ptr, size, flags)) == 0:
                pinned.add(ptr)
                done += size
                break
    return done


def unpin(pinned: set[int]) -> None:
    cudart = torch.cuda.cudart()
    for ptr in pinned:
        cudart.cudaHostUnregister(ptr)
    pinned.clear()
