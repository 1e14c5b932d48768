"""Load FLUX.1 files: the diffusion model alone (`flux1-dev.safetensors`, BFL keys with or without
`model.diffusion_model.`; bf16, fp16, fp8 e4m3fn, ComfyUI scaled_fp8) and all-in-one checkpoints (the
transformer, the VAE under `vae.` and CLIP-L + T5-XXL under `text_encoders.*`).

Same contract as models/sd3_checkpoint.py (detect from shapes, build on meta, check every key, assign one
tensor at a time, a rebuild entry per part); T5 reused from the SD3 work (cast per layer)."""
from __future__ import annotations

from collections.abc import Mapping

import torch

from models.convert.flux import apply_weight_scales, flux_key_map, scaled_lazy, weight_scales
from models.detection import ModelConfig, detect_flux, is_flux
from models.files import StateDictSource
from models.flux import Flux, FluxConfig
from models.sd3_checkpoint import with_vae_and_text_parts

DIFFUSION_PREFIXES = ("model.diffusion_model.", "")


def diffusion_model_prefix(shapes: Mapping[str, tuple[int, ...]]) -> str | None:
    """The prefix of a FLUX transformer's keys, or None when the file holds none."""
    return next((p for p in DIFFUSION_PREFIXES if is_flux(shapes, p)), None)


def stored_dtype(source: StateDictSource, prefix: str) -> torch.dtype:
    """The compute dtype a file suggests: its float dtype, float32 for fp8 files."""
    dtype = source.dtype_of(prefix + "img_in.weight")
    return dtype if dtype in (torch.float32, torch.float16, torch.bfloat16) else torch.float32


def load_flux_transformer(source: StateDictSource, prefix: str, dtype: torch.dtype, attention: str,
                          config: FluxConfig | None = None):
    """-> (module, config, rebuild entry)."""
    from models.checkpoint import build_module, rebuild_entry
    shapes = source.shapes()
    config = config or detect_flux(shapes, prefix)
    key_map = flux_key_map(shapes, prefix)
    scales = weight_scales(shapes, key_map)
    module = build_module(lambda: Flux(config, attention), key_map, source, dtype, "FLUX")
    if scales:
        apply_weight_scales(module, scales, source)
    return module, config, rebuild_entry(module, source, scaled_lazy(key_map, scales))


def load_flux_parts(source: StateDictSource, config: ModelConfig, *, attention: str, dtypes, stored: torch.dtype,
                    load_text_encoders: bool = True) -> dict:
    """The parts of an all-in-one FLUX file: {"unet", "vae", "text_encoders", "rebuild", "unconsumed"}."""
    unet, _, unet_entry = load_flux_transformer(source, config.unet_prefix, dtypes.unet or stored, attention,
                                                config.unet)
    return with_vae_and_text_parts(source, config, unet, {"unet": unet_entry}, attention=attention, dtypes=dtypes,
                                   stored=stored, load_text_encoders=load_text_encoders)
