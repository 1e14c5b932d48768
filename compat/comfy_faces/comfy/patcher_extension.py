"""ComfyUI's ``comfy.patcher_extension``: the callback and wrapper registries packs keep in a model's
``transformer_options`` (``{"callbacks": {call_type: {key: [fn, ...]}}, "wrappers": {...}}``), the
``CallbacksMP`` / ``WrappersMP`` names and ``WrapperExecutor`` (the chain a wrapper receives).

The registries are plain dict bookkeeping, as in ComfyUI. Plexus's sampler does not call registered
callbacks or wrappers yet (its patch points are diffusion.patch_api's); what a pack registers is kept in the
options and ignored at run time.
"""
from __future__ import annotations

from typing import Any, Callable


class CallbacksMP:
    ON_CLONE = "on_clone"
    ON_LOAD = "on_load_after"
    ON_DETACH = "on_detach_after"
    ON_CLEANUP = "on_cleanup"
    ON_PRE_RUN = "on_pre_run"
    ON_PREPARE_STATE = "on_prepare_state"
    ON_APPLY_HOOKS = "on_apply_hooks"
    ON_REGISTER_ALL_HOOK_PATCHES = "on_register_all_hook_patches"
    ON_INJECT_MODEL = "on_inject_model"
    ON_EJECT_MODEL = "on_eject_model"

    @classmethod
    def init_callbacks(cls) -> dict[str, dict[str, list[Callable]]]:
        return {}


class WrappersMP:
    OUTER_SAMPLE = "outer_sample"
    PREPARE_SAMPLING = "prepare_sampling"
    SAMPLER_SAMPLE = "sampler_sample"
    PREDICT_NOISE = "predict_noise"
    CALC_COND_BATCH = "calc_cond_batch"
    APPLY_MODEL = "apply_model"
    DIFFUSION_MODEL = "diffusion_model"

    @classmethod
    def init_wrappers(cls) -> dict[str, dict[str, list[Callable]]]:
        return {}


def _options(transformer_options: dict, is_model_options: bool, *, create: bool) -> dict:
    if not is_model_options:
        return transformer_options
    if create:
        return transformer_options.setdefault("transformer_options", {})
    return transformer_options.get("transformer_options", {})


def _add(section: str, kind: str, key: str | None, fn: Callable, transformer_options: dict,
         is_model_options: bool) -> None:
    registry = _options(transformer_options, is_model_options, create=True).setdefault(section, {})
    registry.setdefault(kind, {}).setdefault(key, []).append(fn)


def _with_key(section: str, kind: str, key: str | None, transformer_options: dict, is_model_options: bool) -> list:
    return list(_options(transformer_options, is_model_options, create=False).get(section, {}).get(kind, {})
                .get(key, []))


def _all(section: str, kind: str, transformer_options: dict, is_model_options: bool) -> list:
    found: list = []
    for fns in _options(transformer_options, is_model_options, create=False).get(section, {}).get(kind, {}).values():
        found.extend(fns)
    return found


def add_callback(call_type: str, callback: Callable, transformer_options: dict, is_model_options: bool = False) -> None:
    _add("callbacks", call_type, None, callback, transformer_options, is_model_options)


def add_callback_with_key(call_type: str, key: str, callback: Callable, transformer_options: dict,
                          is_model_options: bool = False) -> None:
    _add("callbacks", call_type, key, callback, transformer_options, is_model_options)


def get_callbacks_with_key(call_type: str, key: str, transformer_options: dict, is_model_options: bool = False) -> list:
    return _with_key("callbacks", call_type, key, transformer_options, is_model_options)


def get_all_callbacks(call_type: str, transformer_options: dict, is_model_options: bool = False) -> list:
    return _all("callbacks", call_type, transformer_options, is_model_options)


def add_wrapper(wrapper_type: str, wrapper: Callable, transformer_options: dict, is_model_options: bool = False) -> None:
    _add("wrappers", wrapper_type, None, wrapper, transformer_options, is_model_options)


def add_wrapper_with_key(wrapper_type: str, key: str, wrapper: Callable, transformer_options: dict,
                         is_model_options: bool = False) -> None:
    _add("wrappers", wrapper_type, key, wrapper, transformer_options, is_model_options)


def get_wrappers_with_key(wrapper_type: str, key: str, transformer_options: dict, is_model_options: bool = False) -> list:
    return _with_key("wrappers", wrapper_type, key, transformer_options, is_model_options)


def get_all_wrappers(wrapper_type: str, transformer_options: dict, is_model_options: bool = False) -> list:
    return _all("wrappers", wrapper_type, transformer_options, is_model_options)


class WrapperExecutor:
    """Calls ``wrappers[idx](executor, *args)`` where ``executor(*args)`` calls the next wrapper, and the last
    one reaches ``original``; ``class_obj`` is the object whose method is wrapped."""

    def __init__(self, original: Callable, class_obj: Any, wrappers: list[Callable], idx: int):
        self.original = original
        self.class_obj = class_obj
        self.wrappers = list(wrappers)
        self.idx = idx
        self.is_last = idx == len(wrappers)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if self.idx + 1 > len(self.wrappers):
            raise IndexError("WrapperExecutor: called past the last wrapper")
        return WrapperExecutor(self.original, self.class_obj, self.wrappers, self.idx + 1).execute(*args, **kwargs)

    def execute(self, *args: Any, **kwargs: Any) -> Any:
        if self.is_last:
            return self.original(*args, **kwargs)
        return self.wrappers[self.idx](self, *args, **kwargs)

    @classmethod
    def new_executor(cls, original: Callable, wrappers: list[Callable], idx: int = 0) -> WrapperExecutor:
        return cls(original, None, wrappers, idx)

    @classmethod
    def new_class_executor(cls, original: Callable, class_obj: Any, wrappers: list[Callable],
                           idx: int = 0) -> WrapperExecutor:
        return cls(original, class_obj, wrappers, idx)


class PatcherInjection:
    def __init__(self, inject: Callable, eject: Callable):
        self.inject = inject
        self.eject = eject


def copy_nested_dicts(input_dict: dict) -> dict:
    """A copy of ``input_dict`` whose nested dicts and lists are copies too."""
    copied = dict(input_dict)
    for key, value in input_dict.items():
        if isinstance(value, dict):
            copied[key] = copy_nested_dicts(value)
        elif isinstance(value, list):
            copied[key] = list(value)
    return copied


def merge_nested_dicts(dict1: dict, dict2: dict, copy_dict1: bool = True) -> dict:
    """``dict1`` with ``dict2`` merged in: nested dicts merge, lists extend, other values replace."""
    merged = copy_nested_dicts(dict1) if copy_dict1 else dict1
    for key, value in dict2.items():
        if isinstance(value, dict):
            merged[key] = merge_nested_dicts(value, merged.setdefault(key, {}))
        elif isinstance(value, list):
            merged.setdefault(key, []).extend(value)
        else:
            merged[key] = value
    return merged
