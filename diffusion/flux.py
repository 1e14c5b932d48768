"""FLUX.1 operations behind the FLUX nodes: the diffusion model alone (UNETLoader), standalone CLIP-L +
T5-XXL files (DualCLIPLoader type "flux"), CLIPTextEncodeFlux, FluxGuidance / FluxDisableGuidance,
ModelSamplingFlux, and the guidance value as a model input."""
from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from model_management import ModelPart
from models import checkpoint as checkpoint_loader
from models.detection import flux_model_config
from models.errors import ModelError
from models.files import load_state_dict
from models.flux_checkpoint import diffusion_model_prefix, load_flux_transformer, stored_dtype
from models.rebuild import FileRebuilder
from models.sd3_checkpoint import load_sd3_text_encoder, text_encoder_kind
from models.text import flux as flux_text
from sampling.flux import DEV_SHIFT, SCHNELL_SHIFT, FluxSampling, resolution_shift

from .conditioning import Conditioning, set_values
from .loading import attention_setting, cached_load, load_dtype_for, with_embeddings, wrap_text_encoders, wrap_unet
from .objects import DiffusionModel, TextEncoders

DEFAULT_GUIDANCE = 3.5       # what a [dev] model gets when the conditioning names none (ComfyUI model_base.Flux)


def default_sampling(config) -> FluxSampling:
    """[dev] shift 1.15, [schnell] 1.0 (ComfyUI supported_models Flux / FluxSchnell sampling_settings)."""
    return FluxSampling(shift=DEV_SHIFT if config.unet.guidance_embed else SCHNELL_SHIFT)


def is_flux_file(path: str | os.PathLike) -> bool:
    with load_state_dict(path) as source:
        return diffusion_model_prefix(source.shapes()) is not None


def load_diffusion_model_file(path: str | os.PathLike, manager: Any, *, attention: str | None = None) -> DiffusionModel:
    """A FLUX.1 transformer alone (BFL keys, with or without `model.diffusion_model.`; bf16, fp16, fp8
    e4m3fn, scaled fp8)."""
    path = Path(path)
    attention = attention or attention_setting(manager)

    def load() -> tuple:
        with load_state_dict(path) as source:
            prefix = diffusion_model_prefix(source.shapes())
            if prefix is None:
                raise ModelError(f"{path.name} is not a FLUX.1 diffusion model (no img_in / double_blocks)")
            dtype = load_dtype_for(manager, ModelPart.DIFFUSION) or stored_dtype(source, prefix)
            module, config, (lazy, owned) = load_flux_transformer(source, prefix, dtype, attention)
            source.release_all()
        rebuilder = FileRebuilder(path, lazy, owned, source.file_format) if owned else None
        model_config = flux_model_config(config)
        return (wrap_unet(module, manager, config=model_config, source_key=str(path), rebuilder=rebuilder,
                          model_sampling=default_sampling(model_config)),)

    return cached_load(manager, "flux", path, load, (attention,))[0]


def load_text_encoder_files(paths: Sequence[str | os.PathLike], manager: Any, *,
                            embedding_dirs: Sequence[str | os.PathLike] = ()) -> TextEncoders:
    """A clip_l and a t5xxl file (any order) as one FLUX CLIP."""
    paths = [Path(p) for p in paths]

    def load() -> tuple:
        encoders = {}
        for path in paths:
            with load_state_dict(path) as source:
                kind = text_encoder_kind(source.shapes())
                if kind not in flux_text.FLUX_KINDS or kind in encoders:
                    raise ModelError(f"DualCLIPLoader type flux takes one clip_l and one t5xxl file; {path.name} "
                                     f"is {'another ' if kind in encoders else 'a '}{kind}")
                state = {k: source[k] for k in source}
                encoders[kind] = load_sd3_text_encoder(kind, state, load_dtype_for(manager, ModelPart.TEXT_ENCODER))
                source.release_all()
        ordered = [encoders[k] for k in flux_text.FLUX_KINDS if k in encoders]
        return (wrap_text_encoders(ordered, manager, source_key="|".join(map(str, paths)), layout="flux"),)

    clip = cached_load(manager, "flux_text:" + "|".join(str(p.resolve()) for p in paths), paths[0], load)[0]
    return with_embeddings(clip, embedding_dirs)


def encode(clip: TextEncoders, clip_l: str, t5xxl: str, guidance: float | None = None) -> Conditioning:
    """CLIPTextEncodeFlux (and CLIPTextEncode on a FLUX CLIP with guidance None): T5 context, CLIP-L pooled."""
    if clip is None:
        raise ValueError("the clip input is None: load CLIP-L and T5-XXL with DualCLIPLoader (type flux)")
    clip.manager.load_models_for([clip])
    context, pooled = flux_text.encode(dict(clip.module.towers), clip_l, t5xxl, embeddings=clip.embedding_lookup)
    options = {"pooled_output": pooled}
    if guidance is not None:
        options["guidance"] = guidance
    return [[context, options]]


def with_guidance(conditioning: Conditioning, guidance: float | None) -> Conditioning:
    """FluxGuidance (a value) / FluxDisableGuidance (None)."""
    return set_values(conditioning, {"guidance": guidance})


def model_inputs(model_config, conditioning: Conditioning) -> Conditioning:
    """The guidance value as the tensor input the [dev] transformer takes: 3.5 unless the conditioning
    names one, none at all after FluxDisableGuidance (ComfyUI model_base.Flux.extra_conds)."""
    if model_config is None or model_config.family != "flux":
        return conditioning
    out = []
    for entry in conditioning:
        options = dict(entry[1])
        value = options.pop("guidance", DEFAULT_GUIDANCE)
        if value is not None and model_config.unet.guidance_embed:
            options["guidance"] = torch.tensor([float(value)])
        out.append([entry[0], options])
    return out


def with_flux_sampling(model: DiffusionModel, max_shift: float, base_shift: float, width: int,
                       height: int) -> DiffusionModel:
    """ModelSamplingFlux: the shift for this image size (sampling.flux.resolution_shift)."""
    return model.with_model_sampling(FluxSampling(shift=resolution_shift(width, height, base_shift, max_shift)))
