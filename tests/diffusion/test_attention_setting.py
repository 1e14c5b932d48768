"""`--attention`: the loaders build models with the start-up choice, and the sampler's out-of-memory
fall-back to sub-quadratic attention puts that choice back afterwards."""
from __future__ import annotations

import torch

from diffusion import conditioning, ksampler, loading
from model_management import MemorySettings, ModelManager
from models.attention import attention_backend_name, attention_sliced, attention_sub_quadratic

SAMPLE_ARGS = {"seed": 5, "steps": 2, "cfg": 5.0, "sampler_name": "euler", "scheduler": "normal"}


def layers_using(module: torch.nn.Module) -> set:
    return {m.attention_fn for m in module.modules() if hasattr(m, "attention_fn")}


def test_loaders_build_models_with_the_start_up_backend(tiny_sd15):
    model, _, vae = loading.load_checkpoint_file(tiny_sd15, ModelManager(MemorySettings(force_fp32=True)))
    assert attention_backend_name(model.module) == "auto" == attention_backend_name(vae.module)
    manager = ModelManager(MemorySettings(force_fp32=True, attention_backend="sliced", device="cpu"))
    model, _, vae = loading.load_checkpoint_file(tiny_sd15, manager)
    assert attention_backend_name(model.module) == "sliced" == attention_backend_name(vae.module)
    assert layers_using(model.module) == {attention_sliced} == layers_using(vae.module)
    assert "attention: sliced" in manager.startup_lines()
    assert "convolutions: weights packed once per sampling run" in manager.startup_lines()
    unpacked = ModelManager(MemorySettings(force_fp32=True, prepack_weights=False, device="cpu"))
    assert "convolutions: plain weights (--disable-weight-prepack)" in unpacked.startup_lines()


def test_out_of_memory_fallback_restores_the_configured_backend(tiny_sd15):
    manager = ModelManager(MemorySettings(force_fp32=True, attention_backend="sliced"))
    model, clip, _ = loading.load_checkpoint_file(tiny_sd15, manager)
    seen: list[set] = []
    twin = model.clone()

    def out_of_memory_once(apply_model, args):
        seen.append(layers_using(model.module))
        if len(seen) == 1:
            raise torch.OutOfMemoryError("out of memory (simulated)")
        return apply_model(args["input"], args["timestep"], args["c"])
    twin.set_model_unet_function_wrapper(out_of_memory_once)
    positive, negative = conditioning.encode_text(clip, "a cat"), conditioning.encode_text(clip, "a dog")
    result = ksampler.ksample(twin, {"samples": torch.zeros(1, 4, 8, 8)}, positive, negative, **SAMPLE_ARGS)
    assert torch.isfinite(result["samples"]).all()
    assert seen[0] == {attention_sliced} and seen[1] == {attention_sub_quadratic}
    assert attention_backend_name(model.module) == "sliced"
    assert layers_using(model.module) == {attention_sliced}
