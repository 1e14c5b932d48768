"""The Plexus DeepCache node (no ComfyUI core node has this name): one call into diffusion.deep_cache."""
from __future__ import annotations

from diffusion import deep_cache
from nodes.spec import Float, Input, Int, Output, node


@node("PlexusDeepCache", category="advanced/model", display_name="DeepCache (Plexus)", experimental=True,
      description="Reuses the UNet's deep features between sampling steps and recomputes only the shallow "
                  "blocks (DeepCache, arXiv:2312.00858). SD1.x, SD2.x and SDXL UNets.")
class PlexusDeepCache:
    model = Input("MODEL", tooltip="The UNet model to add DeepCache to.")
    cache_interval = Int(3, min=1, max=1000, tooltip="One full model evaluation every this many; 1 turns it off.")
    cache_depth = Int(1, min=1, max=12, tooltip="Shallow input/output blocks recomputed on cached evaluations "
                                                "(more: closer to the uncached image, less speed-up).")
    start_percent = Float(0.0, min=0.0, max=1.0, step=0.01, tooltip="Sampling progress at which caching begins.")
    end_percent = Float(1.0, min=0.0, max=1.0, step=0.01, tooltip="Sampling progress after which every step is full.")
    RETURNS = (Output("MODEL", tooltip="The model with DeepCache."),)

    def run(self, model, cache_interval: int, cache_depth: int, start_percent: float, end_percent: float) -> tuple:
        settings = deep_cache.DeepCacheSettings(cache_interval, cache_depth, start_percent, end_percent)
        return (deep_cache.with_deep_cache(model, settings),)
