"""Load SD3 / SD3.5 files: the all-in-one single file (MM-DiT + 16-channel VAE + bundled CLIP-L, CLIP-G,
T5-XXL), the diffusion model alone, and standalone text-encoder files; the text towers as SD3 uses them.

Same contract as models/checkpoint.py (detect from shapes, build on meta, check every key, assign one
tensor at a time, release the file pages of converted tensors, a rebuild entry per part). T5 is the
exception: its weights stay in the stored dtype (fp8 included) as views into the mapped file and are cast
per layer when used (models/text/t5.py), so the 4.9 B-parameter tower costs no more than its file pages.
"""
from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor

from models.convert.ldm import component_key_map, unconsumed_keys
from models.detection import ModelConfig, detect_mmdit, is_mmdit
from models.errors import ModelError
from models.files import StateDictSource
from models.mmdit import MMDiT
from models.text import CLIP_L_PENULTIMATE, load_text_encoder
from models.text.t5 import load_t5_encoder, t5_state_dict
from models.vae import AutoencoderKL

DIFFUSION_PREFIXES = ("model.diffusion_model.", "")


def load_sd3_text_encoder(kind: str, state: Mapping[str, Tensor], dtype: torch.dtype | None):
    """One tower with SD3's behaviour: CLIP-L and CLIP-G penultimate without the final norm, T5 cast per layer."""
    if kind == "t5xxl":
        return load_t5_encoder(state, compute_dtype=dtype)
    # CLIP-L / CLIP-G stored narrower than the compute dtype (fp16 files, fp32 on the CPU) stay as stored and
    # cast per use (encoder.load_text_encoder): 1.5 GiB of releasable file pages instead of 3 GiB of fp32
    if kind == "clip_l":
        return load_text_encoder("clip_l", state, dtype=dtype, **CLIP_L_PENULTIMATE)
    if kind == "clip_g":
        return load_text_encoder("clip_g", state, dtype=dtype)
    raise ModelError(f"{kind!r} is not an SD3 text encoder (clip_l, clip_g, t5xxl)")


def text_encoder_kind(shapes: Mapping[str, tuple[int, ...]]) -> str:
    """Which tower a standalone file holds (HF layouts; CLIP-G told from CLIP-L by its width / projection)."""
    if "encoder.final_layer_norm.weight" in shapes and "shared.weight" in shapes:
        return "t5xxl"
    token = shapes.get("text_model.embeddings.token_embedding.weight")
    if token is None:
        raise ModelError("not an SD3 text encoder file (CLIP-L, CLIP-G or T5-XXL in the Hugging Face layout)")
    return "clip_g" if token[1] == 1280 or "text_projection.weight" in shapes and token[1] != 768 else "clip_l"


def text_lazy(kind: str, prefix: str):
    """Module key of the tower (`model.` + file key) -> the file's tensor, for model management's rebuilds."""
    def lazy(source: StateDictSource) -> dict[str, Tensor]:
        state = {k[len(prefix):]: source[k] for k in source if k.startswith(prefix)}
        if kind == "t5xxl":
            state = t5_state_dict(state)
        else:
            from models.text.convert import convert_state_dict, text_encoder_config_from_shapes
            state = convert_state_dict(kind, state, text_encoder_config_from_shapes(
                kind, {k: tuple(v.shape) for k, v in state.items()}))
        return {"model." + k: v for k, v in state.items()}
    return lazy


def load_sd3_parts(source: StateDictSource, config: ModelConfig, *, attention: str, dtypes, stored: torch.dtype,
                   load_text_encoders: bool = True) -> dict:
    """The parts of an SD3 single file: {"unet", "vae", "text_encoders", "rebuild", "unconsumed"}."""
    from models.checkpoint import build_module, mapped_lazy, rebuild_entry
    shapes = source.shapes()
    unet_map = component_key_map(shapes, config.unet_prefix)
    unet = build_module(lambda: MMDiT(config.unet, attention), unet_map, source, dtypes.unet or stored, "MM-DiT")
    rebuild = {"unet": rebuild_entry(unet, source, mapped_lazy(unet_map))}
    return with_vae_and_text_parts(source, config, unet, rebuild, attention=attention, dtypes=dtypes,
                                   stored=stored, load_text_encoders=load_text_encoders)


def with_vae_and_text_parts(source: StateDictSource, config: ModelConfig, unet, rebuild: dict, *, attention: str,
                            dtypes, stored: torch.dtype, load_text_encoders: bool) -> dict:
    """The parts dict of an all-in-one flow-model file (SD3, FLUX) around its loaded `unet`: the 16-channel
    VAE when the file holds one, the bundled text encoders (T5 kept in its stored dtype), their rebuild
    entries added to `rebuild`, and the keys no part consumed."""
    from models.checkpoint import build_module, mapped_lazy, rebuild_entry
    shapes = source.shapes()
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


def diffusion_model_prefix(shapes: Mapping[str, tuple[int, ...]]) -> str | None:
    """The prefix of a standalone MM-DiT file's keys, or None when it holds no MM-DiT."""
    return next((p for p in DIFFUSION_PREFIXES if is_mmdit(shapes, p)), None)


def load_mmdit(source: StateDictSource, prefix: str, dtype: torch.dtype, attention: str):
    """A standalone SD3 diffusion model (UNETLoader): (module, config, key map)."""
    from models.checkpoint import build_module
    shapes = source.shapes()
    config = detect_mmdit(shapes, prefix)
    key_map = {k[len(prefix):]: k for k in shapes if k.startswith(prefix)}
    return build_module(lambda: MMDiT(config, attention), key_map, source, dtype, "MM-DiT"), config, key_map
