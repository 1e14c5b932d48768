"""ComfyUI's method names on the built-in nodes, so plugins can call and subclass them.

Plugins write ``nodes.CLIPTextEncode().encode(clip, text)``, ``nodes.KSampler().sample(model, seed,
...)`` or subclass a core node and override its method. Plexus's nodes are written with one typed
``run`` method; this module gives each built-in node ComfyUI's method for it, with ComfyUI's name and
parameter order (from ``nodes/data/comfy_methods.json``, extracted from ComfyUI's sources by
``scripts/extract_comfy_methods.py``), calling ``run`` with the same arguments by name, and sets
``FUNCTION`` to that name so that the executor calls the method a subclass may override.

A node whose ``run`` needs an argument ComfyUI's method does not have keeps ``FUNCTION = "run"``
(:func:`attach` returns False). A class that defines the method itself (SaveImage's ``save_images``)
keeps its own.
"""
from __future__ import annotations

import functools
import inspect
import json
from pathlib import Path
from typing import Any

TABLE_PATH = Path(__file__).resolve().parent / "data" / "comfy_methods.json"


@functools.lru_cache(maxsize=1)
def table() -> dict[str, dict[str, Any]]:
    """``{class_type: {"function", "params", "defaults", "var_keyword"}}`` (read on first use)."""
    return json.loads(TABLE_PATH.read_text(encoding="utf-8"))


def comfy_method(class_type: str) -> dict[str, Any] | None:
    return table().get(class_type)


def _run_parameters(cls: type) -> tuple[list[inspect.Parameter], bool]:
    signature = inspect.signature(cls.run)
    params = [p for name, p in signature.parameters.items() if name != "self"
              and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
    takes_any = any(p.kind == p.VAR_KEYWORD for p in signature.parameters.values())
    return params, takes_any


def make_method(cls: type, entry: dict[str, Any]) -> Any | None:
    """ComfyUI's method for ``cls`` (a function taking ``self``), or None when ``run`` cannot be
    called from ComfyUI's parameters."""
    names: list[str] = list(entry["params"])
    defaults: dict[str, Any] = dict(entry.get("defaults") or {})
    run_params, run_takes_any = _run_parameters(cls)
    run_names = {p.name for p in run_params}
    if any(p.name not in names and p.default is inspect.Parameter.empty for p in run_params):
        return None
    parameters = [inspect.Parameter("self", inspect.Parameter.POSITIONAL_OR_KEYWORD)]
    for name in names:
        default = defaults.get(name, inspect.Parameter.empty) if name in defaults else inspect.Parameter.empty
        if default is inspect.Parameter.empty and parameters[-1].default is not inspect.Parameter.empty:
            default = None                        # keep the signature valid after a defaulted parameter
        parameters.append(inspect.Parameter(name, inspect.Parameter.POSITIONAL_OR_KEYWORD, default=default))
    own = [p for p in run_params if p.name not in names]          # Plexus-only inputs, by keyword
    parameters += [inspect.Parameter(p.name, inspect.Parameter.KEYWORD_ONLY, default=p.default) for p in own]
    if entry.get("var_keyword"):
        parameters.append(inspect.Parameter("kwargs", inspect.Parameter.VAR_KEYWORD))
    signature = inspect.Signature(parameters)
    # a ComfyUI argument run() lacks is dropped; run's own defaults apply when ComfyUI has none
    passed = [name for name in names if name in run_names or run_takes_any] + [p.name for p in own]

    def method(self, *args: Any, **kwargs: Any) -> Any:
        bound = signature.bind(self, *args, **kwargs)
        values = dict(bound.arguments)
        extra = values.pop("kwargs", {}) if entry.get("var_keyword") else {}
        call = {name: values[name] for name in passed if name in values}
        for name in passed:
            if name not in call and name in defaults:
                call[name] = defaults[name]
        if run_takes_any:
            call.update(extra)
        else:
            call.update({k: v for k, v in extra.items() if k in run_names})
        return self.run(**call)

    method.__name__ = method.__qualname__ = entry["function"]
    method.__signature__ = signature  # type: ignore[attr-defined]
    method.__doc__ = f"ComfyUI's {entry['function']}() of {cls.__name__}: calls run() with the same arguments."
    return method


# ComfyUI's class-level option lists on core nodes, which packs read to build their own inputs
# (``nodes.ImageScale.upscale_methods``): attribute -> the input whose options it lists
OPTION_ATTRIBUTES = {
    "LatentUpscale": {"upscale_methods": "upscale_method", "crop_methods": "crop"},
    "LatentUpscaleBy": {"upscale_methods": "upscale_method"},
    "ImageScale": {"upscale_methods": "upscale_method", "crop_methods": "crop"},
    "ImageScaleBy": {"upscale_methods": "upscale_method"},
    "LoadImageMask": {"_color_channels": "channel"},
}


def attach_option_lists(cls: type, class_type: str) -> None:
    """Set ComfyUI's option-list class attributes of ``class_type`` from the node's own input options."""
    wanted = {attr: input_name for attr, input_name in OPTION_ATTRIBUTES.get(class_type, {}).items()
              if attr not in vars(cls)}
    if not wanted:
        return
    spec = cls.INPUT_TYPES()
    inputs = {**spec.get("required", {}), **spec.get("optional", {})}
    for attr, input_name in wanted.items():
        options = inputs.get(input_name, (None,))[0]
        if isinstance(options, (list, tuple)):
            setattr(cls, attr, list(options))


def attach(cls: type, class_type: str) -> bool:
    """Give a built-in node class ComfyUI's method for ``class_type`` and point ``FUNCTION`` at it.
    Returns whether the class now answers ComfyUI's method name."""
    attach_option_lists(cls, class_type)
    entry = comfy_method(class_type)
    if entry is None or getattr(cls, "FUNCTION", None) != "run" or not callable(getattr(cls, "run", None)):
        return entry is not None and getattr(cls, "FUNCTION", None) == (entry or {}).get("function")
    name = entry["function"]
    if name != "run" and name not in vars(cls):
        method = make_method(cls, entry)
        if method is None:
            return False
        setattr(cls, name, method)
    cls.FUNCTION = name
    return True
