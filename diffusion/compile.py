"""`--compile-unet`: the diffusion model's forward through `torch.compile`, compiled off the critical path,
with a persistent on-disk cache, never fatal.

    forward = sampling_forward(model)            # in run_sampling, after the model is loaded
    out = forward(x, timestep, context)          # eager until this signature's compiled forward is ready

The compiled forward of a module is a :class:`CompiledForward` kept next to it (`module.__dict__`, not a
submodule: `state_dict`, hooks, `.to()` and the weight slots are untouched). Each new input signature (shape
and dtype of x, context and the extra inputs, and the grad/inference mode) is compiled once:

- background (the default, `--compile-unet`): the call that meets a new signature runs EAGER at once and
  hands a job to one daemon worker thread (:func:`_worker`; it never keeps the process alive, and compiles run
  one at a time process-wide). The worker calls the compiled module on its own detached clones of the inputs
  under the caller's grad/inference mode (tracing, code generation and one forward whose output is thrown
  away), then marks the signature ready; from the next call on, that signature runs compiled. The log says
  COMPILING_MESSAGE when the job starts and `compiled ... in N s in the background` (with inductor's FX-graph
  cache hits and misses: all hits = it came from the on-disk cache) when it is swapped in.
- blocking (`--compile-blocking`): the first call of a signature compiles and runs it on the caller's thread
  (the old behaviour: that step waits for the compile).

Ready signatures run in dynamo's run-only mode (`torch._dynamo.run`): a call whose guards fail (see below)
runs eager instead of compiling on the critical path; the miss is logged and the signature compiled once
more in the background; if it misses again it stays eager. A compile that fails (no C++ compiler, an unknown
backend, an op inductor cannot lower) logs a warning and that signature runs eager from then on; an
out-of-memory error of a compiled call is passed on, to the sampling fall-backs (one of the worker's
compile is only logged, and the signature tried again later). A prompt never fails because of compile.

The trade-off of the background mode on a machine with few cores: the worker's tracing (Python, holding the
GIL part of the time), inductor's C++ compiles and its one throw-away forward share the cores with the eager
sampling steps, so those steps run slower while a compile is in flight (bench/compile.py measures the first
prompt both ways). The eager steps of a compiled model also run on plain convolution weights (no
prepacking, diffusion/prepacking.py: packing swaps the weights the worker is tracing). The worker keeps a
reference to the module until its job ends.

The on-disk cache (:func:`use_cache_dir`): before the first compile, inductor's cache
(`TORCHINDUCTOR_CACHE_DIR`: the FX-graph cache and AOTAutograd cache, both on by default in torch 2.13, and
the generated C++) is pointed at a Plexus-owned folder, `<base directory>/cache/compile` by default
(`--compile-cache-dir`), unless the environment already sets one. A later process compiling the same model
and shape then loads the generated code instead of generating it (seconds or tens of seconds instead of
minutes for a full-size UNet: bench/compile.py).

What torch.compile (2.13) keeps and what it reads at each call, as tests/diffusion/test_compile.py checks:

- Parameters are graph inputs, not constants: the tensor in each slot is read at call time, so weights
  swapped by model_management (`param.data = ...` for LoRA patches, casts and reloads) or merged into the
  base tensors in place are followed without a recompile, as long as each weight's shape, dtype, stride
  and dispatch keys stay the same. A change of those fails a guard (above: eager, one more background
  compile): another dtype, a streamed weight's stride-0 placeholder, a weight created under
  `torch.inference_mode` (and likewise inputs made outside it: sampling makes them inside). Streaming also
  changes slots inside the forward (its hooks), so a model that is streamed (partial load) runs eager
  (:func:`sampling_forward`).
- inductor's `freezing` (weights folded in as constants, convolutions prepacked for oneDNN) stays off
  (the default): it would bake in whatever weights the first call saw. Without it the convolutions and
  matrix products run the same kernels as eager; the gain is in fused normalisation and pointwise ops.
- Compiled code is cached per code object and backend for the whole process, so a second module of the
  same architecture (another SD1.5 checkpoint) reuses it when its guards pass. With `dynamic=False` each
  new latent size or batch size is one more compile; after `torch._dynamo.config.recompile_limit` (8)
  compiles of the forward, dynamo runs further signatures eager.
- Changing the attention backend (the OOM fall-backs do) fails a guard too: the fall-back attempts of
  run_sampling run eager (:func:`sampling_forward`'s `is_fallback`).
"""
from __future__ import annotations

import logging
import os
import queue
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from model_management import Placement, is_out_of_memory
from models import unet_patches

from .objects import DiffusionModel

log = logging.getLogger("plexus.diffusion")

COMPILING_MESSAGE = "compiling the diffusion model"
DEFAULT_BACKEND = "inductor"
BACKEND_OPTION = "compile_backend"      # DiffusionModel option: another torch.compile backend ("aot_eager")
COMPILE_OPTION = "compile_diffusion_model"   # DiffusionModel option: compile this MODEL (TorchCompileModel)
CACHE_ENV = "TORCHINDUCTOR_CACHE_DIR"
UNetForward = Callable[..., Tensor]      # (x, timesteps, context, **extra (SDXL: y)) -> prediction
Signature = tuple


def use_cache_dir(directory: Path | str | None) -> str | None:
    """Point inductor's on-disk cache at `directory` (made if missing) unless the environment names one
    already; returns the folder in use (None: inductor's own default). Call before the first compile."""
    current = os.environ.get(CACHE_ENV)
    if current or directory is None:
        return current
    path = Path(directory)
    path.mkdir(parents=True, exist_ok=True)
    os.environ[CACHE_ENV] = str(path)
    log.info("torch.compile cache: %s", path)
    return str(path)


def _cache_counts() -> tuple[int, int]:
    """inductor's FX-graph cache (hits, misses) so far in this process."""
    from torch._dynamo.utils import counters
    return int(counters["inductor"]["fxgraph_cache_hit"]), int(counters["inductor"]["fxgraph_cache_miss"])


def signature_of(x: Tensor, context: Tensor, extra: dict[str, Any]) -> Signature:
    """What a compiled graph is specialised on (dynamic=False): input shapes and dtypes, and the mode."""
    def of(v: Any) -> Any:
        return (tuple(v.shape), v.dtype) if isinstance(v, Tensor) else type(v).__name__
    return (of(x), of(context), tuple(sorted((k, of(v)) for k, v in extra.items())),
            torch.is_inference_mode_enabled(), torch.is_grad_enabled())


def _detached(v: Any) -> Any:
    return v.detach().clone() if isinstance(v, Tensor) else v


@dataclass
class _Job:
    forward: CompiledForward
    signature: Signature
    args: tuple
    kwargs: dict
    is_inference: bool
    is_grad: bool
    done: threading.Event = field(default_factory=threading.Event)


_JOBS: queue.Queue[_Job] = queue.Queue()
_WORKER: list[threading.Thread] = []
_WORKER_LOCK = threading.Lock()


# While the worker compiles, the interpreter hands the GIL over every SWITCH_INTERVAL_S instead of Python's
# 5 ms: the sampling thread takes it back after each kernel (a UNet forward is ~1,500 operator calls), and a
# 5 ms wait per call would add seconds to each eager step; tracing gets a little slower instead.
SWITCH_INTERVAL_S = 0.0002


def _worker() -> None:
    while True:
        job = _JOBS.get()
        interval = sys.getswitchinterval()
        sys.setswitchinterval(min(interval, SWITCH_INTERVAL_S))
        try:
            job.forward._compile_job(job)
        finally:
            sys.setswitchinterval(interval)
            job.done.set()


def _submit(job: _Job) -> None:
    with _WORKER_LOCK:
        if not _WORKER or not _WORKER[0].is_alive():
            _WORKER[:] = [threading.Thread(target=_worker, name="plexus-compile", daemon=True)]
            _WORKER[0].start()
    _JOBS.put(job)


class CompiledForward:
    """`module(x, t, context)` through torch.compile, one compile per input signature: in the background
    (eager until ready) or blocking. `failed` maps signatures to why they run eager; `compile_s` and
    `compiles` total the compiles seen; `compiled_calls` counts calls that ran the compiled graphs."""

    def __init__(self, module: nn.Module, backend: str = DEFAULT_BACKEND, dynamic: bool = False,
                 background: bool = True) -> None:
        self.module = module
        self.backend = backend
        self.dynamic = dynamic
        self.background = background
        self.compiled: Callable[..., Tensor] | None = None      # made on first use, inside a try
        self.failed: dict[Signature, str] = {}
        self.compile_s = 0.0
        self.compiles = 0
        self.compiled_calls = 0
        self._ready: set[Signature] = set()
        self._jobs: dict[Signature, _Job] = {}
        self._misses: dict[Signature, int] = {}
        self._graph_runs = threading.local()
        self._lock = threading.Lock()
        self._run_only: Callable[..., Tensor] | None = None

    @classmethod
    def of(cls, module: nn.Module, backend: str = DEFAULT_BACKEND, dynamic: bool = False,
           background: bool = True) -> CompiledForward:
        """The one compiled forward of `module` for this backend (made on first use, kept with the module)."""
        by_kind: dict[tuple[str, bool], CompiledForward] = module.__dict__.setdefault("_plexus_compiled", {})
        compiled = by_kind.get((backend, dynamic))
        if compiled is None:
            compiled = by_kind[(backend, dynamic)] = cls(module, backend, dynamic, background)
        compiled.background = background
        return compiled

    @property
    def error(self) -> str | None:
        """Why the last failed signature runs eager (None: none failed)."""
        return next(reversed(self.failed.values()), None)

    @property
    def is_failed(self) -> bool:
        return bool(self.failed)

    def is_ready(self, x: Tensor, context: Tensor, **extra: Any) -> bool:
        return signature_of(x, context, extra) in self._ready

    def wait(self, timeout: float | None = None) -> bool:
        """Wait for this forward's background compiles in flight; False if `timeout` ran out first."""
        deadline = None if timeout is None else time.monotonic() + timeout
        for job in list(self._jobs.values()):
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            if not job.done.wait(left):
                return False
        return True

    # -- the call ----------------------------------------------------------------------------------------

    def __call__(self, x: Tensor, timesteps: Tensor, context: Tensor, **extra: Any) -> Tensor:
        signature = signature_of(x, context, extra)
        if signature in self._ready:
            return self._call_ready(signature, x, timesteps, context, **extra)
        if signature in self.failed:
            return self.module(x, timesteps, context, **extra)
        if not self.background:
            return self._compile_here(signature, x, timesteps, context, **extra)
        self._start(signature, (x, timesteps, context), extra)
        return self.module(x, timesteps, context, **extra)

    def _compiled_module(self) -> Callable[..., Tensor]:
        if self.compiled is None:
            self.compiled = torch.compile(self.module, backend=self._counting_backend, dynamic=self.dynamic)
        return self.compiled

    def _counting_backend(self, graph: Any, example_inputs: Any) -> Callable[..., Any]:
        """The named backend, whose compiled graphs count their runs on the calling thread."""
        from torch._dynamo.backends.registry import lookup_backend

        compiled = lookup_backend(self.backend)(graph, example_inputs)
        runs = self._graph_runs

        def run(*args: Any) -> Any:
            runs.count = getattr(runs, "count", 0) + 1
            return compiled(*args)
        return run

    def _call_ready(self, signature: Signature, x: Tensor, timesteps: Tensor, context: Tensor,
                    **extra: Any) -> Tensor:
        """A ready signature in run-only mode: the compiled graphs if their guards pass, else eager."""
        if self._run_only is None:
            self._run_only = torch._dynamo.run(self.module.__call__)
        self._graph_runs.count = 0
        try:
            out = self._run_only(x, timesteps, context, **extra)
        except Exception as exc:
            if is_out_of_memory(exc):
                raise
            return self._eager_after(signature, exc, x, timesteps, context, **extra)
        if self._graph_runs.count:
            self.compiled_calls += 1
            return out
        misses = self._misses[signature] = self._misses.get(signature, 0) + 1
        with self._lock:
            self._ready.discard(signature)
        if misses == 1:
            log.info("the compiled diffusion model's guards failed (weights changed dtype or layout?): "
                     "this step runs eager; compiling once more in the background")
            self._jobs.pop(signature, None)
            if self.background:
                self._start(signature, (x, timesteps, context), extra)
        else:
            self.failed[signature] = "guards keep failing after a recompile"
            log.warning("the compiled diffusion model's guards failed again after a recompile: this input "
                        "signature runs eager from now on")
        return out

    def _compile_here(self, signature: Signature, x: Tensor, timesteps: Tensor, context: Tensor,
                      **extra: Any) -> Tensor:
        """Blocking mode: compile and run this call on the caller's thread."""
        log.info("%s: x %s %s, backend %s (blocking: this step waits for it)", COMPILING_MESSAGE,
                 list(x.shape), str(x.dtype).removeprefix("torch."), self.backend)
        cache_before = _cache_counts()
        started = time.perf_counter()
        try:
            out = self._compiled_module()(x, timesteps, context, **extra)
        except Exception as exc:                     # any failure of the compiled call: try eager
            if is_out_of_memory(exc):
                raise
            return self._eager_after(signature, exc, x, timesteps, context, **extra)
        self._finished(signature, time.perf_counter() - started, cache_before, "first step included")
        return out

    def _start(self, signature: Signature, args: tuple, extra: dict[str, Any]) -> None:
        """Queue a background compile of `signature` on detached clones of the inputs (once)."""
        with self._lock:
            if signature in self._jobs:
                return
            job = _Job(self, signature, tuple(_detached(a) for a in args),
                       {k: _detached(v) for k, v in extra.items()},
                       torch.is_inference_mode_enabled(), torch.is_grad_enabled())
            self._jobs[signature] = job
        x = args[0]
        log.info("%s in the background: x %s %s, backend %s; the steps run eager until it is ready",
                 COMPILING_MESSAGE, list(x.shape), str(x.dtype).removeprefix("torch."), self.backend)
        _submit(job)

    def _compile_job(self, job: _Job) -> None:
        """On the worker thread: one compiled call on the job's inputs, then the signature is ready."""
        cache_before = _cache_counts()
        started = time.perf_counter()
        try:
            with torch.inference_mode(job.is_inference), torch.set_grad_enabled(job.is_grad):
                self._compiled_module()(*job.args, **job.kwargs)
        except Exception as exc:
            if is_out_of_memory(exc):
                log.warning("compiling the diffusion model ran out of memory; it is tried again on a later "
                            "step, which runs eager meanwhile")
                with self._lock:
                    self._jobs.pop(job.signature, None)
                return
            if self._eager_fails_too(job):       # the inputs are at fault, not the compile: the caller's
                with self._lock:                    # own eager call raised that error already
                    self._jobs.pop(job.signature, None)
                return
            self._mark_failed(job.signature, exc)
            return
        finally:
            job.args, job.kwargs = (), {}
        self._finished(job.signature, time.perf_counter() - started, cache_before,
                       "in the background; the next steps run compiled")

    def _eager_fails_too(self, job: _Job) -> bool:
        try:
            with torch.inference_mode(job.is_inference), torch.set_grad_enabled(job.is_grad):
                self.module(*job.args, **job.kwargs)
        except Exception:
            return True
        return False

    def _finished(self, signature: Signature, elapsed_s: float, cache_before: tuple[int, int],
                  how: str) -> None:
        hits, misses = (now - before for now, before in zip(_cache_counts(), cache_before))
        with self._lock:
            self._ready.add(signature)
            self.compiles += 1
            self.compile_s += elapsed_s
        folder = os.environ.get(CACHE_ENV, "its default folder")
        source = ("" if hits + misses == 0 else
                  f"; inductor cache: {hits} of {hits + misses} graphs loaded from {folder}")
        log.info("compiled the diffusion model in %.1f s (%s)%s", elapsed_s, how, source)

    def _mark_failed(self, signature: Signature, exc: Exception) -> None:
        exc = getattr(exc, "inner_exception", None) or exc       # dynamo's BackendCompilerFailed: the cause
        first_line = next(iter(str(exc).strip().splitlines()), "")
        self.failed[signature] = f"{type(exc).__name__}: {first_line}"
        log.warning("compiling the diffusion model failed (%s); this input signature runs eager from now on",
                    self.failed[signature])

    def _eager_after(self, signature: Signature, exc: Exception, x: Tensor, timesteps: Tensor, context: Tensor,
                     **extra: Any) -> Tensor:
        """The eager forward after a compiled call raised `exc`. If eager raises too, the inputs or the
        model are at fault, not the compile: that error goes to the caller and compiling stays on."""
        out = self.module(x, timesteps, context, **extra)
        with self._lock:
            self._ready.discard(signature)
        self._mark_failed(signature, exc)
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
    settings ask for it (`compile_diffusion_model`) or the MODEL does (`with_compile`), else the module
    itself. Eager, with a log line, while the model is streamed (partial load), in an OOM fall-back attempt
    (`is_fallback`) or while it carries attention/block patches."""
    manager: Any = model.manager
    settings = manager.settings
    if not (getattr(settings, "compile_diffusion_model", False) or model.options.get(COMPILE_OPTION)):
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
    use_cache_dir(getattr(settings, "compile_cache_dir", None))
    return CompiledForward.of(model.module, backend=model.options.get(BACKEND_OPTION, DEFAULT_BACKEND),
                              background=getattr(settings, "compile_in_background", True))
