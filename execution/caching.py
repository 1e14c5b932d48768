"""Output caching across prompts: cache keys from inputs, and the eviction policies.

A node's key is a digest of its class, its constant inputs (serialised canonically), its
``IS_CHANGED`` result and the keys of the nodes feeding it -- never its node id (unless it asks
for ``UNIQUE_ID``, whose value then is an input). A node whose key cannot be formed (an input
that does not serialise, ``IS_CHANGED`` returning NaN or raising, ``NOT_IDEMPOTENT``) gets no key,
and neither do the nodes below it: they always run and are never stored. Outputs themselves are
never hashed, so tensors and dicts are fine.
"""
from __future__ import annotations

import hashlib
import json
import math
import sys
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

FREE_RAM_CHECK_BYTES = 32 * 1024 * 1024
_dumps = json.JSONEncoder(sort_keys=True, separators=(",", ":"), allow_nan=True).encode


@dataclass(slots=True)
class CacheEntry:
    outputs: list[list[Any]]       # per output slot, the list of values (ComfyUI's list semantics)
    ui: dict[str, Any] | None      # the node's ui dict, resent when an output node is served from cache
    size_bytes: int = 0


def canonical(value: Any) -> str | None:
    """A canonical text for a JSON-like constant, or None when it has no faithful one."""
    try:
        return _dumps(value)
    except (TypeError, ValueError, OverflowError, RecursionError):
        return None


def digest(parts: list[str]) -> bytes:
    return hashlib.blake2b("\x1f".join(parts).encode("utf-8", "surrogatepass"), digest_size=16).digest()


def is_changed_token(result: Any) -> str | None:
    """The text of an ``IS_CHANGED`` result for a key, or None for 'always changed' (NaN)."""
    if isinstance(result, float) and math.isnan(result):
        return None
    if isinstance(result, (list, tuple)) and any(isinstance(r, float) and math.isnan(r) for r in result):
        return None
    text = canonical(result)
    if text is None:
        text = canonical(repr(result)) if isinstance(result, (bytes, bytearray)) else None
    return text


def estimate_bytes(value: Any, depth: int = 0) -> int:
    """Roughly how much memory a cached value holds (tensors and arrays by their data size)."""
    if depth > 4:
        return 0
    nbytes = getattr(value, "nbytes", None)
    if isinstance(nbytes, int):
        return nbytes
    element_size, count = getattr(value, "element_size", None), getattr(value, "nelement", None)
    if callable(element_size) and callable(count):
        try:
            return int(element_size()) * int(count())
        except Exception:  # noqa: BLE001 - a tensor-like that fails to report its size
            return sys.getsizeof(value)
    if isinstance(value, (list, tuple)):
        return sys.getsizeof(value) + sum(estimate_bytes(v, depth + 1) for v in value[:1000])
    if isinstance(value, dict):
        return sys.getsizeof(value) + sum(estimate_bytes(v, depth + 1) for v in list(value.values())[:1000])
    try:
        return sys.getsizeof(value)
    except TypeError:
        return 64


def free_ram_bytes() -> int | None:
    """MemAvailable from /proc/meminfo, or None where that is not readable."""
    try:
        with open("/proc/meminfo", encoding="ascii") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


@dataclass(frozen=True)
class CachePolicy:
    """How the output cache evicts; chosen when the engine starts.

    - ``keep_last()`` (default): keep what the last prompt used (ComfyUI's classic cache);
    - ``lru(max_entries)``: the ``max_entries`` most recently used outputs;
    - ``ram(budget_bytes, min_free_bytes)``: least recently used first, while the cache holds more
      than ``budget_bytes`` or the machine has less than ``min_free_bytes`` available;
    - ``none()``: nothing is kept between prompts.
    """

    kind: str = "keep_last"
    max_entries: int | None = None
    budget_bytes: int | None = None
    min_free_bytes: int | None = None

    @classmethod
    def keep_last(cls) -> CachePolicy:
        return cls("keep_last")

    @classmethod
    def lru(cls, max_entries: int) -> CachePolicy:
        if max_entries < 1:
            raise ValueError(f"an LRU cache needs at least one entry, got max_entries={max_entries}")
        return cls("lru", max_entries=max_entries)

    @classmethod
    def ram(cls, budget_bytes: int | None = None, min_free_bytes: int | None = None) -> CachePolicy:
        if budget_bytes is None and min_free_bytes is None:
            raise ValueError("a RAM cache policy needs budget_bytes, min_free_bytes or both")
        return cls("ram", budget_bytes=budget_bytes, min_free_bytes=min_free_bytes)

    @classmethod
    def none(cls) -> CachePolicy:
        return cls("none")

    def make(self, free_bytes: Callable[[], int | None] = free_ram_bytes) -> OutputCache:
        if self.kind == "keep_last":
            return OutputCache()
        if self.kind == "lru":
            return OutputCache(max_entries=self.max_entries)
        if self.kind == "ram":
            return OutputCache(budget_bytes=self.budget_bytes, min_free_bytes=self.min_free_bytes,
                               free_bytes=free_bytes)
        if self.kind == "none":
            return OutputCache(is_disabled=True)
        raise ValueError(f"unknown cache policy {self.kind!r}; use keep_last, lru, ram or none")


class OutputCache:
    """Cached node outputs by key, least recently used first; one class serves every policy."""

    def __init__(self, *, max_entries: int | None = None, budget_bytes: int | None = None,
                 min_free_bytes: int | None = None, free_bytes: Callable[[], int | None] = free_ram_bytes,
                 is_disabled: bool = False):
        self._entries: OrderedDict[bytes, CacheEntry] = OrderedDict()
        self.max_entries = max_entries
        self.budget_bytes = budget_bytes
        self.min_free_bytes = min_free_bytes
        self.free_bytes = free_bytes
        self.is_disabled = is_disabled
        self.is_keep_last = max_entries is None and budget_bytes is None and min_free_bytes is None
        self.has_byte_budget = budget_bytes is not None or min_free_bytes is not None
        self.total_bytes = 0
        self.evictions = 0
        self._unchecked_bytes = 0        # stored since free RAM was last read
        self._checked_at_s = 0.0

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: bytes | None) -> bool:
        return key is not None and key in self._entries

    def present(self, keys: dict[str, bytes | None], node_ids: Any) -> list[str]:
        """The ids among ``node_ids`` whose key has an entry."""
        entries = self._entries
        return [n for n in node_ids if keys.get(n) in entries]

    def get(self, key: bytes | None) -> CacheEntry | None:
        if key is None:
            return None
        entry = self._entries.get(key)
        if entry is not None:
            self._entries.move_to_end(key)
        return entry

    def put(self, key: bytes | None, entry: CacheEntry) -> None:
        if key is None or self.is_disabled:
            return
        if self.has_byte_budget:
            entry.size_bytes = sum(estimate_bytes(slot) for slot in entry.outputs)
        old = self._entries.pop(key, None)
        if old is not None:
            self.total_bytes -= old.size_bytes
        self._entries[key] = entry
        self.total_bytes += entry.size_bytes
        self._unchecked_bytes += entry.size_bytes
        self._trim()

    def _trim(self, force: bool = False) -> None:
        if self.max_entries is not None:
            while len(self._entries) > self.max_entries:
                self._evict_oldest()
        if self.budget_bytes is not None:
            while self._entries and self.total_bytes > self.budget_bytes:
                self._evict_oldest()
        if self.min_free_bytes is not None and self._should_read_free_ram(force):
            while self._entries:
                free = self.free_bytes()
                if free is None or free >= self.min_free_bytes:
                    break
                self._evict_oldest()

    def _should_read_free_ram(self, force: bool) -> bool:
        """Reading free RAM costs a file read: do it after 32 MiB were stored or 0.1 s went by."""
        now = time.monotonic()
        if force or self._unchecked_bytes >= FREE_RAM_CHECK_BYTES or now - self._checked_at_s >= 0.1:
            self._unchecked_bytes = 0
            self._checked_at_s = now
            return True
        return False

    def _evict_oldest(self) -> None:
        _, entry = self._entries.popitem(last=False)
        self.total_bytes -= entry.size_bytes
        self.evictions += 1

    def end_prompt(self, live_keys: set[bytes]) -> None:
        """After a prompt: keep-last drops every entry the prompt does not have a node for."""
        if self.is_disabled:
            self.clear()
        elif self.is_keep_last:
            for key in [k for k in self._entries if k not in live_keys]:
                self.total_bytes -= self._entries.pop(key).size_bytes
        else:
            self._trim(force=True)

    def clear(self) -> None:
        self._entries.clear()
        self.total_bytes = 0
