"""DeepCache-style block reuse for LDM UNets (the Plexus DeepCache node; ComfyUI has no core equivalent).

    twin = with_deep_cache(model, DeepCacheSettings(cache_interval=3, cache_depth=1))
    with reused_blocks(model, unet) as unet:       # run_sampling: fresh state for each sampling run
        ...

Every `cache_interval`-th model evaluation inside the [start_percent, end_percent] window is a full
forward that keeps the UNet's deep feature (models/unet_deep_cache.py); the evaluations between run
only the `cache_depth` shallow input and output blocks on it (Ma et al. 2023, arXiv:2312.00858, uniform
1:N strategy). Outside the window every evaluation is full. An evaluation is one new timestep value, so
a sampler with two model calls per step (Heun) counts two; the calls within one timestep (the CFG pair
split into batches) each keep their own feature, keyed by call order and shape.

Calls that carry model patches, ControlNet residuals or other keyword inputs run the plain forward and
keep nothing; a model that is not an LDM UNet runs unchanged (a warning says so). After each run a log
line says how many evaluations reused the deep feature.
"""
from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from models import unet_patches
from models.unet_deep_cache import forward_parts, max_depth

log = logging.getLogger("plexus.diffusion")

OPTION = "deep_cache"                    # DiffusionModel option holding the DeepCacheSettings


@dataclass(frozen=True)
class DeepCacheSettings:
    cache_interval: int = 3              # one full evaluation every N (1: every evaluation is full)
    cache_depth: int = 1                 # shallow input/output blocks that run on cached evaluations
    start_percent: float = 0.0
    end_percent: float = 1.0

    def __post_init__(self) -> None:
        if self.cache_interval < 1 or self.cache_depth < 1:
            raise ValueError("cache_interval and cache_depth must be at least 1")


def with_deep_cache(model: Any, settings: DeepCacheSettings) -> Any:
    """A clone of the MODEL whose sampling runs reuse the UNet's deep features."""
    twin = model.clone()
    twin.options[OPTION] = settings
    return twin


class DeepCacheForward:
    """What run_sampling calls as the UNet: `unet`'s forward, with cached evaluations in the window."""

    def __init__(self, unet: Any, module: Any, settings: DeepCacheSettings, start_t: float, end_t: float) -> None:
        self.unet = unet                 # the plain or compiled forward, for calls that cannot be cached
        self.module = module             # the UNetModel (also what control/patched calls use, as eager)
        self.settings = settings
        self.depth = min(settings.cache_depth, max_depth(module))
        self.start_t, self.end_t = start_t, end_t    # model timesteps: high noise = large t
        self.last_t: float | None = None
        self.window_index = -1                       # evaluations inside the window so far
        self.is_full_step = True
        self.call_in_step = 0
        self.features: dict[tuple, Tensor] = {}
        self.evaluations = 0
        self.reused = 0

    def _begin_step(self, t: float) -> None:
        self.last_t, self.call_in_step = t, 0
        self.evaluations += 1
        if self.end_t <= t <= self.start_t:
            self.window_index += 1
            self.is_full_step = self.window_index % self.settings.cache_interval == 0
        else:
            self.is_full_step = True

    def __call__(self, x: Tensor, timesteps: Tensor, context: Tensor, y: Tensor | None = None,
                 **extra: Any) -> Tensor:
        if extra or unet_patches.active() is not None:
            return self.unet(x, timesteps, context, **({} if y is None else {"y": y}), **extra)
        t = float(timesteps.reshape(-1)[0])
        if t != self.last_t:
            self._begin_step(t)
        key = (self.call_in_step, tuple(x.shape), tuple(context.shape))
        self.call_in_step += 1
        deep = None if self.is_full_step else self.features.get(key)
        out, feature = forward_parts(self.module, x, timesteps, context, depth=self.depth, y=y, deep=deep)
        if deep is None:
            self.features[key] = feature
        else:
            self.reused += 1
        return out

    def summary(self) -> str:
        calls = self.evaluations
        return (f"DeepCache - {self.reused} cached calls over {calls} evaluations "
                f"(interval {self.settings.cache_interval}, depth {self.depth})")


@contextlib.contextmanager
def reused_blocks(model: Any, unet: Any) -> Iterator[Any]:
    """`unet` itself, or its DeepCacheForward when the MODEL asks for it; logs the summary after the run."""
    settings = model.options.get(OPTION)
    if settings is None:
        yield unet
        return
    module = model.module
    if not hasattr(module, "input_blocks") or not hasattr(module, "output_blocks"):
        log.warning("DeepCache works on LDM UNets only (SD1.x, SD2.x, SDXL); %s runs uncached",
                    type(module).__name__)
        yield unet
        return
    ms = model.model_sampling
    start_t = math.inf if settings.start_percent <= 0 else _timestep_at(ms, settings.start_percent)
    end_t = -math.inf if settings.end_percent >= 1 else _timestep_at(ms, settings.end_percent)
    forward = DeepCacheForward(unet, module, settings, start_t, end_t)
    try:
        yield forward
    finally:
        log.info(forward.summary())


def _timestep_at(model_sampling: Any, percent: float) -> float:
    return float(model_sampling.timestep(torch.tensor([float(model_sampling.percent_to_sigma(percent))]))[0])
