"""Step-cache nodes (ComfyUI's EasyCache and LazyCache specs) and TorchCompileModel: one call each into
diffusion.step_cache / diffusion.compile."""
from __future__ import annotations

from diffusion import compile, step_cache
from nodes.spec import Boolean, Combo, Float, Input, Output, node


@node("EasyCache", category="advanced/debug/model", display_name="EasyCache", experimental=True,
      description="Skips diffusion-model calls whose output is predicted to change little (EasyCache).",
      function="execute")
class EasyCache:
    model = Input("MODEL", tooltip="The model to add EasyCache to.")
    reuse_threshold = Float(0.2, min=0.0, max=3.0, step=0.01, tooltip="The threshold for reusing cached steps.")
    start_percent = Float(0.15, min=0.0, max=1.0, step=0.01,
                          tooltip="The relative sampling step to begin use of EasyCache.")
    end_percent = Float(0.95, min=0.0, max=1.0, step=0.01, tooltip="The relative sampling step to end use of EasyCache.")
    verbose = Boolean(False, tooltip="Whether to log verbose information.")
    RETURNS = (Output("MODEL", tooltip="The model with EasyCache."),)

    def run(self, model, reuse_threshold: float, start_percent: float, end_percent: float, verbose: bool) -> tuple:
        settings = step_cache.StepCacheSettings("EasyCache", reuse_threshold, start_percent, end_percent, verbose)
        return (step_cache.with_step_cache(model, settings),)


@node("LazyCache", category="advanced/debug/model", display_name="LazyCache", experimental=True,
      description="Skips guided denoiser steps whose result is predicted to change little (EasyCache's rule "
                  "applied to the whole guided step; works with every model).",
      function="execute")
class LazyCache:
    model = Input("MODEL", tooltip="The model to add LazyCache to.")
    reuse_threshold = Float(0.2, min=0.0, max=3.0, step=0.01, tooltip="The threshold for reusing cached steps.")
    start_percent = Float(0.15, min=0.0, max=1.0, step=0.01,
                          tooltip="The relative sampling step to begin use of LazyCache.")
    end_percent = Float(0.95, min=0.0, max=1.0, step=0.01, tooltip="The relative sampling step to end use of LazyCache.")
    verbose = Boolean(False, tooltip="Whether to log verbose information.")
    RETURNS = (Output("MODEL", tooltip="The model with LazyCache."),)

    def run(self, model, reuse_threshold: float, start_percent: float, end_percent: float, verbose: bool) -> tuple:
        settings = step_cache.StepCacheSettings("LazyCache", reuse_threshold, start_percent, end_percent, verbose)
        return (step_cache.with_step_cache(model, settings),)


@node("TorchCompileModel", category="_for_testing", experimental=True, function="execute")
class TorchCompileModel:
    """The MODEL's sampling runs through torch.compile (diffusion.compile: compiled on first use per input
    shape, eager when compiling fails or the model is streamed, patched or in an OOM fall-back)."""
    model = Input("MODEL")
    backend = Combo(["inductor", "cudagraphs"])
    RETURNS = ("MODEL",)

    def run(self, model, backend: str) -> tuple:
        return (compile.with_compile(model, backend),)
