"""Load a single-file SD checkpoint into Plexus modules: detect, split by prefix, convert, check, assign.

    ckpt = load_checkpoint("v1-5-pruned-emaonly.safetensors")
    ckpt.unet, ckpt.vae, ckpt.text_encoders, ckpt.config.latent_scale_factor

Weights are read one tensor at a time from the memory-mapped file, cast to the target dtype and assigned
to modules built on the meta device; the file pages of each converted tensor are released as soon as it is
converted, so peak memory is the loaded model plus one tensor, and a converted model is not held twice.
Tensors kept in their stored dtype stay views into the mapped file. Each component's `rebuild` entry says
how to read its weights again (models.rebuild), which lets model management undo in-place patches.

EMA: "pruned" files hold the training weights under `model.*` and EMA shadows under `model_ema.*`.
The default is `use_ema=False`, the training weights: that is what ComfyUI loads and what Stability's
v1-inference.yaml (`use_ema: False`) gives, so a workflow renders the same image here as there.
`use_ema=True` swaps in the shadows where the file has them ("emaonly" files already store their EMA
weights under `model.*`, so both settings load the same weights from them).
"""
from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import torch
from torch import Tensor, nn

from models.attention import DEFAULT_ATTENTION
from models.convert.ldm import (
    check_key_map,
    component_key_map,
    has_ema_weights,
    unconsumed_keys,
    unet_key_map,
)
from models.detection import ModelConfig, detect, detect_vae_file, sd2_prediction_probe, sniff_sd2_prediction
from models.errors import ModelError
from models.files import StateDictSource, cast, load_state_dict
from models.rebuild import LazyWeights
from models.text.convert import convert_state_dict
from models.unet import UNetModel
from models.vae import AutoencoderKL, VAEConfig

PREDICTION_TYPES = ("eps", "v")


@dataclass
class LoadedCheckpoint:
    config: ModelConfig
    unet: UNetModel
    vae: AutoencoderKL
    text_encoders: list[Any]                # models.text encoders, one per config.text_encoders slot
    text_encoder_state_dicts: list[dict[str, Tensor]]   # filled only while models.text is unavailable
    weights: str                            # "ema" | "training" | "as stored" (no EMA copy in the file)
    prediction_source: str                  # "override" | "weights" (SD2 statistic) | "layout"
    unconsumed: list[str] = field(default_factory=list)  # file keys no component took (reported, harmless)
    metadata: dict[str, str] = field(default_factory=dict)
    # "unet" / "vae" / "text:<kind>" -> (module key -> file tensor before the cast; keys of converted weights)
    rebuild: dict[str, tuple[LazyWeights, frozenset[str]]] = field(default_factory=dict)
    file_format: str = "safetensors"


@dataclass(frozen=True)
class ComponentDtypes:
    """The dtype each component is loaded in; None keeps the file's stored float dtype."""

    unet: torch.dtype | None = None
    vae: torch.dtype | None = None
    text: torch.dtype | None = None


def load_checkpoint(path: str | os.PathLike, *, use_ema: bool = False, prediction_override: str | None = None,
                    dtype: torch.dtype | None = None, dtypes: ComponentDtypes | None = None,
                    attention: str = DEFAULT_ATTENTION, load_text_encoders: bool = True) -> LoadedCheckpoint:
    """Detect and load the UNet, VAE and text encoders of a single-file SD1.x/SD2.x/SDXL checkpoint.

    `dtype` (all components) or `dtypes` (per component); None keeps the file's stored dtype (fp32, fp16 or
    bf16). `prediction_override` ("eps"/"v") wins over what detection decides.
    """
    if prediction_override is not None and prediction_override not in PREDICTION_TYPES:
        raise ModelError(f"prediction_override must be one of {PREDICTION_TYPES}, not {prediction_override!r}")
    with load_state_dict(path) as source:
        shapes = source.shapes()
        config = detect(shapes)
        if config.family in ("sd3", "flux"):
            return _load_sd3(path, source, config, dtype=dtype, dtypes=dtypes or ComponentDtypes(),
                             attention=attention, load_text_encoders=load_text_encoders)
        config, prediction_source = _decide_prediction(config, source, prediction_override)
        stored = _stored_float_dtype(source, config.unet_prefix + "input_blocks.0.0.weight")
        dtypes = dtypes or ComponentDtypes()

        is_ema = use_ema and has_ema_weights(shapes, config.unet_prefix)
        unet_map = unet_key_map(shapes, config.unet_prefix, use_ema=is_ema)
        unet = build_module(lambda: UNetModel(config.unet, attention), unet_map, source,
                            dtype or dtypes.unet or stored, "UNet")
        vae_map = component_key_map(shapes, config.vae_prefix)
        vae = build_module(lambda: AutoencoderKL(config.vae, attention), vae_map, source,
                           dtype or dtypes.vae or stored, "VAE")
        encoders, raw = _load_text_encoders(config, source, load_text_encoders, dtype or dtypes.text or stored)
        consumed = [config.unet_prefix, config.vae_prefix, *(s.prefix for s in config.text_encoders)]
        rebuild = {"unet": rebuild_entry(unet, source, mapped_lazy(unet_map)),
                   "vae": rebuild_entry(vae, source, mapped_lazy(vae_map))}
        for slot, encoder in zip(config.text_encoders, encoders):
            rebuild["text:" + slot.kind] = rebuild_entry(encoder, source,
                                                          _text_lazy(slot.kind, slot.prefix, encoder.config))
        source.release_all()         # the converted copies are what the model holds now
        return LoadedCheckpoint(
            config=config, unet=unet, vae=vae, text_encoders=encoders, text_encoder_state_dicts=raw,
            weights="ema" if is_ema else ("training" if config.has_ema else "as stored"),
            prediction_source=prediction_source, unconsumed=unconsumed_keys(shapes, consumed),
            metadata=source.metadata, rebuild=rebuild, file_format=source.file_format)


def _load_sd3(path, source: StateDictSource, config: ModelConfig, *, dtype, dtypes: ComponentDtypes, attention: str,
              load_text_encoders: bool) -> LoadedCheckpoint:
    """SD3 / SD3.5 single file (models/sd3_checkpoint.py); `vae` is None when the file has none."""
    from models.sd3_checkpoint import load_sd3_parts
    if config.family == "flux":                      # FLUX.1 all-in-one (models/flux_checkpoint.py)
        from models.flux_checkpoint import load_flux_parts as load_sd3_parts
    probe = "img_in.weight" if config.family == "flux" else "x_embedder.proj.weight"
    stored = _stored_float_dtype(source, config.unet_prefix + probe)
    if dtype is not None:
        dtypes = ComponentDtypes(unet=dtype, vae=dtype, text=dtype)
    parts = load_sd3_parts(source, config, attention=attention, dtypes=dtypes, stored=stored,
                           load_text_encoders=load_text_encoders)
    source.release_all()
    return LoadedCheckpoint(config=config, unet=parts["unet"], vae=parts["vae"], text_encoders=parts["text_encoders"],
                            text_encoder_state_dicts=[], weights="as stored", prediction_source="layout",
                            unconsumed=parts["unconsumed"], metadata=source.metadata, rebuild=parts["rebuild"],
                            file_format=source.file_format)


def mapped_lazy(key_map: Mapping[str, str]) -> LazyWeights:
    """Module key -> the file's tensor, for a component whose keys map one to one."""
    return lambda source: {name: source[file_key] for name, file_key in key_map.items()}


def _text_lazy(kind: str, prefix: str, config) -> LazyWeights:
    """Module key (`model.` + HF name, as in models.text.TextEncoder) -> the converted file view."""
    def lazy(source: StateDictSource) -> Mapping[str, Tensor]:
        state = {k[len(prefix):]: source[k] for k in source if k.startswith(prefix)}
        return {"model." + k: v for k, v in convert_state_dict(kind, state, config).items()}
    return lazy


def rebuild_entry(module: nn.Module, source: StateDictSource,
                   lazy: LazyWeights) -> tuple[LazyWeights, frozenset[str]]:
    """`lazy` plus the keys it can rebuild whose tensors are the module's own memory (converted copies, not
    views into the file: only those may be written in place)."""
    state = module.state_dict()
    owned = frozenset(k for k in lazy(source) if k in state and not source.holds(state[k]))
    return lazy, owned


def load_vae(path: str | os.PathLike, *, dtype: torch.dtype | None = None, attention: str = DEFAULT_ATTENTION) \
        -> tuple[AutoencoderKL, VAEConfig]:
    """A standalone VAE file (e.g. vae-ft-mse-840000-ema-pruned.safetensors) or the VAE of a checkpoint."""
    with load_state_dict(path) as source:
        shapes = source.shapes()
        config, prefix = detect_vae_file(shapes)
        key_map = component_key_map(shapes, prefix)
        if prefix == "":   # a standalone file may carry extras (e.g. loss weights); keep encoder/decoder/quant
            key_map = {k: v for k, v in key_map.items()
                       if k.startswith(("encoder.", "decoder.", "quant_conv.", "post_quant_conv."))}
        dtype = dtype or _stored_float_dtype(source, prefix + "decoder.conv_in.weight")
        vae = build_module(lambda: AutoencoderKL(config, attention), key_map, source, dtype, "VAE")
        source.release_all()
        return vae, config


def build_module(factory: Callable[[], nn.Module], key_map: Mapping[str, str], source: Mapping[str, Tensor],
                 dtype: torch.dtype, what: str) -> nn.Module:
    """Build a module on the meta device, check the key map against it, then assign the file's tensors."""
    with torch.device("meta"):
        module = factory()
    expected = {k: tuple(v.shape) for k, v in module.state_dict().items()}
    file_shapes = _shapes_for(source, key_map.values())
    check_key_map(expected, key_map, file_shapes, what)
    release = getattr(source, "release", None)
    state = {}
    for name, file_key in key_map.items():                  # one tensor at a time
        stored = source[file_key]
        state[name] = cast(stored, dtype)
        if release is not None and state[name].data_ptr() != stored.data_ptr():
            release(stored)                                 # the converted copy is what the model keeps
    module.load_state_dict(state, assign=True)
    return module.eval().requires_grad_(False)


def _shapes_for(source, keys) -> dict[str, tuple[int, ...]]:
    if isinstance(source, StateDictSource):
        all_shapes = source.shapes()
        return {k: all_shapes[k] for k in keys}
    return {k: tuple(source[k].shape) for k in keys}


def _stored_float_dtype(source: StateDictSource, probe: str) -> torch.dtype:
    dtype = source.dtype_of(probe)
    return dtype if dtype in (torch.float32, torch.float16, torch.bfloat16) else torch.float32


def _decide_prediction(config: ModelConfig, source: StateDictSource, override: str | None) -> tuple[ModelConfig, str]:
    if override is not None:
        return replace(config, prediction_type=override), "override"
    probe = sd2_prediction_probe(config.unet, config.unet_prefix)
    if config.family == "sd2" and config.unet.in_channels == 4 and probe in source:
        std = source[probe].float().std().item()
        return replace(config, prediction_type=sniff_sd2_prediction(std)), "weights"
    return config, "layout"


def _load_text_encoders(config: ModelConfig, source: StateDictSource, enabled: bool,
                        dtype: torch.dtype) -> tuple[list, list]:
    if not enabled:
        return [], []
    states = [{k[len(s.prefix):]: source[k] for k in source if k.startswith(s.prefix)} for s in config.text_encoders]
    try:
        from models.text import load_text_encoder
    except ImportError:      # models/text not landed yet: hand back the raw state dicts
        return [], states
    return [load_text_encoder(s.kind, sd, dtype=dtype, **dict(s.behaviour))
            for s, sd in zip(config.text_encoders, states)], []
