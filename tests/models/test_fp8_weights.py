"""UNETLoader's fp8 `weight_dtype` (models/fp8_weights.py): layer weights stored in fp8, computed cast.

The reference: the same file loaded as usual with every layer weight rounded through the fp8 dtype by
torch's own cast (what ComfyUI's fp8 model holds), computing in fp32 -- the fp8 model must give its output."""
from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file, save_file

from diffusion import ksampler
from diffusion.loading import load_unet_file
from model_management import MemorySettings, ModelManager
from models.errors import ModelError
from models.fp8_weights import FP8_LAYERS, WEIGHT_DTYPES, weight_dtype_of
from models.testing import (
    tiny_sd3_spec,
    tiny_sdxl_text_configs,
    tiny_sdxl_unet_config,
    tiny_vae_config,
    write_random_sd3_checkpoint,
    write_sdxl_checkpoint,
)


@pytest.fixture(scope="module")
def mmdit_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("fp8") / "tiny-mmdit.safetensors"
    return write_random_sd3_checkpoint(path, tiny_sd3_spec(text=(), with_vae=False, qk_norm=True, dual=(0,),
                                                           dtype=torch.float16))


@pytest.fixture(scope="module")
def unet_file(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("fp8unet")
    full = load_file(str(write_sdxl_checkpoint(tmp / "xl.safetensors", tiny_sdxl_unet_config(),
                                               text=tiny_sdxl_text_configs(), vae=tiny_vae_config())))
    prefix = "model.diffusion_model."
    save_file({k[len(prefix):]: v.half() for k, v in full.items() if k.startswith(prefix)}, str(tmp / "unet.safetensors"))
    return tmp / "unet.safetensors"


def rounded_reference(path, fp8: torch.dtype):
    """The usual fp32 load, each FP8_LAYERS parameter rounded through `fp8` (torch's cast)."""
    model = load_unet_file(path, ModelManager(MemorySettings(force_fp32=True)))
    for layer in model.module.modules():
        if isinstance(layer, FP8_LAYERS):
            for p in layer.parameters(recurse=False):
                p.data = p.data.to(fp8).to(torch.float32)
    return model


def inputs(model):
    g = torch.Generator().manual_seed(3)
    if model.module.__class__.__name__ == "MMDiT":
        c = model.module.config
        return (torch.randn(1, 16, 8, 8, generator=g), torch.tensor([500.0]),
                torch.randn(1, 5, c.context_in_dim, generator=g), torch.randn(1, c.adm_in_dim, generator=g))
    c = model.module.config
    return (torch.randn(1, 4, 8, 8, generator=g), torch.tensor([500.0]),
            torch.randn(1, 77, c.context_dim, generator=g), torch.randn(1, c.adm_in_channels, generator=g))


@pytest.mark.parametrize("name", list(WEIGHT_DTYPES))
@pytest.mark.parametrize("which", ["mmdit", "unet"])
def test_fp8_weights_give_the_output_of_the_rounded_weights(name, which, mmdit_file, unet_file):
    path = mmdit_file if which == "mmdit" else unet_file
    fp8 = WEIGHT_DTYPES[name]
    manager = ModelManager(MemorySettings(force_fp32=True))
    model = load_unet_file(path, manager, weight_dtype=name)
    layers = [p for m in model.module.modules() if isinstance(m, FP8_LAYERS) for p in m.parameters(recurse=False)]
    assert layers and {p.dtype for p in layers} == {fp8}
    others = {p.dtype for n, p in model.module.named_parameters() if all(p is not q for q in layers)}
    assert others <= {torch.float16}                            # norms outside FP8_LAYERS / grids: as stored
    reference = rounded_reference(path, fp8)
    manager.load_models_for([model])
    record = manager.record_of(model)
    assert all(record.weights.current(k).dtype == fp8 for k in record.weights.keys()
               if record.weights.home[k].dtype == fp8)           # held in fp8 on the device, cast per use
    with torch.no_grad():
        out = model.module(*inputs(model))
        expected = reference.module(*inputs(reference))
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)


def test_fp8_model_samples_in_bf16_on_the_cpu_at_half_the_bytes(mmdit_file):
    manager = ModelManager(MemorySettings())
    model = load_unet_file(mmdit_file, manager, weight_dtype="fp8_e4m3fn")
    default = load_unet_file(mmdit_file, ModelManager(MemorySettings()))
    fp8_bytes = sum(p.numel() * p.element_size() for p in model.module.parameters())
    bf16_bytes = sum(p.numel() * p.element_size() for p in default.module.parameters())
    assert fp8_bytes < 0.6 * bf16_bytes
    c = model.module.config
    cond = [[torch.randn(1, 5, c.context_in_dim), {"pooled_output": torch.randn(1, c.adm_in_dim)}]]
    latent = {"samples": torch.zeros(1, 16, 8, 8)}
    run = lambda m: ksampler.ksample(m, latent, cond, cond, seed=1, steps=2, cfg=2.0,  # noqa: E731
                                     sampler_name="euler", scheduler="simple")["samples"]
    a, b = run(model), run(default)
    assert torch.isfinite(a).all() and not torch.equal(a, b)
    assert (a - b).abs().mean() < 0.1 * b.abs().mean()              # fp8 rounding, not a different model


def test_weight_dtype_names():
    assert weight_dtype_of("default") is None
    assert weight_dtype_of("fp8_e4m3fn_fast") == torch.float8_e4m3fn
    assert weight_dtype_of("fp8_e5m2") == torch.float8_e5m2
    with pytest.raises(ModelError, match="weight_dtype"):
        weight_dtype_of("int4")


def test_weight_dtype_is_part_of_the_cache_key(mmdit_file):
    manager = ModelManager(MemorySettings(force_fp32=True))
    a = load_unet_file(mmdit_file, manager, weight_dtype="fp8_e5m2")
    assert load_unet_file(mmdit_file, manager, weight_dtype="fp8_e5m2").module is a.module
    b = load_unet_file(mmdit_file, manager)
    assert b.module is not a.module and b.module.x_embedder.proj.weight.dtype == torch.float32
    c = load_unet_file(mmdit_file, manager, weight_dtype="fp8_e4m3fn")
    assert c.module.x_embedder.proj.weight.dtype == torch.float8_e4m3fn
