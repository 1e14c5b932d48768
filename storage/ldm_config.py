"""The two settings ComfyUI's deprecated CheckpointLoader reads from an original LDM inference YAML
(models/configs: v1-inference.yaml, v1-inference_clip_skip_2.yaml, v2-inference-v.yaml, ...); the model
itself always comes from the checkpoint's tensors (diffusion/ldm_config.py applies the settings).

ComfyUI 0.3.64 (comfy.sd.load_checkpoint) looks at exactly these keys:

- ``model.params.parameterization``: "v" makes the model v-prediction; any other value, or none, leaves
  the prediction type the tensors gave;
- ``model.params.cond_stage_config.params.layer_idx``: the text encoder's last layer (-2 = clip skip 2).

The YAML is data: ``yaml.safe_load`` and nothing else of it is used. A file that is not an LDM config
(no ``model.params``) is refused with the file named, where ComfyUI raises a KeyError.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import yaml

from storage.errors import StorageError


@dataclass(frozen=True)
class LdmSettings:
    """What an LDM inference config changes on a loaded checkpoint."""
    v_prediction: bool = False
    clip_layer: int | None = None


def read_ldm_config(path: str | os.PathLike) -> LdmSettings:
    path = Path(path)
    try:
        config = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise StorageError("invalid_config", f"config {path.name!r} is not a readable YAML file", str(exc)) from exc
    params = (config.get("model") or {}).get("params") if isinstance(config, dict) else None
    if not isinstance(params, dict):
        raise StorageError("invalid_config", f"config {path.name!r} is not an LDM inference config",
                           "expected 'model: params: ...' as in v1-inference.yaml or v2-inference-v.yaml")
    stage = params.get("cond_stage_config") or {}
    stage_params = stage.get("params") if isinstance(stage, dict) else None
    layer = stage_params.get("layer_idx") if isinstance(stage_params, dict) else None
    if layer is not None and (isinstance(layer, bool) or not isinstance(layer, int) or layer >= 0):
        raise StorageError("invalid_config", f"config {path.name!r}: cond_stage_config layer_idx must be a "
                                             f"negative integer (-2 = the second-to-last layer), not {layer!r}")
    return LdmSettings(v_prediction=params.get("parameterization") == "v", clip_layer=layer)
