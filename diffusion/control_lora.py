"""Stability control-LoRA files (`control-lora-*-rank*.safetensors`, a `lora_controlnet` key): a ControlNet
stored as low-rank deltas on the encoder of the UNet it is applied to, plus its own full tensors (hint
block, zero convs, norms, biases).

ComfyUI's behaviour kept (comfy/controlnet.py ControlLora): ControlNetLoader only reads what the file is;
the net is built when sampling starts, on the MODEL being sampled: the UNet's config (its encoder half),
the hint channels of the file, each weight from the file when it holds it in full, else the model's own
(with the MODEL's patches, e.g. LoRAs), plus up @ down where the file has low-rank factors. Plexus merges
the deltas once per base model instead of on every forward; the merged net is an ordinary ControlNet
module registered with the model manager (loaded, partly loaded or streamed beside the UNet under the same
budget), rebuilt when the model's weights or patches change or the RAM budget dropped it.
"""
from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import torch

from model_management import ModelPart
from model_management.handle import apply_patches
from models.controlnet import ControlNet, ControlNetConfig, control_lora_state
from models.convert.controlnet import control_lora_parts
from models.detection import ControlModelInfo
from models.errors import ModelError
from models.files import load_state_dict
from models.unet import UNetConfig

from .loading import _dtype_for, attention_setting, load_dtype_for
from .objects import ManagedHandle


class ControlLoraFile:
    """A control-LoRA file (detected, not yet built) and the ControlNet last built from it on a base model."""

    def __init__(self, path: Path, info: ControlModelInfo, manager: Any) -> None:
        self.path = path
        self.info = info
        self.manager = manager
        self._lock = threading.Lock()
        self._built: tuple[tuple, ManagedHandle] | None = None     # (base model key, its ControlNet)

    @property
    def hint_channels(self) -> int:
        return self.info.config.hint_channels

    def model_for(self, base_model, handle_type: type[ManagedHandle]) -> ManagedHandle:
        """The ControlNet of this file on `base_model` (a MODEL over a UNet), built on first use."""
        key = _base_key(base_model)
        with self._lock:
            if self._built is not None and self._built[0] == key and \
                    not self._built[1].shared.__dict__.get("is_dropped"):
                return self._built[1]
            handle = self._build(base_model, handle_type)
            self._built = (key, handle)
            return handle

    def _build(self, base_model, handle_type: type[ManagedHandle]) -> ManagedHandle:
        unet_config = getattr(base_model.module, "config", None)
        if not isinstance(unet_config, UNetConfig):
            raise ModelError(f"{self.path.name} is a control-LoRA, which applies to a UNet model (SD1.x, SD2.x, "
                             "SDXL)", f"the MODEL is a {type(base_model.module).__name__}")
        if self.info.config.has_adm != bool(unet_config.adm_in_channels):
            made_for = "SDXL" if self.info.config.has_adm else "SD1.x/SD2.x"
            raise ModelError(f"{self.path.name} is a control-LoRA for {made_for} models",
                             "connect the model it was made for")
        manager = self.manager
        config = ControlNetConfig(unet=unet_config, hint_channels=self.info.config.hint_channels)
        with torch.device("meta"):
            module = ControlNet(config, attention_setting(manager))
        shapes = {k: tuple(v.shape) for k, v in module.state_dict().items()}
        base = patched_base_weights(base_model, shapes)
        dtype = load_dtype_for(manager, ModelPart.DIFFUSION) or next(iter(base.values())).dtype
        with load_state_dict(self.path) as source:
            full_keys, low_rank_keys = control_lora_parts(source.shapes())
            try:
                state = control_lora_state(
                    shapes, base,
                    {k: source[f] for k, f in full_keys.items()},
                    {k: (source[up], source[down]) for k, (up, down) in low_rank_keys.items()}, dtype)
            except KeyError as error:
                raise ModelError(f"{self.path.name} does not fit this model", str(error.args[0])) from None
            source.release_all()
        module.load_state_dict({k: v.to("cpu") for k, v in state.items()}, assign=True)
        module.eval().requires_grad_(False)
        handle = handle_type(module, manager=manager, name=f"{self.path.name} (control-LoRA)",
                             source_key=f"{self.path}#control-lora@{base_model.shared.id}")
        handle.info = self.info
        manager.register(handle, dtype=_dtype_for(manager, ModelPart.DIFFUSION))
        return handle


def patched_base_weights(base_model, keys) -> dict:
    """{key: the MODEL's weight with its patches merged} for the `keys` its module has, read from the base
    ("home") tensors, so it is right whether the model is loaded, partly loaded or streamed (its slots then
    hold placeholders); a model the RAM budget dropped is reloaded first."""
    if base_model.shared.__dict__.get("is_dropped") or not base_model.shared.weights.home:
        base_model.manager.load_models_for([base_model])
    home = base_model.shared.weights.home
    out = {}
    for key in keys:
        if key in home:
            patches = base_model.patches.get(key)
            out[key] = apply_patches(home[key], patches, key) if patches else home[key]
    return out


def _base_key(base_model) -> tuple:
    """What the built net depends on: the base module and the patches the MODEL puts on its weights."""
    patches = tuple(sorted((k, tuple((id(p.fn), p.strength) for p in v)) for k, v in base_model.patches.items()))
    return base_model.shared.id, patches
