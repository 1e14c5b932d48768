"""Devices, dtype policy, the loaded-model registry, partial loading / streaming, OOM fall-back.

Imports only torch and psutil; sees `nn.Module`s and :class:`ModelHandle`s, never model classes.
Nothing runs at import: devices are probed when a :class:`ModelManager` first needs them.
"""
from model_management.dtypes import (
                                     DtypeChoice,
                                     ModelPart,
                                     choose_attention_upcast,
                                     choose_dtype,
                                     choose_dtypes,
)
from model_management.estimates import estimate_working_memory
from model_management.handle import ModelHandle, WeightPatch, apply_patches
from model_management.oom import (
                                     SAMPLING_FALLBACKS,
                                     VAE_FALLBACKS,
                                     Fallback,
                                     OutOfMemoryAfterFallbacks,
                                     is_out_of_memory,
                                     with_oom_fallbacks,
)
from model_management.registry import ModelDroppedError, ModelManager, ModelRecord, Placement
from model_management.settings import GIB, MemorySettings, MemorySettingsError, VramMode, gib_to_bytes

__all__ = [
    "DtypeChoice", "ModelPart", "choose_attention_upcast", "choose_dtype", "choose_dtypes",
    "estimate_working_memory", "ModelHandle", "WeightPatch", "apply_patches",
    "SAMPLING_FALLBACKS", "VAE_FALLBACKS", "Fallback", "OutOfMemoryAfterFallbacks", "is_out_of_memory",
    "with_oom_fallbacks", "ModelDroppedError", "ModelManager", "ModelRecord", "Placement",
    "GIB", "MemorySettings", "MemorySettingsError", "VramMode", "gib_to_bytes",
]
