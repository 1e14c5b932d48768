"""LoRA module names of SD3 / SD3.5 (MM-DiT) -> Plexus weight keys (the single-file names of models/mmdit.py).

Trainers name an MM-DiT module in one of two layouts:
- the single-file (Stability AI reference) layout: kohya sd-scripts' SD3 LoRAs underscore it under
  `lora_unet_` (`lora_unet_joint_blocks_0_x_block_attn_qkv`); ComfyUI-trained files use it dotted under
  `diffusion_model.` (`diffusion_model.joint_blocks.0.x_block.attn.qkv`).
- diffusers' SD3Transformer2DModel names (diffusers / PEFT / SimpleTuner), under `transformer.`, optionally
  below PEFT's `base_model.model.`: `transformer.transformer_blocks.0.attn.to_out.0`.

Where diffusers splits one fused single-file weight, its names address row blocks of it (`WeightSlice`):
`attn.to_q` / `to_k` / `to_v` are rows 0..D, D..2D, 2D..3D of `x_block.attn.qkv`, `attn.add_{q,k,v}_proj`
of `context_block.attn.qkv`, `attn2.to_{q,k,v}` of `x_block.attn2.qkv` (dual attention); the loader patches
those rows (adapters.RowBlocks), as ComfyUI's key map does with (offset, size) slices. The pre-only last
context block's adaLN (`norm1_context.linear`) and the final layer's (`norm_out.linear`) are diffusers'
AdaLayerNormContinuous, (scale, shift), where the single file has (shift, scale): those names map to
`HalvesSwapped` and their patches are applied with the two output-row halves swapped (adapters.SwapHalves),
as ComfyUI's key map applies its swap_scale_shift to them. Module correspondences: diffusers' single-file
converter (`convert_sd3_transformer_checkpoint_to_diffusers`, whose swap_scale_shift reorders exactly these
two weights), read for facts.
"""
from __future__ import annotations

from collections.abc import Iterable

from models.lora.loader import HalvesSwapped, WeightSlice
from models.mmdit import MMDiTConfig

_DIFFUSERS_PREFIXES = ("transformer.", "", "base_model.model.", "transformer.base_model.model.")
_SINGLE_FILE_PREFIXES = ("diffusion_model.", "model.diffusion_model.")

_TOP = {
    "x_embedder.proj": "pos_embed.proj", "context_embedder": "context_embedder", "final_layer.linear": "proj_out",
    "t_embedder.mlp.0": "time_text_embed.timestep_embedder.linear_1",
    "t_embedder.mlp.2": "time_text_embed.timestep_embedder.linear_2",
    "y_embedder.mlp.0": "time_text_embed.text_embedder.linear_1",
    "y_embedder.mlp.2": "time_text_embed.text_embedder.linear_2",
}


def _diffusers_modules(config: MMDiTConfig) -> dict[str, str]:
    """{single-file module path: diffusers module path} for every whole-weight correspondence."""
    out = dict(_TOP)
    for i in range(config.depth):
        s, d = f"joint_blocks.{i}", f"transformer_blocks.{i}"
        out |= {f"{s}.x_block.attn.proj": f"{d}.attn.to_out.0", f"{s}.x_block.mlp.fc1": f"{d}.ff.net.0.proj",
                f"{s}.x_block.mlp.fc2": f"{d}.ff.net.2", f"{s}.x_block.adaLN_modulation.1": f"{d}.norm1.linear"}
        if i in config.dual_attention_blocks:
            out[f"{s}.x_block.attn2.proj"] = f"{d}.attn2.to_out.0"
        if i < config.depth - 1:
            out |= {f"{s}.context_block.attn.proj": f"{d}.attn.to_add_out",
                    f"{s}.context_block.mlp.fc1": f"{d}.ff_context.net.0.proj",
                    f"{s}.context_block.mlp.fc2": f"{d}.ff_context.net.2",
                    f"{s}.context_block.adaLN_modulation.1": f"{d}.norm1_context.linear"}
    return out


def _diffusers_slices(config: MMDiTConfig) -> dict[str, tuple[str, int]]:
    """{diffusers module path: (single-file module of the fused qkv, which third)}."""
    out = {}
    for i in range(config.depth):
        s, d = f"joint_blocks.{i}", f"transformer_blocks.{i}"
        for third, part in enumerate("qkv"):
            out[f"{d}.attn.to_{part}"] = (f"{s}.x_block.attn.qkv", third)
            out[f"{d}.attn.add_{part}_proj"] = (f"{s}.context_block.attn.qkv", third)
            if i in config.dual_attention_blocks:
                out[f"{d}.attn2.to_{part}"] = (f"{s}.x_block.attn2.qkv", third)
    return out


def _diffusers_swapped(config: MMDiTConfig) -> dict[str, str]:
    """{diffusers module path: single-file module} of the (scale, shift) adaLNs (see the module docstring)."""
    last = config.depth - 1
    return {f"transformer_blocks.{last}.norm1_context.linear": f"joint_blocks.{last}.context_block.adaLN_modulation.1",
            "norm_out.linear": "final_layer.adaLN_modulation.1"}


def mmdit_lora_names(config: MMDiTConfig, weight_keys: Iterable[str],
                     prefix: str = "") -> dict[str, str | WeightSlice | HalvesSwapped]:
    """{LoRA module name: weight key, the WeightSlice of a fused qkv, or a HalvesSwapped adaLN} for an MM-DiT
    whose state-dict keys start with `prefix`."""
    keys = set(weight_keys)
    names: dict[str, str | WeightSlice | HalvesSwapped] = dict(
        transformer_lora_names(keys, prefix, _diffusers_modules(config)))
    for diffusers, single in _diffusers_swapped(config).items():
        key = f"{prefix}{single}.weight"
        if key in keys:
            for p in _DIFFUSERS_PREFIXES:
                names[p + diffusers] = HalvesSwapped(key)
    d = config.hidden_size
    for diffusers, (single, third) in _diffusers_slices(config).items():
        key = f"{prefix}{single}.weight"
        if key in keys:
            for p in _DIFFUSERS_PREFIXES:
                names[p + diffusers] = WeightSlice(key, third * d, d)
    return names


def transformer_lora_names(weight_keys: Iterable[str], prefix: str, diffusers_modules: dict[str, str]) -> dict[str, str]:
    """{LoRA module name: weight key} for a single-file transformer (MM-DiT, FLUX) whose keys start with
    `prefix`: kohya `lora_unet_` names, the single-file module paths under their usual prefixes, and the
    diffusers names of `diffusers_modules` ({single-file module: diffusers module}, whole weights only)."""
    modules = {k[len(prefix):-len(".weight")] for k in weight_keys if k.startswith(prefix) and k.endswith(".weight")}
    names: dict[str, str] = {}
    for module in modules:
        key = f"{prefix}{module}.weight"
        names["lora_unet_" + module.replace(".", "_")] = key
        for p in _SINGLE_FILE_PREFIXES:
            names[p + module] = key
    for single, diffusers in diffusers_modules.items():
        if single in modules:
            for p in _DIFFUSERS_PREFIXES:
                names[p + diffusers] = f"{prefix}{single}.weight"
    return names
