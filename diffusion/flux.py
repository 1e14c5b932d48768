"""FLUX.1 operations behind the FLUX nodes: the diffusion model alone (UNETLoader), standalone CLIP-L +
T5-XXL files (DualCLIPLoader type "flux"), CLIPTextEncodeFlux, FluxGuidance / FluxDisableGuidance,
ModelSamplingFlux, the guidance value as a model input, the latents Fill and Depth / Canny models
concatenate to their input, and Kontext's reference latents (ReferenceLatent, FluxKontextImageScale,
FluxKontextMultiReferenceLatentMethod)."""
from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from imaging import resize
from model_management import ModelPart
from model_management.weights import ModuleWeights
from models import checkpoint as checkpoint_loader
from models.detection import flux_model_config
from models.errors import ModelError
from models.files import load_state_dict
from models.flux import joint_mask_for_grid
from models.flux_checkpoint import diffusion_model_prefix, kept_fp8_dtype, load_flux_transformer, stored_dtype
from models.fp8_weights import weight_dtype_of
from models.rebuild import FileRebuilder
from models.sd3_checkpoint import load_sd3_text_encoder, text_encoder_kind
from models.text import flux as flux_text
from sampling.flux import DEV_SHIFT, SCHNELL_SHIFT, FluxSampling, resolution_shift
from sampling.model_sampling import FlowSampling

from .conditioning import Conditioning, set_values
from .loading import attention_setting, cached_load, load_dtype_for, with_embeddings, wrap_text_encoders, wrap_unet
from .objects import DiffusionModel, TextEncoders, TextEncoderStack

DEFAULT_GUIDANCE = 3.5       # what a [dev] model gets when the conditioning names none (ComfyUI model_base.Flux)


def default_sampling(config) -> FlowSampling:
    """[dev] (guidance_in): FLUX's exponential time shift, shift 1.15 (ComfyUI supported_models.Flux,
    model type FLUX). [schnell]: plain rectified flow with shift 1.0 -- sigma = t, a table of 1,000 sigmas,
    timestep = sigma -- because ComfyUI's FluxSchnell builds its model with model type FLOW
    (ModelSamplingDiscreteFlow, sampling_settings shift 1.0, multiplier 1.0), not FLUX's shift; the
    exponential shift with mu = 1.0 would give other sigmas (the schnell fidelity case's 66 / 255).
    ModelSamplingFlux on a [schnell] model still switches it to FLUX's shift, as in ComfyUI."""
    if config.unet.guidance_embed:
        return FluxSampling(shift=DEV_SHIFT)
    return FlowSampling(shift=SCHNELL_SHIFT, multiplier=1.0, timesteps=1000)


def is_flux_file(path: str | os.PathLike) -> bool:
    with load_state_dict(path) as source:
        return diffusion_model_prefix(source.shapes()) is not None


def load_diffusion_model_file(path: str | os.PathLike, manager: Any, *, attention: str | None = None,
                              weight_dtype: str = "default") -> DiffusionModel:
    """A FLUX.1 transformer alone (BFL keys, with or without `model.diffusion_model.`; bf16, fp16, fp8
    e4m3fn, scaled fp8). An fp8 file (plain or scaled), or any file with an fp8 `weight_dtype` (UNETLoader's),
    keeps its Linear weights in fp8 in memory and casts each one to the compute dtype where it is used
    (models/flux_checkpoint.py build_fp8_flux): the 12 B-parameter [dev] holds 11.9 GB, not 23.8 GB of bf16."""
    path = Path(path)
    attention = attention or attention_setting(manager)
    requested = weight_dtype_of(weight_dtype)

    def load() -> tuple:
        with load_state_dict(path) as source:
            prefix = diffusion_model_prefix(source.shapes())
            if prefix is None:
                raise ModelError(f"{path.name} is not a FLUX.1 diffusion model (no img_in / double_blocks)")
            fp8 = kept_fp8_dtype(source, prefix, requested)
            if fp8 is not None:
                dtype = manager.dtype_choices()[ModelPart.DIFFUSION].dtype
            else:
                dtype = load_dtype_for(manager, ModelPart.DIFFUSION) or stored_dtype(source, prefix)
            module, config, (lazy, owned) = load_flux_transformer(source, prefix, dtype, attention, fp8=fp8)
            source.release_all()
        rebuilder = FileRebuilder(path, lazy, owned, source.file_format) if owned else None
        model_config = flux_model_config(config)
        return (wrap_unet(module, manager, config=model_config, source_key=str(path), rebuilder=rebuilder,
                          model_sampling=default_sampling(model_config)),)

    return cached_load(manager, "flux", path, load, (attention, weight_dtype))[0]


def load_text_encoder_files(paths: Sequence[str | os.PathLike], manager: Any, *,
                            embedding_dirs: Sequence[str | os.PathLike] = ()) -> TextEncoders:
    """A clip_l and a t5xxl file (any order) as one FLUX CLIP. It can be reloaded after a RAM-budget drop
    (the towers read from their files again: views of the mapped files, T5-XXL's fp8 kept): beside an
    11.9 GB fp8 [dev] the budget drops it, and a new prompt text must still encode."""
    paths = [Path(p) for p in paths]

    def read_encoders() -> list:
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
        return [encoders[k] for k in flux_text.FLUX_KINDS if k in encoders]

    def reload() -> dict:
        return dict(ModuleWeights(TextEncoderStack({e.kind: e for e in read_encoders()})).home)

    def load() -> tuple:
        clip = wrap_text_encoders(read_encoders(), manager, source_key="|".join(map(str, paths)), layout="flux")
        manager.register(clip, dtype=manager.dtype_choices()[ModelPart.TEXT_ENCODER].dtype, reload=reload)
        return (clip,)

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


def model_inputs(model_config, conditioning: Conditioning, noise_mask: torch.Tensor | None = None,
                 latent_shape: tuple[int, ...] | None = None) -> Conditioning:
    """The guidance value as the tensor input the [dev] transformer takes: 3.5 unless the conditioning
    names one, none at all after FluxDisableGuidance (ComfyUI model_base.Flux.extra_conds); an
    attention_mask (StyleModelApply's attn_bias) resized to the latent's token grid; Kontext's
    reference latents as tensor inputs; for Fill without a concat_mask, the latent's noise mask at the
    latent's size in its place (as ComfyUI falls back to the denoise mask)."""
    if model_config is None or model_config.family != "flux":
        return conditioning
    is_fill = model_config.unet.in_channels > 2 * model_config.unet.out_channels
    out = []
    for entry in conditioning:
        options = dict(entry[1])
        value = options.pop("guidance", DEFAULT_GUIDANCE)
        if value is not None and model_config.unet.guidance_embed:
            options["guidance"] = torch.tensor([float(value)])
        _reference_inputs(options)
        _attention_mask_input(options, model_config.unet.patch_size, latent_shape)
        if is_fill and "concat_mask" not in options and noise_mask is not None and latent_shape is not None:
            mask = noise_mask.reshape(-1, 1, *noise_mask.shape[-2:]).float()
            options["concat_mask"] = torch.nn.functional.interpolate(mask, size=tuple(latent_shape[-2:]),
                                                                     mode="bilinear")
        out.append([entry[0], options])
    return out


def _attention_mask_input(options: dict, patch: int, latent_shape: tuple[int, ...] | None) -> None:
    """The entry's attention_mask, made over an `attention_mask_img_shape` grid of image tokens (1 x 1 when
    StyleModelApply made it), resized to the grid the transformer will see: ceil(side / patch) tokens a side
    (ComfyUI model_base.Flux.extra_conds)."""
    grid = options.pop("attention_mask_img_shape", (1, 1))
    mask = options.get("attention_mask")
    if mask is None or latent_shape is None:
        return
    tokens = (math.ceil(latent_shape[-2] / patch), math.ceil(latent_shape[-1] / patch))
    options["attention_mask"] = joint_mask_for_grid(mask, tuple(grid), tokens)


# --- Fill, Depth / Canny: the latents concatenated to the input ------------------------------------------

MASK_BLOCK = 8          # Fill's mask: pixels folded into 8 x 8 = 64 channels per latent pixel


def concat_inputs(model: DiffusionModel, x: torch.Tensor, inputs: dict) -> torch.Tensor:
    """What FLUX.1 Fill (96 latent channels in: 16 + 16 + 64) and Depth / Canny (32: 16 + 16) take beside the
    noisy latent x [B, 16, h, w]: the control / masked-image latent (conditioning's concat_latent_image,
    zeros when absent, in the model's latent space and resized to x), then for Fill the mask at 8x the
    latent size, each 8 x 8 block of pixels folded into 64 channels (row-major in the block); no mask: all
    ones. (BFL's Fill / Depth / Canny model cards; ComfyUI model_base.Flux.concat_cond; behaviour, not code.)"""
    b, c, h, w = x.shape
    image = inputs.get("concat_latent_image")
    image = torch.zeros_like(x) if image is None else image.to(x)
    if image.shape[-2:] != (h, w):
        image = resize.upscale(image, w, h, "bilinear", "center")
    image = _to_batch(model.latent_format.process_in(image), b)
    if model.in_channels <= 2 * c:
        return image
    mask = inputs.get("concat_mask")
    mask = x.new_ones(b, 1, h * MASK_BLOCK, w * MASK_BLOCK) if mask is None else mask.to(x)
    mask = mask.reshape(-1, *mask.shape[-3:]) if mask.ndim >= 4 else mask.reshape(-1, 1, *mask.shape[-2:])
    mask = mask.mean(dim=1, keepdim=True)
    if mask.shape[-2:] != (h * MASK_BLOCK, w * MASK_BLOCK):
        mask = resize.upscale(mask, w * MASK_BLOCK, h * MASK_BLOCK, "bilinear", "center")
    n = mask.shape[0]
    mask = mask.view(n, h, MASK_BLOCK, w, MASK_BLOCK).permute(0, 2, 4, 1, 3).reshape(n, MASK_BLOCK ** 2, h, w)
    return torch.cat([image, _to_batch(mask, b)], dim=1)                   # [B, 16 + 64, h, w]


def _to_batch(t: torch.Tensor, batch: int) -> torch.Tensor:
    """Repeat (or cut) along the batch to `batch` entries (ComfyUI utils.resize_to_batch_size for the
    usual cases: one entry, or the batch itself)."""
    if t.shape[0] == batch:
        return t
    return t.repeat(-(-batch // t.shape[0]), *(1,) * (t.ndim - 1))[:batch]


# --- Kontext: reference latents as extra image tokens ---------------------------------------------------

REFERENCE_KEY = "ref_latents"        # model inputs "ref_latents.<method>.<i>": one tensor per reference


def with_reference_latent(conditioning: Conditioning, latent: dict | None) -> Conditioning:
    """ReferenceLatent: the latent appended to the conditioning's reference latents (none: unchanged)."""
    if latent is None:
        return conditioning
    return [[c[0], {**c[1], "reference_latents": [*c[1].get("reference_latents", ()), latent["samples"]]}]
            for c in conditioning]


def with_reference_method(conditioning: Conditioning, method: str) -> Conditioning:
    """FluxKontextMultiReferenceLatentMethod: "offset", "index" or "uxo/uno" (stored as "uxo")."""
    return set_values(conditioning, {"reference_latents_method": "uxo" if "uxo" in method or "uso" in method
                                     else method})


def kontext_image_size(width: int, height: int) -> tuple[int, int]:
    """The Kontext training resolution (about 1 MP, sides multiples of 16) nearest in aspect ratio
    (BFL's Kontext preferred resolutions, as ComfyUI's FluxKontextImageScale lists them)."""
    aspect = width / height
    return min(KONTEXT_RESOLUTIONS, key=lambda wh: abs(aspect - wh[0] / wh[1]))


KONTEXT_RESOLUTIONS = ((672, 1568), (688, 1504), (720, 1456), (752, 1392), (800, 1328), (832, 1248), (880, 1184),
                       (944, 1104), (1024, 1024), (1104, 944), (1184, 880), (1248, 832), (1328, 800), (1392, 752),
                       (1456, 720), (1504, 688), (1568, 672))


def kontext_image_scale(image: torch.Tensor) -> torch.Tensor:
    """FluxKontextImageScale: IMAGE [B, H, W, C] centre-cropped and Lanczos-resized to kontext_image_size."""
    width, height = kontext_image_size(image.shape[2], image.shape[1])
    return resize.upscale(image.movedim(-1, 1), width, height, "lanczos", "center").movedim(1, -1)


def _reference_inputs(options: dict) -> dict:
    """The conditioning's reference latents as tensor model inputs (the method in the key, so conds with
    other methods never share a batch)."""
    refs = options.pop("reference_latents", None)
    method = options.pop("reference_latents_method", "offset")
    for i, ref in enumerate(refs or ()):
        options[f"{REFERENCE_KEY}.{method}.{i}"] = ref
    return options


def reference_call_inputs(model: DiffusionModel, inputs: dict, device) -> dict:
    """Model-call keywords from a cond's reference inputs: ref_latents (in the model's latent space) and
    ref_latents_method; {} when there are none."""
    found = sorted((k.split(".") for k in inputs if k.startswith(REFERENCE_KEY + ".")), key=lambda p: int(p[2]))
    if not found:
        return {}
    refs = [model.latent_format.process_in(inputs[".".join(p)].to(device)) for p in found]
    return {"ref_latents": refs, "ref_latents_method": found[0][1]}


def with_flux_sampling(model: DiffusionModel, max_shift: float, base_shift: float, width: int,
                       height: int) -> DiffusionModel:
    """ModelSamplingFlux: the shift for this image size (sampling.flux.resolution_shift)."""
    return model.with_model_sampling(FluxSampling(shift=resolution_shift(width, height, base_shift, max_shift)))
