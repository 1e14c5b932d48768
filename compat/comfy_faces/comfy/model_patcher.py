"""ComfyUI's ``comfy.model_patcher`` for plugins. A MODEL in Plexus is ``diffusion.objects.DiffusionModel``,
which carries ModelPatcher's surface itself (clone, add_patches, model_options, set_model_*_patch /
_replace, set_model_sampler_*_cfg_function, get_model_object, model, load_device, ...; see
diffusion.patcher_surface), so ``ModelPatcher`` here is the type packs check and annotate with:
``isinstance(model, ModelPatcher)`` holds for Plexus's MODEL, CLIP and VAE handles. Constructing a
patcher around a bare ``torch.nn.Module`` is not supported (Plexus's models are loaded through its own
loaders) and says so."""
from __future__ import annotations

import abc
import copy
from typing import Any

from diffusion.objects import Autoencoder, DiffusionModel, TextEncoders


class ModelPatcher(abc.ABC):
    def __new__(cls, *args, **kwargs):
        if cls is ModelPatcher:
            raise NotImplementedError("comfy.model_patcher.ModelPatcher(model, ...): Plexus wraps only the "
                                      "models its loaders load; use a MODEL input (or comfy.sd loaders)")
        return super().__new__(cls)


ModelPatcher.register(DiffusionModel)
ModelPatcher.register(TextEncoders)
ModelPatcher.register(Autoencoder)


def create_model_options_clone(orig_model_options: dict) -> dict:
    """A copy of model_options whose nested transformer_options / patch lists can be changed safely."""
    return copy.deepcopy({k: v for k, v in orig_model_options.items()}, memo={id(v): v for v in
                         orig_model_options.values() if not isinstance(v, (dict, list))})


def set_model_options_patch_replace(model_options: dict, patch: Any, name: str, block_name: str, number: int,
                                    transformer_index: int | None = None) -> dict:
    from diffusion import patch_api
    model_options = dict(model_options)
    patch_api.with_patch_replace(model_options, patch, name, block_name, number, transformer_index)
    return model_options


def set_model_options_post_cfg_function(model_options: dict, post_cfg_function: Any,
                                        disable_cfg1_optimization: bool = False) -> dict:
    model_options = dict(model_options)
    model_options["sampler_post_cfg_function"] = list(model_options.get("sampler_post_cfg_function", [])) + [post_cfg_function]
    return model_options


def set_model_options_pre_cfg_function(model_options: dict, pre_cfg_function: Any,
                                       disable_cfg1_optimization: bool = False) -> dict:
    model_options = dict(model_options)
    model_options["sampler_pre_cfg_function"] = list(model_options.get("sampler_pre_cfg_function", [])) + [pre_cfg_function]
    return model_options
