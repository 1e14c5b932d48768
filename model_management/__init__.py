"""Devices, dtype policy, the loaded-model registry, partial loading / streaming, OOM fall-back.

Imports only torch and psutil; sees `nn.Module`s and :class:`ModelHandle`s, never model classes.
Nothing runs at import: devices are probed when a :class:`ModelManager` first needs them.

How the rest of Plexus uses it::

    # main.py
    manager = ModelManager(MemorySettings(vram_mode=VramMode.LOW, vram_budget_bytes=gib_to_bytes(4)))
    log.info("\n".join(manager.startup_lines()))

    # a loader node: reuse a model still in RAM, else build it (memory-mapped weights) and register it
    unet = manager.find(key) or manager.register(
        ModelHandle(module, name="sd15 unet", source_key=key),
        dtype=choose_dtype(ModelPart.DIFFUSION, caps, settings).dtype, reload=read_state_dict_again)
    # a LoRA node: patches go on a clone, never on the handle it was given
    patched = unet.clone(); patched.add_patches({"input_blocks.1.1.proj_in.weight": fn}, strength=0.8)

    # a sampler node: load before the call, retry in lower memory modes on OOM
    def attempt(options):
        backend = options.get("attention_backend", "auto")
        work = estimate_working_memory(latent.shape, dtype, attention_backend=backend)
        manager.load_models_for([patched], work, vram_mode=options.get("vram_mode"))
        return sample(patched.module, ..., options)
    with_oom_fallbacks(attempt, SAMPLING_FALLBACKS, free=manager.free, what="KSampler #3")

    manager.report()   # /system_stats;  manager.free()  # /free;  manager.resident()  # routing

Rules for modules handed to a handle: create the handle once the weights are in the module, and
never call `.to()` on it afterwards: the manager moves, casts and patches weights itself.
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
                                     "GIB",
                                     "SAMPLING_FALLBACKS",
                                     "VAE_FALLBACKS",
                                     "DtypeChoice",
                                     "Fallback",
                                     "MemorySettings",
                                     "MemorySettingsError",
                                     "ModelDroppedError",
                                     "ModelHandle",
                                     "ModelManager",
                                     "ModelPart",
                                     "ModelRecord",
                                     "OutOfMemoryAfterFallbacks",
                                     "Placement",
                                     "VramMode",
                                     "WeightPatch",
                                     "apply_patches",
                                     "choose_attention_upcast",
                                     "choose_dtype",
                                     "choose_dtypes",
                                     "estimate_working_memory",
                                     "gib_to_bytes",
                                     "is_out_of_memory",
                                     "with_oom_fallbacks",
]
