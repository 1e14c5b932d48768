"""Out of memory is not fatal: retry a call in ever lower memory modes before giving up.

:func:`with_oom_fallbacks` runs `fn(options)`. On an out-of-memory error it frees what the caller
says can be freed (cached models, allocator blocks), merges the next :class:`Fallback`'s options
into `options` and tries again. Fall-backs accumulate: the third attempt runs with the first two
fall-backs' options too. Only when the last one fails does it raise
:class:`OutOfMemoryAfterFallbacks`, whose message lists everything tried.

The option names are a contract with the code that reads them (nodes pass them on to the sampler,
the attention backend, the VAE and :meth:`ModelManager.load_models_for`).
"""
from __future__ import annotations

import gc
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import torch

from model_management.settings import VramMode

log = logging.getLogger("plexus.memory")
T = TypeVar("T")

ATTENTION_BACKEND = "attention_backend"   # str, a backend name of models.attention
IS_CFG_SPLIT = "is_cfg_split"             # bool: run the conditional and unconditional batches one by one
IS_VAE_TILED = "is_vae_tiled"             # bool: decode/encode the VAE in tiles
VRAM_MODE = "vram_mode"                   # VramMode for load_models_for


@dataclass(frozen=True)
class Fallback:
    name: str                                   # what the error message lists: "attention in chunks"
    options: Mapping[str, Any] = field(default_factory=dict)


SAMPLING_FALLBACKS = (
    Fallback("attention in chunks (sub-quadratic)", {ATTENTION_BACKEND: "sub_quadratic"}),
    Fallback("CFG batch split", {IS_CFG_SPLIT: True}),
    Fallback("partial load (lowvram)", {VRAM_MODE: VramMode.LOW}),
    Fallback("all weights streamed (novram)", {VRAM_MODE: VramMode.NO}),
)

VAE_FALLBACKS = (
    Fallback("tiled VAE", {IS_VAE_TILED: True}),
    Fallback("partial load (lowvram)", {VRAM_MODE: VramMode.LOW}),
)


def is_out_of_memory(exc: BaseException) -> bool:
    """torch's OOM error, or a backend's RuntimeError that says it ran out of memory (MPS, XPU)."""
    if isinstance(exc, torch.OutOfMemoryError):
        return True
    return isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower()


class OutOfMemoryAfterFallbacks(Exception):
    """Every memory mode failed. Duck-typed like `PlexusError` (`type`, `message`, `to_json`), since
    model_management may not import `execution`; nodes re-raise it as their error."""

    type = "out_of_memory"

    def __init__(self, what: str, tried: list[str], last_error: str, has_freed: bool = True) -> None:
        self.tried = list(tried)
        self.message = f"{what} ran out of memory"
        freed = ", freeing cached models before each retry" if has_freed else ""
        self.details = (f"tried in order: {'; '.join(tried)}{freed}. Last error: {last_error}. "
                        "Lower the batch size or resolution, close other programs using the GPU, "
                        "or start with --novram.")
        super().__init__(f"{self.message}: {self.details}")

    def to_json(self) -> dict[str, Any]:
        return {"type": self.type, "message": self.message, "details": self.details,
                "extra_info": {"tried": self.tried}}


def with_oom_fallbacks(fn: Callable[[dict[str, Any]], T],
                       fallbacks: Sequence[Fallback] = SAMPLING_FALLBACKS, *,
                       free: Callable[[], object] | None = None, options: Mapping[str, Any] | None = None,
                       what: str = "the call") -> T:
    """Run `fn(options)`, retrying with each fall-back after an OOM; see the module docstring."""
    current = dict(options or {})
    tried: list[str] = []
    last_error = ""
    for attempt in (Fallback("as requested"), *fallbacks):
        current.update(attempt.options)
        try:
            return fn(dict(current))
        except Exception as exc:                     # noqa: BLE001 - filtered just below
            if not is_out_of_memory(exc):
                raise
            last_error = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            tried.append(attempt.name)
        # outside the except block: the traceback (and the tensors its frames hold) is gone now
        log.warning("%s ran out of memory (%s); freeing memory and retrying", what, tried[-1])
        gc.collect()
        if free is not None:
            free()
    raise OutOfMemoryAfterFallbacks(what, tried, last_error, has_freed=free is not None)
