"""Step caching (ComfyUI's EasyCache and LazyCache nodes): skip a model evaluation when the output is
predicted to change little, and reuse the last computed output-minus-input difference instead.

    twin = with_step_cache(model, StepCacheSettings("EasyCache", reuse_threshold=0.2))
    run = StepCacheRun.for_model(twin)           # run_sampling: fresh state for each sampling run

The idea (EasyCache: Zhou et al. 2025, "Less is Enough: Training-Free Video Diffusion Acceleration via
Runtime-Adaptive Caching", arXiv:2507.02860): between neighbouring steps the model's transformation
`output - input` changes slowly, and the ratio k = |Δoutput| / |Δinput| of the last two computed steps
predicts the next output change from the input change alone. Each step adds
`k * mean|Δinput| / mean|output_prev|` to an accumulated relative change; while the sum stays under
`reuse_threshold` the step is not computed and returns `input + (output - input)` of the last computed
step; once it reaches the threshold the step is computed and the sum starts again from zero. Only steps
with sigma at or below the sigma of `start_percent` are candidates; from the sigma of `end_percent` on,
every step is computed. The changes are measured on every 8th pixel in both directions (mean absolute
values), as ComfyUI does.

- "EasyCache" works on the diffusion model's own call (scaled input, raw prediction), per conditioning
  entry: the skip decision is made on the batch holding the first entry it saw (ComfyUI's
  `first_cond_uuid`), and every other batch of that step follows the decision; each entry keeps its own
  difference (ComfyUI 0.3.64 adds every entry's difference to the whole batch on a skipped step; here each
  entry's slice gets its own, which is what the method describes).
- "LazyCache" works on the guided denoiser (noisy latent in, guided x0 out), the whole batch at once:
  it works with every model and guidance, at the cost of caching the guided result.

A change of the latent's shape, dtype or device resets the state (with a warning), as in ComfyUI. After
each run a log line says how many model evaluations were skipped.
"""
from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

log = logging.getLogger("plexus.diffusion")

OPTION = "step_cache"                    # DiffusionModel option holding the StepCacheSettings
KINDS = ("EasyCache", "LazyCache")
SUBSAMPLE = 8                            # every 8th pixel in both directions (ComfyUI's subsample_factor)


@dataclass(frozen=True)
class StepCacheSettings:
    kind: str                            # one of KINDS
    reuse_threshold: float = 0.2
    start_percent: float = 0.15
    end_percent: float = 0.95
    is_verbose: bool = False
    subsample: int = SUBSAMPLE

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"unknown step cache {self.kind!r}; choose one of {KINDS}")


def with_step_cache(model: Any, settings: StepCacheSettings) -> Any:
    """A clone of the MODEL whose sampling runs use the step cache."""
    twin = model.clone()
    twin.options[OPTION] = settings
    return twin


def _subsample(x: Tensor, step: int) -> Tensor:
    return x[..., ::step, ::step] if step > 1 else x


def _mean_abs(x: Tensor) -> float:
    return float(x.float().abs().mean())


@dataclass
class _ChangeTracker:
    """The accumulated-change rule shared by both kinds (see the module notes)."""
    settings: StepCacheSettings
    start_sigma: float
    end_sigma: float
    x_prev: Tensor | None = None                 # subsampled input of the last computed step
    out_prev: Tensor | None = None               # its subsampled output
    out_prev_norm: float | None = None           # mean |output| of the last computed step (all of it)
    rate: float | None = None                    # k = |Δoutput| / |Δinput| of the last two computed steps
    accumulated: float = 0.0
    input_change: float | None = None
    metadata: tuple | None = None
    skipped: int = 0
    evaluations: int = 0

    def is_past_end(self, sigma: float) -> bool:
        return sigma <= self.end_sigma

    def is_candidate(self, sigma: float) -> bool:
        return sigma <= self.start_sigma

    def check_metadata(self, x: Tensor, shape: Sequence[int], name: str) -> bool:
        """Whether the state was reset because the latent's shape, dtype or device changed."""
        metadata = (x.device, x.dtype, tuple(shape))
        is_changed = self.metadata is not None and metadata != self.metadata
        if is_changed:
            log.warning("%s: the latent's shape, dtype or device changed; its cache starts again", name)
            self.reset()
        self.metadata = metadata
        return is_changed

    def reset(self) -> None:
        self.x_prev = self.out_prev = self.out_prev_norm = self.rate = self.input_change = None
        self.accumulated = 0.0
        self.metadata = None

    def decide_skip(self, x_sub: Tensor) -> bool:
        """Called for a candidate step before it is computed: whether to reuse the cache instead."""
        self.input_change = None
        if self.x_prev is not None:
            self.input_change = _mean_abs(x_sub - self.x_prev)
        if self.out_prev_norm is None or self.rate is None or self.input_change is None:
            return False
        self.accumulated += self.rate * self.input_change / max(self.out_prev_norm, 1e-12)
        if self.accumulated < self.settings.reuse_threshold:
            if self.settings.is_verbose:
                log.info("%s: skipping a step (accumulated change %.4f < %.4f)", self.settings.kind,
                         self.accumulated, self.settings.reuse_threshold)
            return True
        if self.settings.is_verbose:
            log.info("%s: computing a step (accumulated change %.4f)", self.settings.kind, self.accumulated)
        self.accumulated = 0.0
        return False

    def record(self, x_sub: Tensor, out_sub: Tensor, out: Tensor) -> None:
        """After a computed step: the new rate and the references for the next step."""
        if self.out_prev is not None and self.input_change is not None and self.input_change > 0:
            self.rate = _mean_abs(out_sub - self.out_prev) / self.input_change
        self.x_prev, self.out_prev = x_sub.clone(), out_sub.clone()
        self.out_prev_norm = _mean_abs(out)


class StepCacheRun:
    """The state of one sampling run: `wrap_model_function` (EasyCache) and `wrap_denoiser` (both)."""

    def __init__(self, settings: StepCacheSettings, start_sigma: float, end_sigma: float) -> None:
        self.settings = settings
        self.tracker = _ChangeTracker(settings, start_sigma, end_sigma)
        # EasyCache
        self.first_entry: Any = None
        self.is_skipping_step = False
        self.diffs: dict[Any, Tensor] = {}
        # LazyCache
        self.diff: Tensor | None = None
        self.uncond_diff: Tensor | None = None

    @classmethod
    def for_model(cls, model: Any) -> StepCacheRun | None:
        settings = model.options.get(OPTION)
        if settings is None:
            return None
        ms = model.model_sampling
        run = cls(settings, float(ms.percent_to_sigma(settings.start_percent)),
                  float(ms.percent_to_sigma(settings.end_percent)))
        log.info("%s enabled - threshold %s, start_percent %s, end_percent %s", settings.kind,
                 settings.reuse_threshold, settings.start_percent, settings.end_percent)
        return run

    @property
    def is_easycache(self) -> bool:
        return self.settings.kind == "EasyCache"

    def summary(self) -> str:
        t = self.tracker
        speedup = t.evaluations / max(1, t.evaluations - t.skipped)
        return f"{self.settings.kind} - skipped {t.skipped}/{t.evaluations} steps ({speedup:.2f}x speedup)"

    # --- EasyCache: around the diffusion model's call ------------------------------------------------

    def wrap_model_function(self, fn: Callable[[Tensor, Tensor, dict], Tensor]) -> Callable:
        if not self.is_easycache:
            return fn

        def cached(x: Tensor, timestep: Tensor, inputs: dict) -> Tensor:
            options = inputs.get("transformer_options") or {}
            sigmas = options.get("sigmas")
            entries = list(options.get("uuids") or range(len(options.get("cond_or_uncond") or [0])))
            if sigmas is None or self.tracker.is_past_end(float(sigmas[0])):
                return fn(x, timestep, inputs)
            return self._easycache_call(fn, x, timestep, inputs, float(sigmas[0]), entries)
        return cached

    def _first_slice(self, x: Tensor, entries: list) -> Tensor:
        per = x.shape[0] // len(entries)
        i = entries.index(self.first_entry)
        return _subsample(x[i * per:(i + 1) * per], self.settings.subsample)

    def _easycache_call(self, fn, x: Tensor, timestep: Tensor, inputs: dict, sigma: float, entries: list):
        t = self.tracker
        has_first = self.first_entry in entries
        if t.is_candidate(sigma):
            if t.check_metadata(x, x.shape[1:], self.settings.kind):
                self.first_entry, self.diffs, self.is_skipping_step = None, {}, False
                has_first = False
            if self.is_skipping_step:
                return self._apply_diffs(x, entries)
            if self.first_entry is None:
                self.first_entry = entries[0]
                has_first = True
            if has_first and t.decide_skip(self._first_slice(x, entries)):
                self.is_skipping_step = True
                return self._apply_diffs(x, entries)
        else:
            t.input_change = None
        out = fn(x, timestep, inputs)
        per = x.shape[0] // len(entries)
        diff = out - x
        for i, entry in enumerate(entries):
            self.diffs[entry] = diff[i * per:(i + 1) * per]
        if has_first:
            t.record(self._first_slice(x, entries), self._first_slice(out, entries), out)
        return out

    def _apply_diffs(self, x: Tensor, entries: list) -> Tensor:
        if any(e not in self.diffs for e in entries):         # an entry never computed: nothing to reuse
            raise RuntimeError("EasyCache: a conditioning entry has no cached step")
        if self.first_entry in entries:
            self.tracker.skipped += 1
        per = x.shape[0] // len(entries)
        return torch.cat([x[i * per:(i + 1) * per] + self.diffs[e].to(x) for i, e in enumerate(entries)])

    # --- both: around the guided denoiser ---------------------------------------------------------------

    def wrap_denoiser(self, guider: Any) -> Any:
        return _CachedDenoiser(self, guider)

    def lazy_call(self, denoise: Callable[[], Tensor | tuple[Tensor, Tensor]], x: Tensor, sigma: Tensor,
                  is_pair: bool):
        """LazyCache around one guided denoiser call (`is_pair`: it returns (x0, uncond x0), CFG++)."""
        t = self.tracker
        s = float(sigma.reshape(-1)[0])
        t.evaluations += 1
        if t.is_past_end(s):
            return denoise()
        x_sub = _subsample(x, self.settings.subsample)
        if t.is_candidate(s):
            if t.check_metadata(x, x.shape, self.settings.kind):
                self.diff = self.uncond_diff = None
            if self.diff is not None and t.decide_skip(x_sub) and (not is_pair or self.uncond_diff is not None):
                t.skipped += 1
                x0 = x + self.diff.to(x)
                return (x0, x + self.uncond_diff.to(x)) if is_pair else x0
        else:
            t.input_change = None
        result = denoise()
        x0, uncond = result if is_pair else (result, None)
        self.diff = x0 - x
        self.uncond_diff = None if uncond is None else uncond - x
        t.record(x_sub, _subsample(x0, self.settings.subsample), x0)
        return result


@dataclass
class _CachedDenoiser:
    """A guided denoiser with the step cache in front: LazyCache decides here; EasyCache only learns
    that a new step begins (its skip decision is made per step, in the model call)."""
    run: StepCacheRun
    guider: Any

    def _call(self, x: Tensor, sigma: Tensor, is_pair: bool):
        fn = self.guider.with_uncond if is_pair else self.guider
        if self.run.is_easycache:
            self.run.is_skipping_step = False
            self.run.tracker.evaluations += 1
            return fn(x, sigma)
        return self.run.lazy_call(lambda: fn(x, sigma), x, sigma, is_pair)

    def __call__(self, x: Tensor, sigma: Tensor) -> Tensor:
        return self._call(x, sigma, is_pair=False)

    def with_uncond(self, x: Tensor, sigma: Tensor) -> tuple[Tensor, Tensor]:
        return self._call(x, sigma, is_pair=True)

    def __getattr__(self, name: str) -> Any:          # the guider's other attributes (cfg, positive, ...)
        return getattr(self.guider, name)


@contextlib.contextmanager
def reporting(run: StepCacheRun | None) -> Iterator[None]:
    """Around one sampling run: the log line saying how many steps the cache skipped."""
    try:
        yield
    finally:
        if run is not None:
            log.info("%s", run.summary())
