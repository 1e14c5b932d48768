"""More UNet patch nodes (ComfyUI 0.3.64's specs): HyperTile, TomePatchModel. One call each into diffusion."""
from __future__ import annotations

from diffusion import hypertile, token_merging
from nodes.spec import Boolean, Float, Input, Int, node


@node("HyperTile", category="model_patches/unet", function="patch")
class HyperTile:
    model = Input("MODEL")
    tile_size = Int(256, min=1, max=2048)
    swap_size = Int(2, min=1, max=128)
    max_depth = Int(0, min=0, max=10)
    scale_depth = Boolean(False)
    RETURNS = ("MODEL",)

    def run(self, model, tile_size: int, swap_size: int, max_depth: int, scale_depth: bool) -> tuple:
        return (hypertile.with_hypertile(model, tile_size, swap_size, max_depth, scale_depth),)


@node("TomePatchModel", category="model_patches/unet", function="patch")
class TomePatchModel:
    model = Input("MODEL")
    ratio = Float(0.3, min=0.0, max=1.0, step=0.01)
    RETURNS = ("MODEL",)

    def run(self, model, ratio: float) -> tuple:
        return (token_merging.with_token_merging(model, ratio),)
