"""ComfyUI's ``comfy.hooks`` names for plugins. Plexus's HOOKS values are diffusion.hooks.HookGroup (LoRA-like
weight hooks with keyframes, made by the CreateHook* nodes); ComfyUI's other hook kinds (wrapper, object-patch,
transformer-options, injection, additional-models hooks) are not applied by Plexus's sampler, so their classes
exist for imports, annotations and subclassing and building one raises a clear error (never a hook that is
silently ignored). ``HookGroup`` is a real ordered container (add / remove / contains / clone / len), and
``isinstance(plexus_hooks, HookGroup)`` holds for Plexus's own HOOKS values."""
from __future__ import annotations

import abc
import enum
from typing import Any

from diffusion import hooks as _plexus_hooks


class EnumHookMode(enum.Enum):
    MinVram = "minvram"
    MaxSpeed = "maxspeed"


class EnumHookType(enum.Enum):
    Weight = "weight"
    ObjectPatch = "object_patch"
    AdditionalModels = "add_models"
    TransformerOptions = "transformer_options"
    Injections = "add_injections"


class EnumWeightTarget(enum.Enum):
    Model = "model"
    Clip = "clip"


class EnumHookScope(enum.Enum):
    AllConditioning = "all_conditioning"
    HookedOnly = "hooked_only"


class Hook:
    def __init__(self, *args: Any, **kwargs: Any):
        raise NotImplementedError(
            f"comfy.hooks.{type(self).__name__}: Plexus's sampler applies only its own weight hooks (HOOKS from "
            "CreateHookLora / CreateHookModelAsLora); ComfyUI hook objects are not applied")


class WeightHook(Hook):
    pass


class ObjectPatchHook(Hook):
    pass


class AdditionalModelsHook(Hook):
    pass


class TransformerOptionsHook(Hook):
    pass


class WrapperHook(TransformerOptionsHook):
    pass


class InjectionsHook(Hook):
    pass


class HookGroup(abc.ABC):
    """Hooks in order, each at most once."""

    def __init__(self) -> None:
        self.hooks: list[Any] = []

    def __len__(self) -> int:
        return len(self.hooks)

    def add(self, hook: Any) -> None:
        if hook not in self.hooks:
            self.hooks.append(hook)

    def remove(self, hook: Any) -> None:
        if hook in self.hooks:
            self.hooks.remove(hook)

    def contains(self, hook: Any) -> bool:
        return hook in self.hooks

    def clone(self) -> HookGroup:
        group = HookGroup()
        group.hooks = list(self.hooks)
        return group


HookGroup.register(_plexus_hooks.HookGroup)
