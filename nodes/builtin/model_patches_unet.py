"""UNet patch nodes (ComfyUI's specs and FUNCTION names): FreeU, FreeU_V2; the work is in diffusion.freeu."""
from __future__ import annotations

from diffusion import freeu
from nodes.spec import Float, Input, node


def _function(name: str):
    """ComfyUI's FUNCTION name for a node class (plugins call it), alongside `run`."""
    def decorate(cls):
        cls.FUNCTION = name
        setattr(cls, name, cls.run)
        return cls
    return decorate


def _factor(default: float) -> Float:
    return Float(default, min=0.0, max=10.0, step=0.01)


@_function("patch")
@node("FreeU", category="model_patches/unet", display_name="FreeU")
class FreeU:
    model = Input("MODEL")
    b1, b2, s1, s2 = _factor(1.1), _factor(1.2), _factor(0.9), _factor(0.2)
    RETURNS = ("MODEL",)

    def run(self, model, b1: float, b2: float, s1: float, s2: float) -> tuple:
        return (freeu.with_freeu(model, b1, b2, s1, s2, version=1),)


@_function("patch")
@node("FreeU_V2", category="model_patches/unet", display_name="FreeU_V2")
class FreeU_V2:
    model = Input("MODEL")
    b1, b2, s1, s2 = _factor(1.3), _factor(1.4), _factor(0.9), _factor(0.2)
    RETURNS = ("MODEL",)

    def run(self, model, b1: float, b2: float, s1: float, s2: float) -> tuple:
        return (freeu.with_freeu(model, b1, b2, s1, s2, version=2),)
