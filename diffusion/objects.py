"""The objects nodes pass around as MODEL, CLIP and VAE.

Each is a :class:`model_management.ModelHandle` (a cheap clone over one shared `nn.Module`, with its
own weight patches and options), so LoRA-style patching is `handle.clone()` then
`clone.add_patches({weight_key: fn}, strength)`, and the ModelManager applies the patches of the
handle being loaded. Weight keys are the module's own `state_dict()` names:

- `DiffusionModel` (MODEL): the UNet's keys (`input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight`).
  Options hold what sampling needs from the model family: `model_sampling` (a sampling.ModelSampling),
  `latent_format` (a sampling.LatentFormat), `model_config` (models.detection.ModelConfig or None),
  and the optional hooks `model_function_wrapper` (`wrapper(apply_model, {"input": x, "timestep": t,
  "c": inputs})`, e.g. hypernetworks), `cfg_function` (sampling.guidance CfgFunction, e.g. RescaleCFG),
  `post_cfg_functions`, the ComfyUI-shaped patch options of diffusion.patch_api ("transformer_options",
  "sampler_cfg_function", "sampler_pre_cfg_function", "sampler_post_cfg_function"), and `compile_backend` (the torch.compile backend used with `--compile-unet`;
  default "inductor"; tests use "aot_eager"). Clones copy the options dict, so a node sets them on its
  own clone only.
- `TextEncoders` (CLIP): one container module holding every text tower by kind (`towers.clip_l.model.
  text_model.encoder.layers.0.mlp.fc1.weight`); plus the clip skip and an optional embedding lookup.
- `Autoencoder` (VAE): the AutoencoderKL's keys (`decoder.up.0.block.0.conv1.weight`).

The API is deliberately small and stable; ComfyUI-ish names (`clone`, `model_options`,
`get_model_object`, `add_patches`, `set_model_unet_function_wrapper`, `clip_layer`) exist so that a
compatibility layer for plugins stays thin.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import nn

from model_management import ModelHandle
from models.text.prompt import EmbeddingLookup

from . import patch_api
from .patcher_surface import ClipSurface, PatcherSurface, VaeSurface

ModelFunctionWrapper = Callable[[Callable, dict], torch.Tensor]   # (apply_model, {"input", "timestep", "c"}) -> out


class ManagedHandle(ModelHandle):
    """A ModelHandle whose clones keep their subclass and the extra attributes in `_EXTRA`."""

    _EXTRA: tuple[str, ...] = ()

    def __init__(self, module: nn.Module, *, manager: Any, name: str = "", source_key: str | None = None,
                 options: Mapping[str, Any] | None = None) -> None:
        super().__init__(module, name=name, source_key=source_key, options=options)
        self.manager = manager          # the model_management.ModelManager that loads this handle

    def clone(self):
        twin = super().clone()
        twin.__class__ = type(self)
        twin.manager = self.manager
        for attr in self._EXTRA:
            setattr(twin, attr, getattr(self, attr))
        return twin


class DiffusionModel(PatcherSurface, ManagedHandle):
    """MODEL: the denoiser (UNet) with its model sampling and latent format."""

    @property
    def model_options(self) -> dict[str, Any]:
        """ComfyUI's name for the per-graph options (a dict owned by this clone)."""
        return self.options

    @property
    def model_sampling(self):
        return self.options["model_sampling"]

    @property
    def latent_format(self):
        return self.options["latent_format"]

    @property
    def model_config(self):
        return self.options.get("model_config")

    @property
    def in_channels(self) -> int:
        # latent channels the model takes (FLUX's config counts 2x2-patch values: 64 for 16 channels)
        return getattr(self.module, "latent_in_channels", self.module.config.in_channels)

    def get_model_object(self, name: str) -> Any:
        """`model_sampling`, `latent_format`, `model_config`, or an attribute of the module."""
        if name in self.options:
            return self.options[name]
        return getattr(self.module, name)

    def with_model_sampling(self, model_sampling) -> DiffusionModel:
        twin = self.clone()
        twin.options["model_sampling"] = model_sampling
        return twin

    def set_model_unet_function_wrapper(self, wrapper: ModelFunctionWrapper) -> None:
        """`wrapper(apply_model, {"input": x, "timestep": t, "c": inputs})` replaces each model call."""
        self.options["model_function_wrapper"] = wrapper

    # --- the patch API (diffusion.patch_api; ComfyUI ModelPatcher's method names and shapes) -------------

    def set_cfg_function(self, fn) -> None:
        """A typed sampling.guidance CfgFunction (CfgArgs -> guided x0), e.g. `rescale_cfg(0.7)`."""
        self.options["cfg_function"] = fn

    def add_post_cfg_function(self, fn) -> None:
        """A typed PostCfgFunction ((CfgArgs, x0) -> x0), run after CFG in the order added."""
        self.options["post_cfg_functions"] = tuple(self.options.get("post_cfg_functions", ())) + (fn,)

    def add_pre_cfg_function(self, fn) -> None:
        """A typed PreCfgFunction (CfgArgs -> (cond_x0, uncond_x0)), run before CFG."""
        self.options["pre_cfg_functions"] = tuple(self.options.get("pre_cfg_functions", ())) + (fn,)

    def set_model_sampler_cfg_function(self, fn, disable_cfg1_optimization: bool = False) -> None:
        """ComfyUI form: `fn(args dict) -> x - guided_x0` (see diffusion.patch_api)."""
        self.options["sampler_cfg_function"] = fn

    def set_model_sampler_post_cfg_function(self, fn, disable_cfg1_optimization: bool = False) -> None:
        """ComfyUI form: `fn(args dict) -> x0`, args["calc_cond_batch"] re-runs the model."""
        self.options["sampler_post_cfg_function"] = list(self.options.get("sampler_post_cfg_function", [])) + [fn]

    def set_model_sampler_pre_cfg_function(self, fn, disable_cfg1_optimization: bool = False) -> None:
        """ComfyUI form: `fn(args dict) -> [cond_x0, uncond_x0]`."""
        self.options["sampler_pre_cfg_function"] = list(self.options.get("sampler_pre_cfg_function", [])) + [fn]

    def set_model_patch(self, patch, name: str) -> None:
        """Append to transformer_options["patches"][name] (models/unet_patches lists the names)."""
        patch_api.with_patch(self.options, name, patch)

    def set_model_patch_replace(self, patch, name: str, block_name: str, number: int,
                                transformer_index: int | None = None) -> None:
        patch_api.with_patch_replace(self.options, patch, name, block_name, number, transformer_index)

    def set_model_attn1_patch(self, patch) -> None:
        self.set_model_patch(patch, "attn1_patch")

    def set_model_attn2_patch(self, patch) -> None:
        self.set_model_patch(patch, "attn2_patch")

    def set_model_attn1_replace(self, patch, block_name: str, number: int, transformer_index: int | None = None):
        self.set_model_patch_replace(patch, "attn1", block_name, number, transformer_index)

    def set_model_attn2_replace(self, patch, block_name: str, number: int, transformer_index: int | None = None):
        self.set_model_patch_replace(patch, "attn2", block_name, number, transformer_index)

    def set_model_attn1_output_patch(self, patch) -> None:
        self.set_model_patch(patch, "attn1_output_patch")

    def set_model_attn2_output_patch(self, patch) -> None:
        self.set_model_patch(patch, "attn2_output_patch")

    def set_model_input_block_patch(self, patch) -> None:
        self.set_model_patch(patch, "input_block_patch")

    def set_model_input_block_patch_after_skip(self, patch) -> None:
        self.set_model_patch(patch, "input_block_patch_after_skip")

    def set_model_output_block_patch(self, patch) -> None:
        self.set_model_patch(patch, "output_block_patch")


class TextEncoderStack(nn.Module):
    """Every text tower of a model, by kind ("clip_l", "open_clip_h", later "clip_g", "t5xxl"), in order.
    Conditioning is the towers' hidden states concatenated on the channel axis; pooled is the last's."""

    def __init__(self, encoders: Mapping[str, nn.Module]):
        super().__init__()
        self.towers = nn.ModuleDict(dict(encoders))

    def __iter__(self):
        return iter(self.towers.values())

    def __len__(self) -> int:
        return len(self.towers)


# text tower kind -> the entry of an SDXL embedding file it reads
EMBEDDING_ENTRY_OF_TOWER = {"clip_l": "clip_l", "clip_g": "clip_g", "open_clip_g": "clip_g"}


class TextEncoders(ClipSurface, ManagedHandle):
    """CLIP: the text towers plus clip skip (None = each tower's default) and an embedding lookup
    (`name -> Tensor [n, C] | None`, used for `embedding:name` in prompts; set by whoever loads embeddings)."""

    _EXTRA = ("clip_skip", "embedding_lookup")

    def __init__(self, module: TextEncoderStack, *, manager: Any, name: str = "", source_key: str | None = None,
                 clip_skip: int | None = None, embedding_lookup: EmbeddingLookup | None = None) -> None:
        super().__init__(module, manager=manager, name=name, source_key=source_key)
        self.clip_skip = clip_skip
        self.embedding_lookup = embedding_lookup

    @property
    def towers(self) -> list[nn.Module]:
        return list(self.module)

    def clip_layer(self, stop_at_clip_layer: int) -> None:
        """ComfyUI's CLIPSetLastLayer on this clone: -1 last layer, -2 penultimate, ..."""
        self.clip_skip = stop_at_clip_layer

    def with_clip_skip(self, stop_at_clip_layer: int) -> TextEncoders:
        twin = self.clone()
        twin.clip_skip = stop_at_clip_layer
        return twin

    def lookup_for(self, tower: nn.Module) -> EmbeddingLookup | None:
        """The embedding lookup one tower tokenizes with: an SDXL embedding file holds one entry per tower
        (`clip_l` [n, 768], `clip_g` [n, 1280]), and each tower reads its own (as ComfyUI's embedding_key),
        else the entry of its width; a plain callable lookup serves every tower alike."""
        per_tower = getattr(self.embedding_lookup, "lookup", None)
        if per_tower is None:
            return self.embedding_lookup
        return per_tower(width=tower.config.hidden_size, tower=EMBEDDING_ENTRY_OF_TOWER.get(tower.kind))

    def with_embedding_lookup(self, lookup: EmbeddingLookup | None) -> TextEncoders:
        twin = self.clone()
        twin.embedding_lookup = lookup
        return twin


class Autoencoder(VaeSurface, ManagedHandle):
    """VAE: images [B, H, W, 3] in [0, 1] <-> raw (unscaled) latents; see diffusion.vae_ops."""

    @property
    def downscale_ratio(self) -> int:
        return self.module.config.downscale_factor

    @property
    def latent_channels(self) -> int:
        return self.module.config.embed_dim
