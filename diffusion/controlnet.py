"""CONTROL_NET: loading ControlNet / T2I-Adapter files, attaching them to CONDITIONING, and the residuals
they add to each UNet call while sampling.

    net = load_control_file(path, manager)                              # ControlNetLoader
    positive, negative = apply_control(positive, negative, net, image, strength=0.8,
                                       start_percent=0.0, end_percent=0.6)   # ControlNetApplyAdvanced

A CONDITIONING entry's options carry the application under "control" (ComfyUI's key), an object with
the hint, strength, sampling-progress window and the application it was stacked on ("previous").
Sampling (sampling.guidance) keeps entries with different controls in different batches and hands the
batch's control to the model function (diffusion.ksampler), which asks it for `residuals(...)` and
passes them to the UNet forward as `control=` (models.controlnet.ControlResiduals). The control models
are loaded by the model manager beside the diffusion model, under the same budget (`control_models`).

ComfyUI's behaviour kept (comfy/controlnet.py, comfy/samplers.py, nodes.py):
- the hint is resized to the latent's pixel size (8x) with "nearest-exact" after a centre crop to its
  aspect, then broadcast over the batch per CFG chunk (`broadcast_hint`); a T2I-Adapter averages an RGB
  hint to one channel when it takes one;
- each residual is multiplied by the strength; stacked applications add up; outside the window
  [sigma(start_percent), sigma(end_percent)] an application gives only its predecessors' residuals;
- ControlNetApplyAdvanced gives the positive and negative the same application object (so the CFG pair
  still batches); the deprecated ControlNetApply marks its control to be copied onto the negative
  entries that have none (`share_with_uncond`);
- "diff" ControlNets (a `difference` key) hold differences to the base UNet's weights, which
  DiffControlNetLoader adds; files whose name ends in `_shuffle` use global average pooling;
- control-LoRA files are built on the MODEL being sampled when sampling starts (diffusion.control_lora);
- SD3 ControlNets (MM-DiT) take a latent hint: the hint at 8x the latent size, VAE-encoded (the `vae` input
  of ControlNetApplyAdvanced) and scaled by SD3's latent factor with no shift (ComfyUI's "SD3 controlnet
  weirdness": shift_factor 0); the inpainting one (17 hint channels) gets the keep-mask (1 - mask) resized
  to the latent as its last channel, 1 everywhere without a mask (ControlNetInpaintingAliMamaApply);
- SD3.5 large ControlNets in Stability's layout (blur / canny / depth; kind "sd35_controlnet") take the latent
  hint with SD3's full latent format (scale and shift), the pixels prepared first by the file's control_type
  (ComfyUI load_controlnet_sd35: canny a * 127.5 + 0.5, depth 1 - a, blur as is), the pooled text vector as
  `y`, and the patch embedding of the MODEL being sampled (`x_embedder`, ComfyUI's ControlNetSD35.pre_run);
- FLUX ControlNets (kind "flux_controlnet", models/controlnet_flux.py) take the pooled text vector and the
  guidance input of the conditioning; InstantX / Union-Pro files take a latent hint in FLUX's latent format
  (scale and shift, ComfyUI load_controlnet_flux_instantx), the inpainting one its keep-mask channel; XLabs /
  MistoLine files take the hint image at 8x the latent (no VAE); SetUnionControlNetType's index picks a
  Union-Pro mode (ComfyUI passes the same index to SDXL and FLUX union nets).
"""
from __future__ import annotations

import math
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from execution.errors import PlexusError
from imaging.resize import upscale
from model_management import ModelPart
from models import checkpoint as checkpoint_loader
from models.controlnet import UNION_CONTROL_TYPES, ControlNet, ControlResiduals
from models.controlnet_flux import FluxControlNet
from models.controlnet_mmdit import MMDiTControlNet, SD35ControlNet
from models.convert.controlnet_flux import instantx_state, mistoline_state
from models.convert.controlnet_mmdit import SD35_CONTROL_TYPE_KEY, sd35_controlnet_state, sd3_controlnet_state
from models.convert import controlnet as control_keys
from models.detection import ControlModelInfo, detect_control_model
from models.errors import ModelError
from models.files import load_state_dict
from models.t2i_adapter import T2IAdapter, residuals_for_features
from sampling.latent_format import FLUX as FLUX_LATENT
from sampling.latent_format import SD3 as SD3_LATENT

from . import vae_ops

from .control_lora import ControlLoraFile, patched_base_weights
from .loading import _dtype_for, attention_setting, cached_load, load_dtype_for
from .objects import ManagedHandle

HINT_UPSCALE = "nearest-exact"
LATENT_TO_PIXELS = 8
LATENT_HINT_KINDS = ("mmdit_controlnet", "sd35_controlnet")      # control models whose hint is a VAE latent


class ControlModel(ManagedHandle):
    """The network of a CONTROL_NET (models.controlnet.ControlNet or models.t2i_adapter.T2IAdapter);
    `info` is what detection found in its file."""

    _EXTRA = ("info",)
    info: ControlModelInfo


@dataclass(frozen=True)
class ControlNetFile:
    """CONTROL_NET: a loaded control model plus how ComfyUI applies it."""
    model: ControlModel | None                # None for a control-LoRA (built on the sampled MODEL)
    kind: str                                 # "controlnet" | "t2i_adapter" | "control_lora" | "mmdit_controlnet"
                                              # | "sd35_controlnet" | "flux_controlnet"
    is_global_average_pooling: bool = False   # *_shuffle files: residuals averaged over the image
    control_types: tuple[int, ...] = ()       # union ControlNets: SetUnionControlNetType's choice (() = auto)
    lora: ControlLoraFile | None = None       # a control-LoRA file

    @property
    def hint_channels(self) -> int:
        return self.lora.hint_channels if self.lora is not None else self.model.module.config.hint_channels

    @property
    def takes_latent_hint(self) -> bool:
        """Its hint is a VAE latent (SD3 / SD3.5 nets, InstantX-style FLUX nets): ControlNetApply needs a VAE."""
        if self.kind == "flux_controlnet":
            return self.model.module.config.latent_hint
        return self.kind in LATENT_HINT_KINDS

    def model_for(self, base_model) -> ControlModel:
        """The network to run beside `base_model` (the MODEL being sampled)."""
        if self.lora is None:
            return self.model
        if base_model is None:
            raise ModelError(f"{self.lora.path.name} is a control-LoRA: it is built on the model it is sampled "
                             "with, and none was given")
        return self.lora.model_for(base_model, ControlModel)


def set_union_type(net: ControlNetFile, type_name: str) -> ControlNetFile:
    """SetUnionControlNetType: a copy with the union control type ("auto" or one of UNION_CONTROL_TYPES);
    other ControlNets ignore it, as in ComfyUI."""
    _check_net(net)
    index = UNION_CONTROL_TYPES.get(type_name)
    return replace(net, control_types=() if index is None else (index,))


def _build(info: ControlModelInfo, source, dtype: torch.dtype, attention: str):
    keys = list(source.shapes())
    if info.kind == "flux_controlnet":
        raw = {k: source[k] for k in keys}
        state = instantx_state(raw) if info.layout == "diffusers" else mistoline_state(raw)
        return checkpoint_loader.build_module(lambda: FluxControlNet(info.config, attention), {k: k for k in state},
                                              state, dtype, "FLUX ControlNet")
    if info.kind == "sd35_controlnet":
        config = info.config
        if SD35_CONTROL_TYPE_KEY in keys:                    # 0 blur, 1 canny, 2 depth: how the hint is prepared
            config = replace(config, control_type=round(float(source[SD35_CONTROL_TYPE_KEY].reshape(-1)[0])))
        state = sd35_controlnet_state({k: source[k] for k in keys if k != SD35_CONTROL_TYPE_KEY})
        return checkpoint_loader.build_module(lambda: SD35ControlNet(config, attention), {k: k for k in state},
                                              state, dtype, "SD3.5 ControlNet")
    if info.kind == "mmdit_controlnet":
        state = sd3_controlnet_state({k: source[k] for k in keys})
        return checkpoint_loader.build_module(lambda: MMDiTControlNet(info.config, attention), {k: k for k in state},
                                              state, dtype, "SD3 ControlNet")
    if info.kind == "t2i_adapter":
        key_map = (control_keys.diffusers_t2i_key_map(info.config, keys) if info.layout == "diffusers"
                   else control_keys.t2i_original_key_map(keys))
        return checkpoint_loader.build_module(lambda: T2IAdapter(info.config), key_map, source, dtype, "T2I-Adapter")
    if info.layout == "diffusers":
        key_map = control_keys.diffusers_controlnet_key_map(info.config.unet, keys)
    else:
        key_map = control_keys.ldm_controlnet_key_map(keys, info.prefix)
    return checkpoint_loader.build_module(lambda: ControlNet(info.config, attention), key_map, source, dtype,
                                          "ControlNet")


def _is_shuffle(path: Path) -> bool:
    return path.stem.endswith(("_shuffle", "_shuffle_fp16"))


def load_control_file(path: str | os.PathLike, manager: Any, *, base_model=None) -> ControlNetFile:
    """ControlNetLoader (base_model None) / DiffControlNetLoader: a ControlNet or T2I-Adapter file as a
    CONTROL_NET. A diff ControlNet needs `base_model` (a MODEL): its UNet weights are added to the file's."""
    path = Path(path)
    attention = attention_setting(manager)
    with load_state_dict(path) as source:
        detected = detect_control_model(source.shapes())
    if detected.kind == "control_lora":
        return ControlNetFile(None, "control_lora", lora=ControlLoraFile(path, detected, manager))

    def load() -> tuple:
        with load_state_dict(path) as source:
            info = detect_control_model(source.shapes())
            stored = checkpoint_loader._stored_float_dtype(source, next(iter(source.shapes())))
            dtype = load_dtype_for(manager, ModelPart.DIFFUSION) or stored
            module = _build(info, source, dtype, attention)
            source.release_all()
        if info.is_diff:
            if base_model is None:
                raise ModelError(f"{path.name} is a diff ControlNet (weights relative to a base model)",
                                 "load it with DiffControlNetLoader and connect the model it was made for")
            _add_base_weights(module, base_model)
        handle = ControlModel(module, manager=manager, name=f"{path.name} ({info.kind})", source_key=str(path))
        handle.info = info
        manager.register(handle, dtype=_dtype_for(manager, ModelPart.DIFFUSION))
        return (handle,)

    if base_model is not None:                  # the result depends on the model: not cached per file
        (handle,) = load()
    else:
        (handle,) = cached_load(manager, "controlnet", path, load)
    return ControlNetFile(handle, handle.info.kind, is_global_average_pooling=_is_shuffle(path))


def _add_base_weights(module: torch.nn.Module, base_model) -> None:
    """A diff ControlNet's weights += the base UNet's same-named weights (with the MODEL's own patches, as
    ComfyUI reads model_state_dict() after loading the model; from the base tensors, whatever the placement)."""
    base = patched_base_weights(base_model, module.state_dict().keys())
    with torch.no_grad():
        for name, tensor in module.state_dict().items():
            if name in base and base[name].shape == tensor.shape:
                tensor.add_(base[name].to(device=tensor.device, dtype=tensor.dtype))


# --- application on CONDITIONING --------------------------------------------------------------------------

def broadcast_hint(hint: Tensor, batch: int, chunks: int) -> Tensor:
    """A hint batch [b, ...] for a model batch of `batch` made of `chunks` equal CFG chunks: a single hint
    stays single (it broadcasts); otherwise each chunk gets the first batch/chunks hints (cycled)."""
    if hint.shape[0] == 1 or hint.shape[0] == batch:
        return hint
    per_chunk = batch // chunks
    hint = hint[:per_chunk]
    if hint.shape[0] < per_chunk:
        hint = hint.repeat(math.ceil(per_chunk / hint.shape[0]), 1, 1, 1)[:per_chunk]
    return hint if hint.shape[0] == batch else torch.cat([hint] * chunks)


def _broadcast_residuals(residuals: ControlResiduals, batch: int, chunks: int) -> ControlResiduals:
    return residuals.map(lambda t: broadcast_hint(t, batch, chunks))


class SamplingControl:
    """What sampling asks of a CONDITIONING entry's "control": the networks to load beside the sampled MODEL
    (once per run, before the first step), the residuals of one UNet call, and `finish()` after the run.
    ControlApplication is Plexus's own; ComfyUI-protocol controls made by plugins (the comfy.controlnet face's
    ControlBase) are others."""

    def models(self, base_model=None) -> list[ControlModel]:
        raise NotImplementedError

    def residuals(self, x: Tensor, timestep: Tensor, inputs: dict, *, sigma: float, chunks: int,
                  model_sampling) -> ControlResiduals | None:
        raise NotImplementedError

    def set_sample_sigmas(self, sigmas: Tensor) -> None:
        """Before the first step: the sigmas the sampler will walk (ComfyUI's transformer_options
        "sample_sigmas"); Plexus's own applications do not need them."""

    def finish(self) -> None:
        """After a sampling run (ComfyUI's cleanup): nothing to drop for Plexus's own applications."""


class ControlApplication(SamplingControl):
    """One ControlNet application in a CONDITIONING entry ("control"): the net, the hint image
    [B, C, H, W] in [0, 1], strength, sampling-progress window, and the application below it (stacking)."""

    def __init__(self, net: ControlNetFile, hint: Tensor, strength: float = 1.0,
                 percent_range: tuple[float, float] = (0.0, 1.0), vae=None,
                 previous: ControlApplication | None = None, extra_concat: Sequence[Tensor] = ()):
        self.net = net
        self.hint = hint
        self.strength = strength
        self.percent_range = percent_range
        self.vae = vae
        self.extra_concat = list(extra_concat)                   # [B, C, H, W] channels joined to a latent hint
        self.previous = previous
        self.control_model: ControlModel | None = net.model       # a control-LoRA's: set by models(base_model)
        self.base_model = None                                    # the MODEL sampled (set by models(base_model))
        self._cache: dict[tuple, Tensor | list[Tensor]] = {}     # (kind, size, device, dtype) -> hint/features

    def chain(self) -> list[ControlApplication]:
        """This application and the Plexus applications below it (a plugin's control below them is the last
        one's `previous`)."""
        out, node = [], self
        while isinstance(node, ControlApplication):
            out.append(node)
            node = node.previous
        return out

    def _foreign_below(self) -> SamplingControl | None:
        below = self.chain()[-1].previous
        return below if isinstance(below, SamplingControl) else None

    def models(self, base_model=None) -> list[ControlModel]:
        """The networks of this application and those below it, to run beside `base_model` (ComfyUI's
        pre_run: a control-LoRA is built on it here)."""
        out = []
        for application in self.chain():
            application.control_model = application.net.model_for(base_model)
            application.base_model = base_model
            out.append(application.control_model)
        foreign = self._foreign_below()
        return out + (foreign.models(base_model) if foreign is not None else [])

    def set_sample_sigmas(self, sigmas: Tensor) -> None:
        foreign = self._foreign_below()
        if foreign is not None:
            foreign.set_sample_sigmas(sigmas)

    def finish(self) -> None:
        foreign = self._foreign_below()
        if foreign is not None:
            foreign.finish()

    def _is_active(self, sigma: float, model_sampling) -> bool:
        start, end = self.percent_range
        return model_sampling.percent_to_sigma(end) <= sigma <= model_sampling.percent_to_sigma(start)

    def _hint_at(self, height_px: int, width_px: int, device: torch.device, dtype: torch.dtype) -> Tensor:
        key = ("hint", height_px, width_px, device, dtype)
        hint = self._cache.get(key)
        if hint is None:
            hint = upscale(self.hint.float(), width_px, height_px, HINT_UPSCALE, "center")
            if self.net.kind == "t2i_adapter" and self.net.hint_channels == 1 and hint.shape[1] > 1:
                hint = hint.mean(dim=1, keepdim=True)
            self._cache = {key: hint.to(device=device, dtype=dtype)}
            hint = self._cache[key]
        return hint

    def _latent_hint_at(self, height: int, width: int, device: torch.device, dtype: torch.dtype) -> Tensor:
        """The hint as the latent an SD3 ControlNet takes [b, Ch, height, width] (ComfyUI ControlNet.get_control
        with a VAE and compression ratio 1): pixels at the VAE's scale, encoded, SD3-scaled without shift,
        plus the extra channels (the inpainting net's keep-mask), each resized to the latent."""
        key = ("latent", height, width, device, dtype)
        hint = self._cache.get(key)
        if hint is None:
            f = getattr(self.vae, "downscale_ratio", LATENT_TO_PIXELS)
            pixels = upscale(self.hint.float(), width * f, height * f, HINT_UPSCALE, "center")
            module = self.control_model.module
            if self.net.kind == "sd35_controlnet":               # Stability's SD3.5 nets: full SD3 latent format
                pixels = _prepared_sd35_hint(pixels, module.config.control_kind)
                latent = SD3_LATENT.process_in(vae_ops.encode(self.vae, pixels.movedim(1, -1)))
            elif self.net.kind == "flux_controlnet":             # InstantX / Union-Pro: FLUX's latent format
                latent = FLUX_LATENT.process_in(vae_ops.encode(self.vae, pixels.movedim(1, -1)))
            else:                                                # diffusers-layout SD3 nets: scale, shift 0
                latent = vae_ops.encode(self.vae, pixels.movedim(1, -1)) * SD3_LATENT.scale_factor
            extra = list(self.extra_concat)
            if getattr(module.config, "is_inpaint", False) and not extra:
                extra = [torch.ones(1, 1, 1, 1)]                                     # no mask: keep all
            parts = [latent] + [upscale(c.float(), width, height, HINT_UPSCALE, "center")
                                .expand(latent.shape[0] if c.shape[0] == 1 else c.shape[0], -1, -1, -1)
                                for c in extra]
            if len({p.shape[0] for p in parts}) > 1:
                batch = max(p.shape[0] for p in parts)
                parts = [p.repeat(math.ceil(batch / p.shape[0]), 1, 1, 1)[:batch] for p in parts]
            self._cache = {key: torch.cat(parts, dim=1).to(device=device, dtype=dtype)}
            hint = self._cache[key]
        return hint

    def _own_residuals(self, x: Tensor, timestep: Tensor, inputs: dict, chunks: int) -> ControlResiduals:
        module = self.control_model.module
        device = x.device
        h_px, w_px = x.shape[2] * LATENT_TO_PIXELS, x.shape[3] * LATENT_TO_PIXELS
        if self.net.kind == "t2i_adapter":
            size = (math.ceil(h_px / module.config.unshuffle) * module.config.unshuffle,
                    math.ceil(w_px / module.config.unshuffle) * module.config.unshuffle)
            key = ("features", *size, device)
            features = self._cache.get(key)
            if features is None:                                   # time-independent: once per run and size
                features = module(self._hint_at(*size, device, module.dtype))
                self._cache[key] = features
            out = _broadcast_residuals(features, x.shape[0], chunks)
        elif self.net.kind == "sd35_controlnet":
            hint = broadcast_hint(self._latent_hint_at(x.shape[2], x.shape[3], device, module.dtype), x.shape[0], chunks)
            y = inputs.get("pooled_output", inputs.get("y"))
            out = module(x, hint, timestep.to(device), None if y is None else y.to(device), self._base_x_embedder())
        elif self.net.kind == "flux_controlnet":
            hint = (self._latent_hint_at(x.shape[2], x.shape[3], device, module.dtype) if module.config.latent_hint
                    else self._hint_at(h_px, w_px, device, module.dtype))
            y, guidance = inputs.get("pooled_output", inputs.get("y")), inputs.get("guidance")
            out = module(x, broadcast_hint(hint, x.shape[0], chunks), timestep.to(device), inputs["c_crossattn"].to(device),
                         y=None if y is None else y.to(device), guidance=None if guidance is None else guidance.to(device),
                         control_types=self.net.control_types)
        elif self.net.kind in LATENT_HINT_KINDS:
            hint = broadcast_hint(self._latent_hint_at(x.shape[2], x.shape[3], device, module.dtype), x.shape[0], chunks)
            context = inputs.get("crossattn_controlnet", inputs["c_crossattn"]).to(device)
            out = module(x, hint, timestep.to(device), context)
        else:
            hint = broadcast_hint(self._hint_at(h_px, w_px, device, module.dtype), x.shape[0], chunks)
            context = inputs.get("crossattn_controlnet", inputs["c_crossattn"]).to(device)
            y = inputs.get("y")
            out = module(x, hint, timestep.to(device), context, y=None if y is None else y.to(device),
                         control_types=self.net.control_types)
        strength, pool = self.strength, self.net.is_global_average_pooling

        def finish(t: Tensor) -> Tensor:
            if pool:
                t = t.mean(dim=(2, 3), keepdim=True).expand_as(t)
            t = t * strength
            return t.to(x.dtype) if self.net.kind == "t2i_adapter" else t
        return out.map(finish)

    def _base_x_embedder(self):
        """The patch embedding of the MODEL being sampled, in its own compute dtype (an SD3.5 ControlNet file
        holds none: ComfyUI copies the base's weights into the net before sampling)."""
        base = getattr(self.base_model, "module", None)
        embedder = getattr(base, "x_embedder", None)
        if embedder is None:
            raise ModelError("An SD3.5 ControlNet (Stability's format) runs on an SD3.5 MM-DiT model's patch "
                             "embedding", f"the MODEL is a {type(base).__name__}; connect an SD3.5 large model")
        dtype = getattr(base, "compute_dtype", None) or embedder.proj.weight.dtype
        return lambda x: embedder(x.to(dtype))

    def residuals(self, x: Tensor, timestep: Tensor, inputs: dict, *, sigma: float, chunks: int,
                  model_sampling) -> ControlResiduals | None:
        """What this application and those below it add to one UNet call. x: the model's scaled input
        [N, 4, H, W] (N = `chunks` CFG chunks), timestep [N] the model's timestep, inputs the batch's
        conditioning inputs (c_crossattn, y), sigma the step's noise level."""
        below = None if self.previous is None else self.previous.residuals(
            x, timestep, inputs, sigma=sigma, chunks=chunks, model_sampling=model_sampling)
        if not self._is_active(sigma, model_sampling):
            return below
        return self._own_residuals(x, timestep, inputs, chunks).plus(below)


def _prepared_sd35_hint(pixels: Tensor, control_kind: str) -> Tensor:
    """The hint pixels [B, C, H, W] as Stability's SD3.5 ControlNets were trained on them (ComfyUI
    load_controlnet_sd35's preprocess_image): canny edges a * 255 * 0.5 + 0.5, depth inverted, blur as is."""
    if control_kind == "canny":
        return pixels * 127.5 + 0.5
    if control_kind == "depth":
        return 1.0 - pixels
    return pixels


def _hint_from_image(image: Tensor) -> Tensor:
    return image.movedim(-1, 1)                                            # IMAGE [B, H, W, C] -> [B, C, H, W]


def apply_control(positive: list, negative: list, net: ControlNetFile, image: Tensor, *, strength: float,
                  start_percent: float = 0.0, end_percent: float = 1.0, vae=None,
                  extra_concat: Sequence[Tensor] = ()) -> tuple[list, list]:
    """ControlNetApplyAdvanced: both conditionings get the application (one object per control it is
    stacked on, shared by positive and negative so the CFG pair still batches). `vae` encodes the hint of
    the control models that take a latent (SD3); others ignore it, as ComfyUI does."""
    if strength == 0:
        return positive, negative
    _check_net(net)
    if net.takes_latent_hint and vae is None:
        raise PlexusError("invalid_input", "This ControlNet (SD3 / FLUX) takes its hint as a latent: connect a VAE",
                          "connect the model's VAE to the 'vae' input of the Apply ControlNet node")
    hint = _hint_from_image(image)
    made: dict[int, ControlApplication] = {}
    out = []
    for conditioning in (positive, negative):
        entries = []
        for tensor, options in conditioning:
            previous = options.get("control")
            application = made.get(id(previous))
            if application is None:
                application = made[id(previous)] = ControlApplication(
                    net, hint, strength, (start_percent, end_percent), vae=vae, previous=previous,
                    extra_concat=extra_concat)
            entries.append([tensor, {**options, "control": application, "control_apply_to_uncond": False}])
        out.append(entries)
    return out[0], out[1]


def apply_inpainting_control(positive: list, negative: list, net: ControlNetFile, vae, image: Tensor, mask: Tensor,
                             *, strength: float, start_percent: float = 0.0, end_percent: float = 1.0) -> tuple[list, list]:
    """ControlNetInpaintingAliMamaApply: for an inpainting ControlNet (a keep-mask hint channel) the hint
    image is blacked out where `mask` is 1 (the mask resized bilinearly to the image and rounded) and the
    keep-mask 1 - mask joins the latent hint; other ControlNets get the plain ControlNetApplyAdvanced."""
    _check_net(net)
    extra: list[Tensor] = []
    module = net.model.module if net.model is not None else None
    if getattr(getattr(module, "config", None), "is_inpaint", False):
        keep = 1.0 - mask.reshape(-1, 1, mask.shape[-2], mask.shape[-1]).float()         # [Bm, 1, h, w]
        keep_at_image = upscale(keep, image.shape[2], image.shape[1], "bilinear", "center").round()
        if keep_at_image.shape[0] not in (1, image.shape[0]):
            raise PlexusError("invalid_input", "ControlNetInpaintingAliMamaApply: the mask batch does not fit the "
                              "image batch", f"{keep_at_image.shape[0]} masks for {image.shape[0]} images")
        image = image * keep_at_image.movedim(1, -1)                                   # [B, H, W, 1] broadcasts
        extra = [keep]
    return apply_control(positive, negative, net, image, strength=strength, start_percent=start_percent,
                         end_percent=end_percent, vae=vae, extra_concat=extra)


def apply_control_to_one(conditioning: list, net: ControlNetFile, image: Tensor, *, strength: float) -> list:
    """ControlNetApply (deprecated): one conditioning; the negative gets the same control at sampling."""
    if strength == 0:
        return conditioning
    _check_net(net)
    if net.takes_latent_hint:
        raise PlexusError("invalid_input", "This ControlNet (SD3 / FLUX) takes its hint as a latent and needs a VAE",
                          "use Apply ControlNet (ControlNetApplyAdvanced) and connect the model's VAE to its 'vae' input")
    hint = _hint_from_image(image)
    return [[tensor, {**options, "control": ControlApplication(net, hint, strength, previous=options.get("control")),
                      "control_apply_to_uncond": True}] for tensor, options in conditioning]


def _check_net(net: Any) -> None:
    if not isinstance(net, ControlNetFile):
        raise PlexusError("invalid_input", "control_net is not a ControlNet loaded by Plexus",
                          f"got {type(net).__name__}; connect a ControlNetLoader")


# --- sampling support (diffusion.ksampler) ----------------------------------------------------------------

def share_with_uncond(positive: Sequence, negative: Sequence | None) -> Sequence | None:
    """The negative with the controls of positive entries marked control_apply_to_uncond (ControlNetApply)
    copied onto its area-less entries without one, unless one of those already has a control (ComfyUI
    apply_empty_x_to_equal_area)."""
    if not negative:
        return negative
    controls = [o["control"] for _, o in positive
                if o.get("control_apply_to_uncond") and "area" not in o and o.get("control") is not None]
    if not controls:
        return negative
    if any(o.get("control") is not None for _, o in negative if "area" not in o):
        return negative
    free = [i for i, (_, o) in enumerate(negative) if "area" not in o]
    if not free:
        return negative
    out = [list(entry) for entry in negative]
    for k, control in enumerate(controls):
        i = free[k % len(free)]
        out[i] = [out[i][0], {**out[i][1], "control": control}]
    return out


def control_models(*conditionings: Iterable | None, base_model=None) -> list[ControlModel]:
    """Every control model the conditionings use (to load with the diffusion model `base_model`), each once."""
    seen: dict[int, ControlModel] = {}
    for conditioning in conditionings:
        for entry in conditioning or ():
            control = entry[1].get("control") if len(entry) > 1 else None
            if isinstance(control, SamplingControl):
                for model in control.models(base_model):
                    seen.setdefault(id(model.shared), model)
    return list(seen.values())


def _each_control(conditionings: Iterable) -> Iterable[SamplingControl]:
    seen: set[int] = set()
    for conditioning in conditionings:
        for entry in conditioning or ():
            control = entry[1].get("control") if len(entry) > 1 else None
            if isinstance(control, SamplingControl) and id(control) not in seen:
                seen.add(id(control))
                yield control


def tell_sample_sigmas(sigmas: Tensor, *conditionings: Iterable | None) -> None:
    """Before the first step: each control of the conditionings, once, gets the sigmas the sampler walks."""
    for control in _each_control(conditionings):
        control.set_sample_sigmas(sigmas)


def finish_controls(*conditionings: Iterable | None) -> None:
    """After a sampling run: each control of the conditionings is told once (ComfyUI's cleanup)."""
    for control in _each_control(conditionings):
        control.finish()


def residuals_for_call(x: Tensor, timestep: Tensor, inputs: dict, model_sampling) -> ControlResiduals | None:
    """The model function's hook: the batch's control residuals, or None when it has no control."""
    control = inputs.get("control")
    if not isinstance(control, SamplingControl):
        return None
    options = inputs.get("transformer_options") or {}
    sigmas = options.get("sigmas")
    sigma = float(sigmas.reshape(-1)[0]) if sigmas is not None else float(model_sampling.sigma(timestep[:1]))
    chunks = len(options.get("cond_or_uncond") or [0])
    return control.residuals(x, timestep, inputs, sigma=sigma, chunks=chunks, model_sampling=model_sampling)
