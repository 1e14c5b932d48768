"""Load FLUX.1 files: the diffusion model alone (`flux1-dev.safetensors`, BFL keys with or without
`model.diffusion_model.`; bf16, fp16, fp8 e4m3fn, ComfyUI scaled_fp8) and all-in-one checkpoints (the
transformer, the VAE under `vae.` and CLIP-L + T5-XXL under `text_encoders.*`).

Same contract as models/sd3_checkpoint.py (detect from shapes, build on meta, check every key, assign one
tensor at a time, a rebuild entry per part); T5 reused from the SD3 work (cast per layer)."""
from __future__ import annotations

from collections.abc import Mapping

import torch

from torch import nn

from models.convert.flux import (
    SCALED_FP8_MARKER,
    apply_weight_scales,
    flux_key_map,
    is_scaled_fp8,
    scaled_lazy,
    weight_scales,
)
from models.detection import ModelConfig, detect_flux, is_flux
from models.files import StateDictSource, cast, release_file_pages
from models.flux import Flux, FluxConfig
from models.fp8_weights import ScaledFp8Linear, compute_per_use
from models.sd3_checkpoint import with_vae_and_text_parts
from models.text.t5 import FP8_TO_HALF

DIFFUSION_PREFIXES = ("model.diffusion_model.", "")


def diffusion_model_prefix(shapes: Mapping[str, tuple[int, ...]]) -> str | None:
    """The prefix of a FLUX transformer's keys, or None when the file holds none."""
    return next((p for p in DIFFUSION_PREFIXES if is_flux(shapes, p)), None)


def stored_dtype(source: StateDictSource, prefix: str) -> torch.dtype:
    """The compute dtype a file suggests: its float dtype, float32 for fp8 files."""
    dtype = source.dtype_of(prefix + "img_in.weight")
    return dtype if dtype in (torch.float32, torch.float16, torch.bfloat16) else torch.float32


def kept_fp8_dtype(source: StateDictSource, prefix: str, weight_dtype: torch.dtype | None = None) \
        -> torch.dtype | None:
    """The fp8 dtype a FLUX transformer's Linear weights are kept in, or None (converted to the compute dtype):
    a `scaled_fp8` file's (the marker's dtype, float32 meaning e4m3fn; UNETLoader's weight_dtype is then
    ignored, as in ComfyUI), else UNETLoader's `weight_dtype`, else the file's own when it stores them in fp8."""
    shapes = source.shapes()
    if is_scaled_fp8(shapes, prefix):
        marker = source.dtype_of(prefix + SCALED_FP8_MARKER)
        return marker if marker in FP8_TO_HALF else torch.float8_e4m3fn
    if weight_dtype is not None:
        return weight_dtype
    stored = source.dtype_of(prefix + "img_in.weight")
    return stored if stored in FP8_TO_HALF else None


def load_flux_transformer(source: StateDictSource, prefix: str, dtype: torch.dtype, attention: str,
                          config: FluxConfig | None = None, *, fp8: torch.dtype | None = None):
    """-> (module, config, rebuild entry). `fp8`: keep the Linear weights and biases in that dtype and compute
    in `dtype`, each weight cast where it is used (see build_fp8_flux)."""
    from models.checkpoint import build_module, mapped_lazy, rebuild_entry
    shapes = source.shapes()
    config = config or detect_flux(shapes, prefix)
    key_map = flux_key_map(shapes, prefix)
    scales = weight_scales(shapes, key_map)
    if fp8 is not None:
        module = build_fp8_flux(lambda: Flux(config, attention), key_map, scales, source, fp8, dtype)
        return module, config, rebuild_entry(module, source, mapped_lazy(key_map))
    module = build_module(lambda: Flux(config, attention), key_map, source, dtype, "FLUX")
    if scales:
        apply_weight_scales(module, scales, source)
    return module, config, rebuild_entry(module, source, scaled_lazy(key_map, scales))


def build_fp8_flux(factory, key_map: Mapping[str, str], scales: Mapping[str, str], source: StateDictSource,
                   fp8: torch.dtype, compute_dtype: torch.dtype) -> Flux:
    """A FLUX transformer holding every Linear weight and bias in `fp8` (views of the file where it stores
    them so: nothing is converted or copied), the rest (RMS-norm scales) in `compute_dtype`, computing in
    `compute_dtype` with each fp8 weight cast per use (models/fp8_weights.py). A scaled_fp8 weight stays as
    stored and its Linear multiplies by `scale_weight` (ScaledFp8Linear). This is the fp8 model ComfyUI
    builds for these files (comfy/ops.py scaled_fp8_ops / manual_cast; behaviour, not code): its Linears are
    created in the fp8 dtype, so a bias or an unscaled weight the file stores wider is rounded to fp8."""
    from models.checkpoint import check_key_map
    with torch.device("meta"):
        module = factory()
    expected = {k: tuple(v.shape) for k, v in module.state_dict().items()}
    all_shapes = source.shapes()
    check_key_map(expected, key_map, {k: all_shapes[k] for k in key_map.values()}, "FLUX")
    in_linears = {f"{name}.{p}" for name, layer in module.named_modules() if isinstance(layer, nn.Linear)
                  for p, _ in layer.named_parameters(recurse=False)}
    state = {}
    for name, file_key in key_map.items():                  # one tensor at a time
        stored = source[file_key]
        state[name] = cast(stored, fp8 if name in in_linears else compute_dtype)
        if state[name].data_ptr() != stored.data_ptr():
            source.release(stored)
    module.load_state_dict(state, assign=True)
    for name, scale_key in scales.items():
        ScaledFp8Linear.convert(module.get_submodule(name.removesuffix(".weight")), source[scale_key])
    for block in (*module.double_blocks, *module.single_blocks):
        block.register_forward_hook(_release_block_pages)
    return compute_per_use(module.eval().requires_grad_(False), compute_dtype)


def _release_block_pages(block: nn.Module, _inputs, _output) -> None:
    """After a block has run: drop the resident pages of its weights that view the mapped file (on the CPU
    they are the weights it computes with; the next step faults them back from the page cache), so the
    12 B-parameter [dev] holds about one block's 200 MB of file pages at a time instead of 11.9 GB, as
    T5-XXL's blocks do (models/text/t5.py T5Block). Weights that are not file views (device copies,
    converted tensors) are left alone."""
    release_file_pages([p.data for p in block.parameters()])


def load_flux_parts(source: StateDictSource, config: ModelConfig, *, attention: str, dtypes, stored: torch.dtype,
                    load_text_encoders: bool = True) -> dict:
    """The parts of an all-in-one FLUX file: {"unet", "vae", "text_encoders", "rebuild", "unconsumed"}; an fp8
    transformer (flux1-dev-fp8 all-in-one) keeps its Linear weights in fp8 (build_fp8_flux)."""
    unet, _, unet_entry = load_flux_transformer(source, config.unet_prefix, dtypes.unet or stored, attention,
                                                config.unet, fp8=kept_fp8_dtype(source, config.unet_prefix))
    return with_vae_and_text_parts(source, config, unet, {"unet": unet_entry}, attention=attention, dtypes=dtypes,
                                   stored=stored, load_text_encoders=load_text_encoders)
