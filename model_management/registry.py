"""The registry of loaded models: what lives where, and the decisions that move it.

One :class:`ModelManager` per process (main.py builds it from the settings and hands it to the
nodes). It keeps one record per shared module (handles that are clones share a record) and makes
three decisions:

1. *Device.* Before a call, :meth:`ModelManager.load_models_for` evicts the least recently used
   models the running graph does not need until the needed ones plus the call's working memory fit,
   then loads each needed model fully if it fits, else partially (lowvram: some units resident,
   the rest streamed per forward) or fully streamed (novram). Patches of the handle being loaded are
   applied as its weights reach the device.
2. *RAM.* Models off the device stay in RAM up to the RAM budget (`--ram-budget`, default a share of
   total RAM), so switching between a few checkpoints does not reload them from disk; beyond it the
   least recently used are dropped (their tensors released; a `reload` callable brings them back).
3. *Reports.* :meth:`report` says what is loaded where and why (`/system_stats`), :meth:`resident`
   lists it for routing prompts to the worker that already holds a checkpoint.

"The device" is bytes counted in a :class:`DeviceLedger`: real on a GPU, simulated on the CPU with
`--vram-budget`, with identical logic. Thread-safe: the server's `/free` may run while a prompt runs.
"""
from __future__ import annotations

import contextlib
import enum
import itertools
import logging
import threading
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from model_management import devices
from model_management.devices import DeviceMemory
from model_management.dtypes import DtypeChoice, ModelPart, choose_dtypes, describe_dtypes
from model_management.handle import ModelHandle, SharedModule, apply_patches
from model_management.settings import MemorySettings, VramMode
from model_management.streaming import (
    BudgetTooSmall,
    LoadPlan,
    OffloadUnit,
    Streamer,
    offload_units,
    pin_in_place,
    plan_load,
    unpin,
)
from model_management.weights import DeviceLedger, WeightRebuilder

log = logging.getLogger("plexus.memory")
MIB = 1024 ** 2


def _size(nbytes: int | None) -> str:
    """2.0 GiB, 310 MiB, 22 KiB: for the "why" lines of reports."""
    value = float(max(nbytes or 0, 0))
    for unit in ("B", "KiB", "MiB"):
        if value < 1024:
            return f"{value:.0f} {unit}"
        value /= 1024
    return f"{value:.1f} GiB"


class Placement(enum.Enum):
    RAM = "ram"              # base weights in RAM, nothing on the device
    FULL = "full"            # every weight on the device
    PARTIAL = "partial"      # some units resident, the others streamed per forward
    DROPPED = "dropped"      # released from RAM (RAM budget); reloadable if it has a `reload`


class ModelDroppedError(RuntimeError):
    """A handle whose weights were released by the RAM budget and that has no way to reload them."""

    type = "model_dropped"


@dataclass
class ModelRecord:
    shared: SharedModule
    name: str
    source_key: str | None
    dtype: torch.dtype | None                      # dtype on the compute device; None = as loaded
    reload: Callable[[], Mapping[str, Tensor]] | None
    placement: Placement = Placement.RAM
    last_used: int = 0
    why: str = "registered"
    units: list[OffloadUnit] = field(default_factory=list)
    layer_units: tuple[int, list[OffloadUnit]] = (-1, [])    # (size limit, units cut at layers above it)
    # keys that the current handle's patches make wider on the device than stored (ModuleWeights.widened_by);
    # the units' sizes count them so
    units_widened: frozenset[str] = frozenset()
    resident_keys: set[str] = field(default_factory=set)
    applied: dict[str, tuple] = field(default_factory=dict)     # patches merged into resident weights
    active_patches: dict[str, tuple] = field(default_factory=dict)
    streamer: Streamer | None = None
    pinned: set[int] = field(default_factory=set)
    patched_in_place: set[str] = field(default_factory=set)    # base tensors that hold merged patches now
    pages_released: bool = False                   # its file-view pages were dropped since its last use

    @property
    def weights(self):
        return self.shared.weights

    @property
    def device_bytes(self) -> int:
        """Bytes of the whole model on the device (its size in the compute dtype, patched weights as held)."""
        return self.weights.total_bytes(self.dtype, self.units_widened)

    def widen_for(self, handle: ModelHandle) -> None:
        """Size the units for `handle`'s patches (a patched fp8 weight is held wider: see `units_widened`)."""
        widened = self.weights.widened_by(k for k, patches in handle.patches.items() if patches)
        if widened != self.units_widened:
            self.units_widened = widened
            self.units = []
            self.layer_units = (-1, [])

    def ram_split(self, is_file_view: Callable[[Tensor], bool]) -> tuple[int, int]:
        """(bytes of its own, bytes that view a mapped file) of its base tensors in RAM. A view of a mapped
        model file holds no memory of its own: its pages are the file's, in the page cache, dropped and read
        back by the kernel as needed, so only the rest counts against the RAM budget. A dropped model holds
        neither."""
        if self.placement is Placement.DROPPED:
            return 0, 0
        own = views = 0
        for tensor in self.weights.home.values():
            nbytes = tensor.numel() * tensor.element_size()
            if is_file_view(tensor):
                views += nbytes
            else:
                own += nbytes
        return own, views

    @property
    def resident_bytes(self) -> int:
        return sum(self.weights.nbytes(k, self.dtype, bool(self.applied.get(k))) for k in self.resident_keys)

    @property
    def is_on_device(self) -> bool:
        return self.placement in (Placement.FULL, Placement.PARTIAL)


def no_file_views() -> Callable[[Tensor], bool]:
    return lambda tensor: False


class ModelManager:
    def __init__(self, settings: MemorySettings, *, device: torch.device | None = None,
                 memory_probe: Callable[[torch.device], DeviceMemory] = devices.device_memory,
                 ram_probe: Callable[[], DeviceMemory] = devices.ram_memory,
                 file_views: Callable[[], Callable[[Tensor], bool]] = no_file_views) -> None:
        """`file_views`: makes the test of whether a tensor views a model file the process has mapped now
        (models.files.file_view_test; the loaders' layer owns the mappings); such base tensors are counted as
        file pages, not against the RAM budget. The default knows none: everything counts."""
        self.settings = settings
        self._device = device
        self._memory_probe = memory_probe
        self._ram_probe = ram_probe
        self._file_views = file_views
        self.ledger = DeviceLedger()
        self._records: dict[int, ModelRecord] = {}
        self._clock = itertools.count(1)
        self._graph_needs: Counter[int] = Counter()
        self._lock = threading.RLock()
        self._dtype_choices: dict[ModelPart, DtypeChoice] | None = None

    # --- the device and its budget ------------------------------------------------------------

    @property
    def device(self) -> torch.device:
        """The compute device, found on first use (never at import or construction)."""
        if self._device is None:
            self._device = devices.pick_compute_device(self.settings)
        return self._device

    @property
    def vram_mode(self) -> VramMode:
        """The effective mode: CPU without a budget loads everything as is; a budget on the CPU
        simulates a card of that size in the chosen mode (normal for `--cpu`)."""
        mode = self.settings.vram_mode
        if self.device.type == "cpu" and self.settings.vram_budget_bytes is None:
            return VramMode.CPU
        return VramMode.NORMAL if mode is VramMode.CPU else mode

    def reserve_bytes(self) -> int:
        reserve = self.settings.reserve_vram_bytes
        return devices.default_reserve_bytes(self.device) if reserve is None else reserve

    def device_available_bytes(self) -> int | None:
        """Bytes Plexus may still put on the device; None = no limit (the CPU without --vram-budget)."""
        limits = []
        if self.settings.vram_budget_bytes is not None:
            limits.append(self.settings.vram_budget_bytes - self.ledger.bytes)
        if self.device.type != "cpu":
            limits.append(self._memory_probe(self.device).free_bytes - self.reserve_bytes())
        return min(limits) if limits else None

    def ram_budget_bytes(self) -> int:
        if self.settings.ram_budget_bytes is not None:
            return self.settings.ram_budget_bytes
        return int(self._ram_probe().total_bytes * self.settings.ram_budget_share)

    def dtype_choices(self) -> dict[ModelPart, DtypeChoice]:
        if self._dtype_choices is None:
            self._dtype_choices = choose_dtypes(devices.device_caps(self.device), self.settings)
        return self._dtype_choices

    # --- registration ---------------------------------------------------------------------------

    def register(self, handle: ModelHandle, *, dtype: torch.dtype | None = None,
                 reload: Callable[[], Mapping[str, Tensor]] | None = None,
                 rebuilder: WeightRebuilder | None = None,
                 page_releaser: Callable[[list[Tensor]], int] | None = None) -> ModelHandle:
        """Track `handle`'s module (once per shared module). `dtype`: its dtype on the compute device;
        `reload`: returns its base state dict again (from disk) after a RAM-budget drop; `rebuilder`:
        rebuilds the base values of the weights the module owns, which lets patches merge into them in
        place on the device they live on (no patched copy beside the base); `page_releaser`: drops the
        resident pages of its weights that view a mapped file (see `_release_idle_pages`)."""
        with self._lock:
            if rebuilder is not None:
                handle.shared.weights.rebuilder = rebuilder
            if page_releaser is not None:
                handle.shared.weights.page_releaser = page_releaser
            self._track(handle, dtype, reload)
            self._enforce_ram_budget(keep={handle.shared.id} | set(self._graph_needs))
            return handle

    def _track(self, handle: ModelHandle, dtype: torch.dtype | None = None,
               reload: Callable[[], Mapping[str, Tensor]] | None = None) -> ModelRecord:
        record = self._records.get(handle.shared.id)
        if record is None:
            if handle.shared.__dict__.get("is_dropped"):
                raise ModelDroppedError(f"{handle.name} was dropped from RAM by the RAM budget and cannot be "
                                        "reloaded; load its checkpoint again")
            record = ModelRecord(handle.shared, handle.name, handle.source_key, dtype, reload)
            record.last_used = next(self._clock)
            self._records[handle.shared.id] = record
        else:
            record.dtype = dtype if dtype is not None else record.dtype
            record.reload = reload or record.reload
        return record

    def find(self, source_key: str) -> ModelHandle | None:
        """A fresh handle (no patches) over a model still held for `source_key`, so a loader can skip
        the disk; None if it is not held (or was dropped without a way to reload)."""
        with self._lock:
            for record in self._records.values():
                if record.source_key == source_key:
                    record.last_used = next(self._clock)
                    return ModelHandle(record.shared.module, name=record.name, source_key=source_key)
            return None

    def record_of(self, handle: ModelHandle) -> ModelRecord | None:
        return self._records.get(handle.shared.id)

    @contextlib.contextmanager
    def graph_needs(self, handles: Iterable[ModelHandle]) -> Iterator[None]:
        """While a graph runs, the models it will still use are never evicted for other models."""
        ids = [h.shared.id for h in handles]
        with self._lock:
            self._graph_needs.update(ids)
        try:
            yield
        finally:
            with self._lock:
                self._graph_needs.subtract(ids)
                self._graph_needs += Counter()          # drop zero counts

    # --- loading --------------------------------------------------------------------------------

    def load_models_for(self, handles: Sequence[ModelHandle], working_memory_bytes: int = 0, *,
                        keep: Iterable[ModelHandle] = (), vram_mode: VramMode | None = None,
                        ) -> list[ModelRecord]:
        """Make `handles` ready to compute on the device with `working_memory_bytes` to spare.

        Evicts least recently used models not in `handles`, `keep` or the running graph's needs;
        then loads each handle fully if it fits, else partially (`vram_mode` overrides the setting,
        as the OOM fall-back chain does). Raises `torch.OutOfMemoryError` when not even streaming fits."""
        with self._lock:
            mode = vram_mode or self.vram_mode
            records = []
            for handle in handles:
                record = self._track(handle)
                record.last_used = next(self._clock)
                record.widen_for(handle)
                records.append(record)
            needed = {r.shared.id for r in records} | {h.shared.id for h in keep} | set(self._graph_needs)
            self._release_idle_pages({r.shared.id for r in records} | {h.shared.id for h in keep})
            for record in records:
                if record.placement is Placement.DROPPED:
                    self._reload(record)
            self._enforce_ram_budget(keep=needed)

            if mode in (VramMode.LOW, VramMode.NO):
                for other in self._lru_on_device(exclude=needed):
                    self._unload(other, why=f"evicted: --{mode.value} keeps only the current call's models")
            if mode is VramMode.NO:
                missing = working_memory_bytes
            else:
                missing = working_memory_bytes + sum(r.device_bytes - r.resident_bytes for r in records)
            self.free_device_bytes(missing, keep=needed)

            for handle, record in zip(handles, records):
                self._place(record, handle, working_memory_bytes, mode)
            return records

    def _release_idle_pages(self, calling: set[int]) -> None:
        """On the CPU a model computes with its home tensors, and those that view a mapped file (T5-XXL's fp8
        weights, kept as stored) stay in the resident set once read. While other models compute, the pages of
        a model not in this call are dropped (the next use faults them back in from the page cache), so an
        SD3 prompt's 4.4 GiB of T5 pages do not sit beside the diffusion model during sampling."""
        if self.device.type != "cpu":
            return
        for record in self._records.values():
            if record.shared.id in calling:
                record.pages_released = False
            elif not record.pages_released and record.placement is not Placement.DROPPED:
                releaser = record.weights.page_releaser
                if releaser is not None:
                    freed = releaser(list(record.weights.home.values()))
                    if freed:
                        log.info("%s: %s of file pages released while other models compute",
                                 record.name, _size(freed))
                record.pages_released = True

    def free_device_bytes(self, nbytes: int, *, keep: Iterable[int] = ()) -> int:
        """Unload least recently used models (not in `keep`, shared ids) until `nbytes` are available."""
        freed = 0
        keep = set(keep) | set(self._graph_needs)
        for record in self._lru_on_device(exclude=keep):
            available = self.device_available_bytes()
            if available is None or available >= nbytes:
                break
            freed += record.resident_bytes
            self._unload(record, why=f"evicted (least recently used) to free {_size(nbytes)}")
        if freed:
            devices.empty_cache(self.device)
        return freed

    def _lru_on_device(self, exclude: set[int]) -> list[ModelRecord]:
        return sorted((r for r in self._records.values() if r.is_on_device and r.shared.id not in exclude),
                      key=lambda r: r.last_used)

    def _place(self, record: ModelRecord, handle: ModelHandle, working_memory_bytes: int,
               mode: VramMode) -> None:
        if not record.units:
            record.units = offload_units(record.shared.module, record.weights, record.shared.offload_blocks,
                                         record.dtype, widened=record.units_widened)
        available = self.device_available_bytes()
        weight_budget = None
        if available is not None:
            weight_budget = available + record.resident_bytes - working_memory_bytes
        is_async = self.device.type == "cuda"
        if mode in (VramMode.HIGH, VramMode.CPU):
            plan = LoadPlan(tuple(record.units), ())
            if weight_budget is not None and plan.resident_bytes > weight_budget:
                raise torch.OutOfMemoryError(
                    f"{record.name} needs {_size(plan.resident_bytes)} on {self.device} for a full "
                    f"load ({mode.value}) but {_size(weight_budget)} is left after "
                    f"{_size(working_memory_bytes)} of working memory")
            why = f"full ({mode.value})"
        else:
            cap = None
            if mode is VramMode.NO:
                cap = 0
            elif mode is VramMode.LOW and weight_budget is not None:
                cap = max(weight_budget, 0) // 2        # the other half is slack for activations
            try:
                plan = plan_load(record.units, weight_budget, prefetch=is_async, max_resident_bytes=cap)
            except BudgetTooSmall:
                if not getattr(type(record.shared.module), "OFFLOAD_LAYERS", False):
                    raise
                plan = plan_load(self._layer_units(record, weight_budget, is_async), weight_budget,
                                 prefetch=is_async, max_resident_bytes=cap)   # may raise: one layer too big
            if plan.is_full:
                why = "full (fits)"
            else:
                why = (f"partial ({mode.value}): {_size(plan.resident_bytes)} of "
                       f"{_size(record.device_bytes)} resident, {len(plan.streamed)} modules streamed; "
                       f"budget {_size(weight_budget)} after {_size(working_memory_bytes)} working memory")
        try:
            self._apply_plan(record, handle, plan, is_async)
        except BaseException as exc:                  # e.g. OOM half-way: leave nothing half-loaded
            if record.placement is not Placement.DROPPED:
                self._unload(record, why=f"load failed: {type(exc).__name__}")
            raise
        record.why = why

    def _layer_units(self, record: ModelRecord, weight_budget: int | None, is_async: bool) -> list[OffloadUnit]:
        """The units again, with every block that cannot stream whole under `weight_budget` (room for it,
        twice with prefetch, next to the enclosing units) cut into its layers; kept per size limit."""
        in_flight = 2 if is_async else 1
        containers = sum(u.nbytes for u in record.units if u.is_container)
        limit = max((weight_budget or 0) - containers, 0) // in_flight
        if record.layer_units[0] != limit:
            record.layer_units = (limit, offload_units(record.shared.module, record.weights,
                                                       record.shared.offload_blocks, record.dtype,
                                                       max_unit_bytes=limit, widened=record.units_widened))
        return record.layer_units[1]

    def _apply_plan(self, record: ModelRecord, handle: ModelHandle, plan: LoadPlan, is_async: bool) -> None:
        weights, patches = record.weights, handle.patches
        placed_by = record.shared.placed_by
        if placed_by is not None and placed_by[0] is not self:
            placed_by[1]()                               # another manager's copy: back to the base first
        record.shared.placed_by = (self, lambda: self._unload_for_other_manager(record))
        if record.streamer is not None:
            record.streamer.remove()
            record.streamer = None
        target = {k for unit in plan.resident for k in unit.keys}
        stale = [k for k in record.resident_keys
                 if k not in target or record.applied.get(k, ()) != patches.get(k, ())]
        self._restore_in_place(record, stale)
        for key in stale:
            self._evict_key(record, key)
        record.active_patches = dict(patches)
        for key in [k for k in weights.slots if k in target and k not in record.resident_keys]:
            weights.put(key, self._fetch(record, key, False, may_patch_in_place=True))
            record.resident_keys.add(key)
            record.applied[key] = patches.get(key, ())
            self.ledger.add(weights.nbytes(key, record.dtype, bool(record.applied[key])))
        if plan.streamed:
            if is_async and self.settings.pin_memory:
                pin_in_place([weights.home[k] for u in plan.streamed for k in u.keys], record.pinned)
            record.streamer = Streamer(weights, plan.streamed, self.device, record.dtype, self.ledger,
                                       lambda key, non_blocking: self._fetch(record, key, non_blocking),
                                       is_async=is_async)
            record.streamer.install()
        record.placement = Placement.PARTIAL if plan.streamed else Placement.FULL

    def _fetch(self, record: ModelRecord, key: str, non_blocking: bool, *,
               may_patch_in_place: bool = False) -> Tensor:
        """The weight `key` as it must be on the device: copied, patched in fp32, cast. A resident weight
        whose base tensor is the model's own, already on the device in the compute dtype, and rebuildable
        gets its patches merged in place (`may_patch_in_place`; streamed weights never do)."""
        home = record.weights.home[key]
        tensor = home if home.device == self.device else home.to(self.device, non_blocking=non_blocking)
        patches = record.active_patches.get(key)
        # a patched fp8 weight cast per use is held in the compute dtype, not rounded back to fp8
        dtype = record.weights.device_dtype(key, record.dtype, patched=bool(patches))
        if patches:
            if key in record.weights.scales:
                # a scaled fp8 weight: patched as its true value (weight * scale, float32) and held so, in the
                # compute dtype (never fp8: the layer then uses it as it is, without its scale)
                return apply_patches(record.weights.true_value(key, tensor), patches, key, out_dtype=dtype)
            rebuilder = record.weights.rebuilder
            if may_patch_in_place and tensor is home and home.dtype == dtype and rebuilder is not None \
                    and key in rebuilder.keys:
                record.patched_in_place.add(key)
                return apply_patches(home, patches, key, out=home)
            return apply_patches(tensor, patches, key, out_dtype=dtype)
        return tensor if tensor.dtype == dtype else tensor.to(dtype)

    def _restore_in_place(self, record: ModelRecord, keys: Iterable[str]) -> None:
        """Rebuild the base values of those `keys` that hold patches merged in place (one file read)."""
        dirty = {k: record.weights.home[k] for k in keys if k in record.patched_in_place}
        if not dirty:
            return
        try:
            record.weights.rebuilder.restore(dirty)
        except BaseException:
            # the base values are lost: the model must come from disk again, never compute half-patched
            record.patched_in_place.clear()
            self._drop(record, why=f"dropped: its patched weights could not be restored from {record.source_key}",
                       rebuildable=False)
            raise
        record.patched_in_place.difference_update(dirty)

    def _evict_key(self, record: ModelRecord, key: str) -> None:
        self._restore_in_place(record, (key,))
        record.weights.put_home(key)
        record.resident_keys.discard(key)
        patched = bool(record.applied.pop(key, None))
        self.ledger.remove(record.weights.nbytes(key, record.dtype, patched))

    # --- unloading --------------------------------------------------------------------------------

    def _unload(self, record: ModelRecord, why: str) -> None:
        if record.streamer is not None:
            record.streamer.remove()
            record.streamer = None
        self._restore_in_place(record, list(record.patched_in_place))
        for key in list(record.resident_keys):
            self._evict_key(record, key)
        for key in record.weights.keys():
            record.weights.put_home(key)                # streamed slots held placeholders
        if record.pinned:
            devices.synchronize(self.device)            # no copy from those pages may still be in flight
            unpin(record.pinned)
        record.active_patches = {}
        record.placement = Placement.RAM
        record.why = why
        if record.shared.placed_by is not None and record.shared.placed_by[0] is self:
            record.shared.placed_by = None

    def _unload_for_other_manager(self, record: ModelRecord) -> None:
        with self._lock:
            if record.is_on_device or record.resident_keys or record.streamer is not None:
                self._unload(record, why="unloaded: another model manager placed this module")

    def unload(self, handle: ModelHandle) -> None:
        """Take one model off the device (its patches with it); it stays in RAM."""
        with self._lock:
            record = self._records.get(handle.shared.id)
            if record is not None and record.is_on_device:
                self._unload(record, why="unloaded on request")
                devices.empty_cache(self.device)

    def discard(self, handle: ModelHandle, why: str) -> None:
        """Forget a model whose weights were lost (the next use loads it from its file again, if it has a
        reload function); nothing is restored from it."""
        with self._lock:
            record = self._records.get(handle.shared.id)
            if record is not None:
                record.patched_in_place.clear()
                self._drop(record, why=why)

    def free(self, *, unload_models: bool = True, drop_from_ram: bool = False,
             keep: Iterable[ModelHandle] = ()) -> int:
        """`/free` and the OOM fall-back: unload every model not kept (and not needed by the running
        graph) from the device, optionally drop them from RAM too; returns device bytes freed.

        Call it from the thread that runs prompts (between prompts for `/free`, as ComfyUI's server
        sets a flag the prompt worker acts on): a model unloaded under a running forward pass would
        have its weights swapped mid-computation."""
        with self._lock:
            kept = {h.shared.id for h in keep} | set(self._graph_needs)
            before = self.ledger.bytes
            if unload_models:
                for record in self._lru_on_device(exclude=kept):
                    self._unload(record, why="unloaded by free")
            if drop_from_ram:
                for record in list(self._records.values()):
                    if record.shared.id not in kept:
                        self._drop(record, why="dropped by free")
            devices.empty_cache(self.device)
            return before - self.ledger.bytes

    # --- RAM ----------------------------------------------------------------------------------------

    def _ram_splits(self) -> dict[int, tuple[int, int]]:
        """Each held model's (own, file-view) RAM bytes, by shared id (ModelRecord.ram_split)."""
        is_file_view = self._file_views()
        return {r.shared.id: r.ram_split(is_file_view) for r in self._records.values()}

    def ram_used_bytes(self) -> int:
        """RAM the held models' base tensors own (what the RAM budget limits); views of mapped files excluded."""
        return sum(own for own, _ in self._ram_splits().values())

    def file_view_bytes(self) -> int:
        """Bytes of the held models' base tensors that view a mapped model file (page cache, reclaimable)."""
        return sum(views for _, views in self._ram_splits().values())

    def _enforce_ram_budget(self, keep: set[int]) -> None:
        budget = self.ram_budget_bytes()
        own = {key: split[0] for key, split in self._ram_splits().items()}
        used = sum(own.values())
        for record in sorted(self._records.values(), key=lambda r: r.last_used):
            if used <= budget:
                break
            if record.shared.id in keep or record.shared.id in self._graph_needs \
                    or record.placement is Placement.DROPPED or not own[record.shared.id]:
                continue
            used -= own[record.shared.id]
            self._drop(record, why=f"dropped from RAM (least recently used; RAM budget {_size(budget)})")
        if used > budget:
            log.warning("models needed now take %.0f MiB of RAM, over the %.0f MiB RAM budget",
                        used / MIB, budget / MIB)

    def _drop(self, record: ModelRecord, why: str, rebuildable: bool = True) -> None:
        """Release `record`'s RAM. It comes back when needed through its `reload`, or else through its file
        rebuilder (`rebuildable`: not when the rebuilder just failed); without either it is gone."""
        if record.is_on_device:
            record.patched_in_place.clear()             # released anyway: no base values to rebuild
            self._unload(record, why)
        if record.reload is None and rebuildable:
            record.reload = _reload_from_rebuilder(record.weights)
        record.weights.release_home()
        record.placement = Placement.DROPPED
        record.why = why
        if record.reload is None:
            del self._records[record.shared.id]
            record.shared.__dict__["is_dropped"] = True
        log.info("%s: %s", record.name, why)

    def _reload(self, record: ModelRecord) -> None:
        if record.reload is None:
            raise ModelDroppedError(f"{record.name} was dropped from RAM and has no reload; load it again")
        record.weights.replace_home(dict(record.reload()))
        rebuilder = getattr(record.reload, "rebuilder", None)     # a reload made by _reload_from_rebuilder
        if rebuilder is not None:
            record.weights.rebuilder = rebuilder        # same file, same conversion: it still describes them
        record.placement = Placement.RAM
        record.why = "reloaded after a RAM-budget drop"

    # --- reports --------------------------------------------------------------------------------------

    def resident(self) -> list[dict]:
        """What this worker holds, for routing prompts to it (source key, placement, patches)."""
        with self._lock:
            return [{"name": r.name, "source_key": r.source_key, "placement": r.placement.value,
                     "patched_weights": len(r.active_patches)}
                    for r in self._records.values() if r.placement is not Placement.DROPPED]

    def report(self) -> dict:
        """Devices, memory and what is loaded where and why (`/system_stats`, the start-up log)."""
        with self._lock:
            device = self.device
            memory = devices.device_memory(device)
            ram = self._ram_probe()
            budget = self.settings.vram_budget_bytes
            torch_total, torch_free = devices.allocator_bytes(device)
            splits = self._ram_splits()
            return {
                "device": {"name": devices.describe_device(device), "type": device.type,
                           "index": device.index if device.index is not None else 0,
                           "vram_total": memory.total_bytes if budget is None
                           else min(budget, memory.total_bytes),
                           "vram_free": memory.free_bytes if budget is None
                           else max(budget - self.ledger.bytes, 0),
                           "torch_vram_total": torch_total, "torch_vram_free": torch_free},
                "vram_mode": self.vram_mode.value,
                "vram_budget_bytes": budget,
                "reserve_vram_bytes": self.reserve_bytes(),
                "models_device_bytes": self.ledger.bytes,
                "models_device_peak_bytes": self.ledger.peak_bytes,
                "ram": {"total": ram.total_bytes, "free": ram.free_bytes, "budget": self.ram_budget_bytes(),
                        "models": sum(own for own, _ in splits.values()),
                        "models_file_views": sum(views for _, views in splits.values())},
                "dtypes": {part.value: choice.to_json() for part, choice in self.dtype_choices().items()},
                "attention": self.settings.attention_backend,
                "convolutions_prepacked": self.is_prepacking_convolutions,
                "models": [self._describe(r, splits[r.shared.id])
                           for r in sorted(self._records.values(), key=lambda r: -r.last_used)],
            }

    def _describe(self, record: ModelRecord, split: tuple[int, int]) -> dict:
        own, views = split
        return {"name": record.name, "source_key": record.source_key, "placement": record.placement.value,
                "size_bytes": record.device_bytes, "resident_bytes": record.resident_bytes,
                "ram_bytes": own, "file_view_bytes": views,
                "dtype": str(record.dtype).removeprefix("torch.") if record.dtype else None,
                "patched_weights": len(record.active_patches), "why": record.why}

    @property
    def is_prepacking_convolutions(self) -> bool:
        """Whether the sampler packs convolution weights once per run (only on the CPU; models/prepack.py)."""
        return self.device.type == "cpu" and self.settings.prepack_weights

    def startup_lines(self) -> list[str]:
        caps = devices.device_caps(self.device)
        lines = [f"device: {caps.name} ({self.vram_mode.value})"]
        if self.settings.vram_budget_bytes is not None:
            lines.append(f"vram budget: {_size(self.settings.vram_budget_bytes)}")
        lines.append(f"ram budget for cached models: {_size(self.ram_budget_bytes())}")
        lines += ["dtype " + line for line in describe_dtypes(self.dtype_choices())]
        lines.append(f"attention: {self.settings.attention_backend}"
                     + (" (sliced for bf16 on the CPU, else sdpa)" if self.settings.attention_backend == "auto" else ""))
        if self.device.type == "cpu":
            lines.append("convolutions: " + ("weights packed once per sampling run" if self.is_prepacking_convolutions
                                             else "plain weights (--disable-weight-prepack)"))
        return lines


def _reload_from_rebuilder(weights: Any) -> Callable[[], Mapping[str, Tensor]] | None:
    """A reload for a model whose converted weights a file rebuilder can read again (models.rebuild):
    after a RAM-budget drop they are rebuilt bit for bit from the file; the weights that are views of the
    mapped file (no RAM of their own) are kept as they are. None without a rebuilder."""
    rebuilder = weights.rebuilder
    if rebuilder is None:
        return None
    kept = {key: tensor for key, tensor in weights.home.items() if key not in rebuilder.keys}
    shapes = {key: (tuple(tensor.shape), tensor.dtype, tensor.device) for key, tensor in weights.home.items()
              if key in rebuilder.keys}

    def reload() -> Mapping[str, Tensor]:
        fresh = {key: torch.empty(shape, dtype=dtype, device=device) for key, (shape, dtype, device) in shapes.items()}
        rebuilder.restore(fresh)
        return {**kept, **fresh}

    reload.rebuilder = rebuilder          # type: ignore[attr-defined]
    return reload
