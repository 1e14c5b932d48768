"""Load FLUX.1 files: the diffusion model alone (`flux1-dev.safetensors`, BFL keys with or without
`model.diffusion_model.`; bf16, fp16, fp8 e4m3fn, ComfyUI scaled_fp8) and all-in-one checkpoints (the
transformer, the VAE under `vae.` and CLIP-L + T5-XXL under `text_encoders.*`).

Same contract as models/sd3_checkpoint.py (detect from shapes, build on meta, check every key, assign one
tensor at a time, a rebuild entry per part); T5 reused from the SD3 work (cast per layer)."""
from __future__ import annotations

from collections.abc import Mapping

import torch

from models.convert.flux import apply_weight_scales, flux_key_map, scaled_lazy, weight_scales
from models.convert.ldm import component_key_map, unconsumed_keys
from models.detection import ModelConfig, detect_flux, is_flux
from models.files import StateDictSource
from models.flux import Flux, FluxConfig
from models.sd3_checkpoint import load_sd3_text_encoder, text_lazy
from models.vae import AutoencoderKL

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
    from models.checkpoint import build_module, mapped_lazy, rebuild_entry
    shapes = source.shapes()
    unet, _, unet_entry = load_flux_transformer(source, config.unet_prefix, dtypes.unet or stored, attention,
                                                config.unet)
    rebuild = {"unet": unet_entry}
    vae = None
    if config.vae_prefix + "decoder.conv_in.weight" in shapes:
        vae_map = component_key_map(shapes, config.vae_prefix)
        vae = build_module(lambda: AutoencoderKL(config.vae, attention), vae_map, source, dtypes.vae or stored, "VAE")
        rebuild["vae"] = rebuild_entry(vae, source, mapped_lazy(vae_map))
    encoders = []
    for slot in config.text_encoders if load_text_encoders else ():
        state = {k[len(slot.prefix):]: source[k] for k in source if k.startswith(slot.prefix)}
        encoder = load_sd3_text_encoder(slot.kind, state, dtypes.text or (stored if slot.kind != "t5xxl" else None))
        encoders.append(encoder)
        rebuild["text:" + slot.kind] = rebuild_entry(encoder, source, text_lazy(slot.kind, slot.prefix))
    consumed = [config.unet_prefix, config.vae_prefix, *(s.prefix for s in config.text_encoders)]
    return {"unet": unet, "vae": vae, "text_encoders": encoders, "rebuild": rebuild,
            "unconsumed": unconsumed_keys(shapes, consumed)}
