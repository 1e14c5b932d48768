"""Model files -> MODEL / CLIP / VAE handles registered with the ModelManager.

    model, clip, vae = load_checkpoint_file(path, manager)

Files are memory-mapped by models.files. When the compute device is the CPU, where the weights also live,
each part is converted once while loading to the dtype the device policy picks for it (the file pages are
released as each tensor is converted, so the model is held once), and the manager gets a rebuilder that
reads those weights again from the file, so patches (LoRAs) merge into them in place and come off
bit-identical. On a GPU the weights stay as stored (mapped) in RAM and the manager casts them as it puts
them on the device. A second load of the same file (same path, size and mtime) returns the cached
handles instead of reading it again: one cache per ModelManager, so its RAM budget governs what stays.
A handle the manager dropped from RAM is reloaded from the file on the next request.
"""
from __future__ import annotations

import functools
import logging
import os
import threading
import weakref
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from model_management import ModelPart
from models import checkpoint as checkpoint_loader
from models.attention import DEFAULT_ATTENTION
from models.checkpoint import ComponentDtypes
from models import detection
from models.detection import SDXL_ADM_FAMILIES, ModelConfig, detect_unet
from models.embeddings import EmbeddingStore
from models.errors import ModelError
from models.files import load_state_dict, release_file_pages
from models.fp8_weights import store_weights_in_fp8, weight_dtype_of
from models.int8_weights import store_weights_in_int8
from models.rebuild import FileRebuilder
from models.text import load_text_encoder
from models.unet import UNetModel
from sampling import latent_format as latent_formats
from sampling.model_sampling import DiscreteSampling, Eps, FlowSampling, VPrediction

from .objects import Autoencoder, DiffusionModel, TextEncoders, TextEncoderStack

log = logging.getLogger("plexus.diffusion")


class _FileCache:
    """(kind, path, size, mtime) -> loaded handles, for one ModelManager."""

    def __init__(self) -> None:
        self.entries: dict[tuple, tuple] = {}
        self.lock = threading.Lock()


_caches: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_caches_lock = threading.Lock()


def _cache_for(manager: Any) -> _FileCache:
    with _caches_lock:
        cache = _caches.get(manager)
        if cache is None:
            cache = _caches[manager] = _FileCache()
        return cache


def _file_key(kind: str, path: Path, extra: tuple = ()) -> tuple:
    stat = os.stat(path)
    return (kind, str(path.resolve()), stat.st_size, stat.st_mtime_ns, *extra)


def _is_alive(handles: tuple) -> bool:
    return not any(h is not None and h.shared.__dict__.get("is_dropped") for h in handles)


def cached_load(manager: Any, kind: str, path: Path, load: Callable[[], tuple], extra: tuple = ()) -> tuple:
    """`load()` once per file version and manager; later calls return clones of the cached handles."""
    cache = _cache_for(manager)
    key = _file_key(kind, path, extra)
    with cache.lock:
        found = cache.entries.get(key)
        if found is None or not _is_alive(found):
            found = load()
            cache.entries = {k: v for k, v in cache.entries.items() if k[:2] != key[:2]}   # older versions
            cache.entries[key] = found
    return tuple(h.clone() if h is not None else None for h in found)


def forget_cached(manager: Any) -> None:
    """Drop every cached handle of `manager` (the models stay registered until the manager drops them)."""
    cache = _cache_for(manager)
    with cache.lock:
        cache.entries.clear()


# --- model family objects -------------------------------------------------------------------------------

def model_sampling_for(config: ModelConfig):
    """The discrete DDPM sampling of SD1.x/SD2.x/SDXL (scaled-linear betas), eps or v prediction; SDXL files
    with the `ztsnr` key rescale it to zero terminal SNR (ComfyUI supported_models.SDXL.model_type); SD3's
    rectified flow with ComfyUI's default shift 3.0 (supported_models.SD3 `sampling_settings`)."""
    if config is not None and config.family == "sd3":
        return FlowSampling(shift=SD3_SHIFT)
    if config is not None and config.family == "flux":
        from .flux import default_sampling
        return default_sampling(config)
    prediction = VPrediction() if config.prediction_type == "v" else Eps()
    return DiscreteSampling(prediction, zero_terminal_snr=getattr(config, "zero_terminal_snr", False))


def latent_format_for(config: ModelConfig | None) -> latent_formats.LatentFormat:
    base = latent_formats.SD15
    if config is None:
        return base
    if config.family == "sd3":
        return latent_formats.SD3
    if config.family == "flux":
        return latent_formats.FLUX
    if config.family in ("sdxl", "sdxl_refiner"):
        base = latent_formats.SDXL
    is_rgb_ok = config.latent_channels == base.latent_channels
    return replace(base, scale_factor=config.latent_scale_factor, latent_channels=config.latent_channels,
                   rgb_factors=base.rgb_factors if is_rgb_ok else None)


SD3_SHIFT = 3.0


def _dtype_for(manager: Any, part: ModelPart):
    return manager.dtype_choices()[part].dtype


def load_dtype_for(manager: Any, part: ModelPart):
    """The dtype to convert a part to while loading: its compute dtype when the weights live on the compute
    device (the CPU), else None (keep the stored dtype, mapped; the manager casts on the way to the GPU)."""
    return _dtype_for(manager, part) if manager.device.type == "cpu" else None


def _is_int8_requested(manager: Any, unet: UNetModel) -> bool:
    """`--int8-unet`, an LDM UNet (SD1.x / SD2.x / SDXL; MM-DiT and FLUX transformers are not converted), the
    weights on the CPU, and not already stored narrow (UNETLoader's fp8 weight_dtype)."""
    settings = getattr(manager, "settings", None)
    return bool(getattr(settings, "int8_unet", False)) and isinstance(unet, UNetModel) \
        and manager.device.type == "cpu" and not getattr(unet, "CASTS_WEIGHTS_PER_USE", False)


def wrap_unet(unet: UNetModel, manager: Any, *, config: ModelConfig | None, source_key: str,
              model_sampling=None, rebuilder: FileRebuilder | None = None,
              latent_format: latent_formats.LatentFormat | None = None) -> DiffusionModel:
    if _is_int8_requested(manager, unet):
        count = store_weights_in_int8(unet, _dtype_for(manager, ModelPart.DIFFUSION))
        log.info("int8 weights (--int8-unet): %d Linear / Conv2d layers of %s", count, Path(source_key).name)
        rebuilder = None                 # the file's keys no longer describe the stored (int8) weights
    model = DiffusionModel(unet, manager=manager, name=f"{Path(source_key).name} (UNet)", source_key=source_key,
                           options={"model_sampling": model_sampling or model_sampling_for(config),
                                    "latent_format": latent_format or latent_format_for(config),
                                    "model_config": config})
    manager.register(model, dtype=_dtype_for(manager, ModelPart.DIFFUSION), rebuilder=rebuilder)
    return model


def wrap_text_encoders(encoders: list, manager: Any, *, source_key: str,
                       rebuilder: FileRebuilder | None = None, layout: str | None = None) -> TextEncoders | None:
    """`layout`: how the towers' outputs combine ("sd3": models.text.sd3; None: side by side)."""
    if not encoders:
        return None
    stack = TextEncoderStack({e.kind: e for e in encoders})
    stack.layout = layout
    clip = TextEncoders(stack, manager=manager, name=f"{Path(source_key).name} (text)", source_key=source_key)
    manager.register(clip, dtype=_dtype_for(manager, ModelPart.TEXT_ENCODER), rebuilder=rebuilder,
                     page_releaser=release_file_pages)
    return clip


def wrap_vae(vae, manager: Any, *, source_key: str, rebuilder: FileRebuilder | None = None) -> Autoencoder:
    handle = Autoencoder(vae, manager=manager, name=f"{Path(source_key).name} (VAE)", source_key=source_key)
    manager.register(handle, dtype=_dtype_for(manager, ModelPart.VAE), rebuilder=rebuilder)
    return handle


def _rebuilder(path: Path, loaded, part: str) -> FileRebuilder | None:
    lazy, owned = loaded.rebuild[part]
    return FileRebuilder(path, lazy, owned, loaded.file_format) if owned else None


def _text_rebuilder(path: Path, loaded) -> FileRebuilder | None:
    """One rebuilder over every tower of the stack (module keys `towers.<kind>.<tower key>`). Towers kept as
    views of the file (cast per use) own no key: the rebuilder then only says the part can come back after a
    RAM-budget drop (its views are kept as they are)."""
    parts = {kind.removeprefix("text:"): entry for kind, entry in loaded.rebuild.items() if kind.startswith("text:")}
    owned = {f"towers.{kind}.{k}" for kind, (_, keys) in parts.items() for k in keys}
    if not parts:
        return None

    def lazy(source):
        return {f"towers.{kind}.{k}": v for kind, (tower_lazy, _) in parts.items()
                for k, v in tower_lazy(source).items()}
    return FileRebuilder(path, lazy, owned, loaded.file_format)


# --- loaders ----------------------------------------------------------------------------------------------

@functools.lru_cache(maxsize=8)
def embedding_store(directories: tuple[str, ...]) -> EmbeddingStore:
    """One store per set of embedding folders, so files are read once and re-read only when changed."""
    return EmbeddingStore(directories)


def with_embeddings(clip: TextEncoders | None, directories: Sequence[str | os.PathLike]) -> TextEncoders | None:
    """A clone of `clip` whose prompts resolve `embedding:name` from `directories` (textual inversion)."""
    if clip is None:
        return None
    return clip.with_embedding_lookup(embedding_store(tuple(str(d) for d in directories)))


def attention_setting(manager: Any) -> str:
    """The attention backend chosen at start (`--attention`), "auto" unless told."""
    return getattr(manager.settings, "attention_backend", DEFAULT_ATTENTION)


def load_checkpoint_file(path: str | os.PathLike, manager: Any, *, attention: str | None = None,
                         embedding_dirs: Sequence[str | os.PathLike] = ()) \
        -> tuple[DiffusionModel, TextEncoders | None, Autoencoder]:
    """A single-file SD checkpoint -> (MODEL, CLIP, VAE), cached per manager; the CLIP resolves
    `embedding:name` from `embedding_dirs`. `attention`: the start-up setting unless given."""
    path = Path(path)
    attention = attention or attention_setting(manager)

    def load() -> tuple:
        dtypes = ComponentDtypes(unet=load_dtype_for(manager, ModelPart.DIFFUSION),
                                 vae=load_dtype_for(manager, ModelPart.VAE),
                                 text=load_dtype_for(manager, ModelPart.TEXT_ENCODER))
        loaded = checkpoint_loader.load_checkpoint(path, attention=attention, dtypes=dtypes)
        source = str(path)
        return (wrap_unet(loaded.unet, manager, config=loaded.config, source_key=source + "#unet",
                          rebuilder=_rebuilder(path, loaded, "unet")),
                wrap_text_encoders(loaded.text_encoders, manager, source_key=source + "#text",
                                   rebuilder=_text_rebuilder(path, loaded),
                                   layout=loaded.config.family if loaded.config.family in ("sd3", "flux") else None),
                wrap_vae(loaded.vae, manager, source_key=source + "#vae", rebuilder=_rebuilder(path, loaded, "vae")))

    model, clip, vae = cached_load(manager, "checkpoint", path, load, (attention,))
    return model, with_embeddings(clip, embedding_dirs), vae


def load_vae_file(path: str | os.PathLike, manager: Any) -> Autoencoder:
    path = Path(path)

    def load() -> tuple:
        vae, _ = checkpoint_loader.load_vae(path, dtype=load_dtype_for(manager, ModelPart.VAE),
                                          attention=attention_setting(manager))
        return (wrap_vae(vae, manager, source_key=str(path)),)

    return cached_load(manager, "vae", path, load)[0]


UNET_PREFIXES = ("model.diffusion_model.", "")


def load_unet_file(path: str | os.PathLike, manager: Any, *, prediction_type: str = "eps",
                   attention: str | None = None, weight_dtype: str = "default") -> DiffusionModel:
    """A standalone diffusion model (LDM UNet keys, with or without `model.diffusion_model.`).
    The file says nothing about the prediction type: eps unless told (ModelSamplingDiscrete changes it).
    `weight_dtype` (UNETLoader's): "default", or fp8 layer weights (models/fp8_weights.py)."""
    path = Path(path)
    attention = attention or attention_setting(manager)
    fp8 = weight_dtype_of(weight_dtype)
    from . import sd3
    if sd3.is_mmdit_file(path):                       # SD3 / SD3.5 diffusion model alone
        return sd3.load_diffusion_model_file(path, manager, attention=attention, weight_dtype=weight_dtype)
    from . import flux
    if flux.is_flux_file(path):                       # FLUX.1 transformer alone
        return flux.load_diffusion_model_file(path, manager, attention=attention, weight_dtype=weight_dtype)

    def load() -> tuple:
        with load_state_dict(path) as source:
            shapes = source.shapes()
            prefix = next((p for p in UNET_PREFIXES if p + "input_blocks.0.0.weight" in shapes), None)
            if prefix is None:
                raise ModelError(f"{path.name} is not an LDM UNet (SD1.x/SD2.x diffusion model)",
                                 "expected `input_blocks.0.0.weight` (optionally under model.diffusion_model.)")
            config = detect_unet(shapes, prefix)
            key_map = {k[len(prefix):]: k for k in shapes if k.startswith(prefix)}
            stored = checkpoint_loader._stored_float_dtype(source, prefix + "input_blocks.0.0.weight")
            dtype = stored if fp8 else load_dtype_for(manager, ModelPart.DIFFUSION) or stored
            unet = checkpoint_loader.build_module(lambda: UNetModel(config, attention), key_map, source, dtype, "UNet")
            if fp8 is not None:
                store_weights_in_fp8(unet, fp8, _dtype_for(manager, ModelPart.DIFFUSION))
            lazy, owned = checkpoint_loader.rebuild_entry(unet, source, checkpoint_loader.mapped_lazy(key_map))
            source.release_all()
        rebuilder = FileRebuilder(path, lazy, owned, source.file_format) if owned else None
        sampling = DiscreteSampling(VPrediction() if prediction_type == "v" else Eps())
        # an SDXL / refiner UNet (its label_emb width says so) samples in SDXL's latent space, as in ComfyUI
        is_sdxl = config.adm_in_channels in SDXL_ADM_FAMILIES
        return (wrap_unet(unet, manager, config=None, source_key=str(path), model_sampling=sampling,
                          rebuilder=rebuilder, latent_format=latent_formats.SDXL if is_sdxl else None),)

    return cached_load(manager, "unet", path, load, (prediction_type, attention, weight_dtype))[0]


TEXT_ENCODER_KINDS_BY_WIDTH = {768: "clip_l", 1024: "open_clip_h"}


def load_text_encoder_file(path: str | os.PathLike, manager: Any, clip_type: str = "stable_diffusion", *,
                           embedding_dirs: Sequence[str | os.PathLike] = ()) -> TextEncoders:
    """A standalone text encoder file (HF CLIP-L layout, or OpenCLIP-H), for CLIPLoader."""
    path = Path(path)

    def load() -> tuple:
        with load_state_dict(path) as source:
            state = {k: source[k] for k in source}
            kind = "open_clip_h" if any(k.startswith(("transformer.resblocks.", "model.transformer.resblocks."))
                                        for k in state) else detection.hf_text_encoder_kind(source.shapes())
            state = {k.removeprefix("model."): v for k, v in state.items()} if kind == "open_clip_h" else state
            encoder = load_text_encoder(kind, state, dtype=load_dtype_for(manager, ModelPart.TEXT_ENCODER))
            source.release_all()
        return (wrap_text_encoders([encoder], manager, source_key=str(path)),)

    if clip_type == "sd3":
        from . import sd3
        return sd3.load_text_encoder_files([path], manager, embedding_dirs=embedding_dirs)
    if clip_type != "stable_diffusion":
        raise ModelError(f"CLIPLoader type {clip_type!r} is not supported yet; only 'stable_diffusion' "
                         "(CLIP-L for SD1.x, OpenCLIP-H for SD2.x) is")
    return with_embeddings(cached_load(manager, "text_encoder", path, load)[0], embedding_dirs)
