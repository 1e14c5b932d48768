"""SD3 / SD3.5 operations behind the SD3 nodes: standalone text-encoder files (TripleCLIPLoader,
DualCLIPLoader / CLIPLoader type "sd3"), the diffusion model alone (UNETLoader), ModelSamplingSD3,
EmptySD3LatentImage and Skip Layer Guidance (SkipLayerGuidanceSD3)."""
from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from model_management import ModelPart
from models import checkpoint as checkpoint_loader
from models.detection import sd3_model_config
from models.errors import ModelError
from models.files import load_state_dict
from models.fp8_weights import store_weights_in_fp8, weight_dtype_of
from models.rebuild import FileRebuilder
from models.sd3_checkpoint import diffusion_model_prefix, load_mmdit, load_sd3_text_encoder, text_encoder_kind, text_lazy
from sampling.model_sampling import FlowSampling

from .ksampler import MODEL_CALL_OPTIONS
from .loading import (
    SD3_SHIFT,
    attention_setting,
    cached_load,
    load_dtype_for,
    with_embeddings,
    wrap_text_encoders,
    wrap_unet,
)
from .objects import DiffusionModel, TextEncoders

LATENT_CHANNELS = 16
LATENT_DOWNSCALE = 8


def load_text_encoder_files(paths: Sequence[str | os.PathLike], manager: Any, *,
                            embedding_dirs: Sequence[str | os.PathLike] = ()) -> TextEncoders:
    """Any of clip_l / clip_g / t5xxl files (fp32, fp16, bf16 or fp8_e4m3fn), in any order, as one SD3 CLIP;
    the towers not given are absent (zeros in their place)."""
    paths = [Path(p) for p in paths]

    def load() -> tuple:
        encoders = {}
        for path in paths:
            with load_state_dict(path) as source:
                shapes = source.shapes()
                kind = text_encoder_kind(shapes)
                if kind in encoders:
                    raise ModelError(f"two {kind} text encoders given ({path.name}); SD3 takes one each of "
                                     "clip_l, clip_g and t5xxl")
                state = {k: source[k] for k in source}
                dtype = load_dtype_for(manager, ModelPart.TEXT_ENCODER)
                encoders[kind] = load_sd3_text_encoder(kind, state, dtype)
                source.release_all()
        ordered = [encoders[k] for k in ("clip_l", "clip_g", "t5xxl") if k in encoders]
        return (wrap_text_encoders(ordered, manager, source_key="|".join(map(str, paths)), layout="sd3"),)

    key_path = paths[0]
    clip = cached_load(manager, "sd3_text:" + "|".join(str(p.resolve()) for p in paths), key_path, load)[0]
    return with_embeddings(clip, embedding_dirs)


def is_mmdit_file(path: str | os.PathLike) -> bool:
    with load_state_dict(path) as source:
        return diffusion_model_prefix(source.shapes()) is not None


def load_diffusion_model_file(path: str | os.PathLike, manager: Any, *, attention: str | None = None,
                              weight_dtype: str = "default") -> DiffusionModel:
    """An SD3 / SD3.5 diffusion model alone (keys with or without `model.diffusion_model.`); `weight_dtype`
    (UNETLoader's): "default", or an fp8 dtype its layer weights are stored in (models/fp8_weights.py)."""
    path = Path(path)
    attention = attention or attention_setting(manager)
    fp8 = weight_dtype_of(weight_dtype)

    def load() -> tuple:
        with load_state_dict(path) as source:
            prefix = diffusion_model_prefix(source.shapes())
            if prefix is None:
                raise ModelError(f"{path.name} is not an SD3 / SD3.5 diffusion model (no x_embedder / joint_blocks)")
            probe = prefix + "x_embedder.proj.weight"
            stored = checkpoint_loader._stored_float_dtype(source, probe)
            # fp8: built on the file's views, rounded from the stored values straight to fp8 (as ComfyUI)
            dtype = stored if fp8 else load_dtype_for(manager, ModelPart.DIFFUSION) or stored
            module, config, key_map = load_mmdit(source, prefix, dtype, attention)
            if fp8 is not None:
                store_weights_in_fp8(module, fp8, manager.dtype_choices()[ModelPart.DIFFUSION].dtype)
            lazy, owned = checkpoint_loader.rebuild_entry(module, source, checkpoint_loader.mapped_lazy(key_map))
            source.release_all()
        rebuilder = FileRebuilder(path, lazy, owned, source.file_format) if owned else None
        return (wrap_unet(module, manager, config=sd3_model_config(config), source_key=str(path), rebuilder=rebuilder),)

    return cached_load(manager, "mmdit", path, load, (attention, weight_dtype))[0]


def with_sd3_sampling(model: DiffusionModel, shift: float) -> DiffusionModel:
    """ModelSamplingSD3: rectified flow with the timestep shift `shift` (Esser et al. 2024, eq. 23)."""
    return model.with_model_sampling(FlowSampling(shift=shift, multiplier=1000.0))


def empty_latent(width: int, height: int, batch_size: int = 1) -> dict[str, Tensor]:
    """EmptySD3LatentImage: zeros [B, 16, H/8, W/8]."""
    return {"samples": torch.zeros(batch_size, LATENT_CHANNELS, height // LATENT_DOWNSCALE, width // LATENT_DOWNSCALE)}


def parse_layers(text: str) -> list[int]:
    """"7, 8, 9" -> [7, 8, 9] (every integer in the string, as ComfyUI reads it)."""
    return [int(m) for m in re.findall(r"\d+", text)]


def with_skip_layer_guidance(model: DiffusionModel, layers: str, scale: float, start_percent: float,
                             end_percent: float) -> DiffusionModel:
    """Skip Layer Guidance (Stability AI's SD3.5 reference sampler, "SLG"; inspired by Ahn et al. 2024,
    perturbed-attention guidance): while sigma lies in [sigma(end_percent), sigma(start_percent)], the
    positive conditioning is evaluated once more with the joint blocks `layers` skipped, and
    x0 += (cond_x0 - skipped_x0) * scale after CFG."""
    blocks = frozenset(parse_layers(layers))
    if not blocks:
        return model
    ms = model.model_sampling
    sigma_start, sigma_end = ms.percent_to_sigma(start_percent), ms.percent_to_sigma(end_percent)

    def post_cfg(args, x0: Tensor) -> Tensor:
        s = float(args.sigma[0])
        if scale > 0 and sigma_end <= s <= sigma_start and args.cond_denoise is not None:
            token = MODEL_CALL_OPTIONS.set({**MODEL_CALL_OPTIONS.get(), "skip_blocks": blocks})
            try:
                skipped = args.cond_denoise()
            finally:
                MODEL_CALL_OPTIONS.reset(token)
            x0 = x0 + (args.cond_x0 - skipped) * scale
        return x0

    twin = model.clone()
    twin.add_post_cfg_function(post_cfg)
    return twin


SD3_SHIFT_DEFAULT = SD3_SHIFT
