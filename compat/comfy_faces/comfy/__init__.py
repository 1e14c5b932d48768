"""ComfyUI's ``comfy`` package for plugins: each submodule is a thin face over a Plexus API
(``comfy.utils`` over imaging / models.files / the node context, ``comfy.model_management`` over the
ModelManager, ``comfy.samplers`` / ``comfy.sample`` over sampling and diffusion.ksampler, ...)."""

import importlib as _importlib


def __getattr__(name: str):
    """``import comfy`` then ``comfy.samplers.KSampler``: ComfyUI has imported its submodules by the time
    packs run, so an attribute that names a submodule imports it here."""
    if name.startswith("_"):
        raise AttributeError(name)
    try:
        return _importlib.import_module(f"{__name__}.{name}")
    except ModuleNotFoundError as exc:
        if exc.name != f"{__name__}.{name}":
            raise
        raise AttributeError(f"module 'comfy' has no attribute {name!r}") from None
