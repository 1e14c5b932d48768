"""`--compile-unet`: the diffusion model's forward through `torch.compile`, compiled lazily, never fatal.

    forward = sampling_forward(model)            # in run_sampling, after the model is loaded
    out = forward(x, timestep, context)          # the module's own forward, compiled or eager

The compiled forward of a module is a :class:`CompiledForward` kept next to it (`module.__dict__`, not a
submodule: `state_dict`, hooks, `.to()` and the weight slots are untouched). It compiles on the first call
of each new input signature (shape and dtype of x and context), logging COMPILING_MESSAGE before and the
compile time after; `compile_s` / `compiles` keep the totals. A compile that fails (no C++ compiler, an
unknown backend, an op inductor cannot lower) logs a warning and the module runs eager from then on; only
an out-of-memory error is passed on, to the sampling fall-backs. A prompt never fails because of compile.

What torch.compile (2.13) keeps and what it reads at each call, as tests/diffusion/test_compile.py checks:

- Parameters are graph inputs, not constants: the tensor in each slot is read at call time, so weights
  swapped by model_management (`param.data = ...` for LoRA patches, casts and reloads) or merged into the
  base tensors in place are followed without a recompile, as long as each weight's shape, dtype, stride
  and dispatch keys stay the same. A change of those fails a guard and recompiles (minutes for a
  full-size UNet with inductor on a CPU): another dtype, a streamed weight's stride-0 placeholder, a
  weight created under `torch.inference_mode` (and likewise inputs made outside it: sampling makes them
  inside). Streaming also changes slots inside the forward (its
  hooks), so a model that is streamed (partial load) runs eager (:func:`sampling_forward`).
- inductor's `freezing` (weights folded in as constants, convolutions prepacked for oneDNN) stays off
  (the default): it would bake in whatever weights the first call saw. Without it the convolutions and
  matrix products run the same kernels as eager; the gain is in fused normalisation and pointwise ops.
- inductor keeps generated code in an on-disk cache (`TORCHINDUCTOR_CACHE_DIR`, default under /tmp), so
  a later process compiling the same model and shape takes seconds instead of minutes (bench/compile.py).
- Compiled code is cached per code object and backend for the whole process, so a second module of the
  same architecture (another SD1.5 checkpoint) reuses it when its guards pass. With `dynamic=False` each
  new latent size or batch size is one more compile; after `torch._dynamo.config.recompile_limit` (8)
  compiles of the forward, dynamo runs further signatures eager.
- Changing the attention backend (the OOM fall-backs do) fails a guard too: the fall-back attempts of
  run_sampling run eager (:func:`sampling_forward`'s `is_fallback`).
"""
from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

from model_management import Placement, is_out_of_memory
from models import unet_patches

from .objects import DiffusionModel

log = logging.getLogger("plexus.diffusion")

COMPILING_MESSAGE = "compiling the diffusion model (first step will take a while)"
DEFAULT_BACKEND = "inductor"
BACKEND_OPTION = "compile_backend"      # DiffusionModel option: another torch.compile backend ("aot_eager")
COMPILE_OPTION = "compile_diffusion_model"   # DiffusionModel option: compile this MODEL (TorchCompileModel)
UNetForward = Callable[..., Tensor]      # (x, timesteps, context, **extra (SDXL: y)) -> prediction


def _compiled_graph_count() -> int:
    """Graphs dynamo has compiled in this process (its own statistics counter)."""
    from torch._dynamo.utils import counters
    return int(counters["stats"]["unique_graphs"])


class CompiledForward:
    """`module(x, t, context)` through torch.compile: compiled on first use per input signature, eager
    after a failed compile (`error` says why). `compile_s` and `compiles` total the compiles seen."""

    def __init__(self, module: nn.Module, backend: str = DEFAULT_BACKEND, dynamic: bool = False) -> None:
        self.module = module
        self.backend = backend
        self.dynamic = dynamic
        self.compiled: Callable[..., Tensor] | None = None      # made on the first call, inside its try
        self.error: str | None = None
        self.compile_s = 0.0
        self.compiles = 0
        self._signatures: set[tuple] = set()

    @classmethod
    def of(cls, module: nn.Module, backend: str = DEFAULT_BACKEND, dynamic: bool = False) -> CompiledForward:
        """The one compiled forward of `module` for this backend (made on first use, kept with the module)."""
        by_kind: dict[tuple[str, bool], CompiledForward] = module.__dict__.setdefault("_plexus_compiled", {})
        compiled = by_kind.get((backend, dynamic))
        if compiled is None:
            compiled = by_kind[(backend, dynamic)] = cls(module, backend, dynamic)
        return compiled

    @property
    def is_failed(self) -> bool:
        return self.error is not None

    def __call__(self, x: Tensor, timesteps: Tensor, context: Tensor, **extra: Tensor) -> Tensor:
        if self.error is not None:
            return self.module(x, timesteps, context, **extra)
        signature = (tuple(x.shape), x.dtype, tuple(context.shape), context.dtype)
        is_new = signature not in self._signatures
        if is_new:
            log.info("%s: x %s %s, backend %s", COMPILING_MESSAGE, list(x.shape),
                     str(x.dtype).removeprefix("torch."), self.backend)
        graphs_before = _compiled_graph_count()
        started = time.perf_counter()
        try:
            if self.compiled is None:
                self.compiled = torch.compile(self.module, backend=self.backend, dynamic=self.dynamic)
            out = self.compiled(x, timesteps, context, **extra)
        except Exception as exc:                     # any failure of the compiled call: try eager
            if is_out_of_memory(exc):
                raise
            return self._eager_after(exc, x, timesteps, context, **extra)
        elapsed_s = time.perf_counter() - started
        self._signatures.add(signature)
        if _compiled_graph_count() > graphs_before:
            self.compiles += 1
            self.compile_s += elapsed_s
            log.info("compiled the diffusion model in %.1f s (first step included)%s", elapsed_s,
                     "" if is_new else "; a guard failed for an input seen before (weights changed dtype or layout?)")
        return out

    def _eager_after(self, exc: Exception, x: Tensor, timesteps: Tensor, context: Tensor,
                    **extra: Tensor) -> Tensor:
        """The eager forward after the compiled call raised `exc`. If eager raises too, the inputs or the
        model are at fault, not the compile: that error goes to the caller and compiling stays on."""
        out = self.module(x, timesteps, context, **extra)
        first_line = next(iter(str(exc).strip().splitlines()), "")
        self.error = f"{type(exc).__name__}: {first_line}"
        log.warning("compiling the diffusion model failed (%s); it runs eager from now on", self.error)
        return out


def with_compile(model: DiffusionModel, backend: str = DEFAULT_BACKEND) -> DiffusionModel:
    """A clone of the MODEL whose sampling runs go through torch.compile with `backend` (ComfyUI's
    TorchCompileModel), whatever `--compile-unet` says; the same fall-backs to eager apply."""
    twin = model.clone()
    twin.options[COMPILE_OPTION] = True
    twin.options[BACKEND_OPTION] = backend
    return twin


def sampling_forward(model: DiffusionModel, *, is_fallback: bool = False) -> nn.Module | UNetForward:
    """What run_sampling calls as the UNet of a loaded `model`: its compiled forward when the manager's
    settings ask for it (`compile_diffusion_model`) or the MODEL does (`with_compile`), else the module itself. Eager, with a log line, while
    the model is streamed (partial load) or in an OOM fall-back attempt (`is_fallback`)."""
    manager: Any = model.manager
    if not (getattr(manager.settings, "compile_diffusion_model", False) or model.options.get(COMPILE_OPTION)):
        return model.module
    record = manager.record_of(model)
    if record is not None and record.placement is Placement.PARTIAL:
        log.info("the diffusion model is streamed (partial load): running it eager, not compiled")
        return model.module
    if is_fallback:
        log.info("an out-of-memory fall-back attempt: running the diffusion model eager, not compiled")
        return model.module
    if unet_patches.has_patches(model.options.get("transformer_options")):
        log.info("the diffusion model carries attention/block patches: running it eager, not compiled")
        return model.module
    return CompiledForward.of(model.module, backend=model.options.get(BACKEND_OPTION, DEFAULT_BACKEND))
