"""FLUX ControlNet files -> models/controlnet_flux.py state dicts (FLUX's BFL names).

- diffusers' FluxControlNetModel layout (InstantX, Shakker-Labs Union / Union-Pro, alimama's inpainting net):
  `instantx_state` renames the embedders (`x_embedder` -> `img_in`, `controlnet_x_embedder` ->
  `pos_embed_input`, `time_text_embed.*` -> `time_in` / `guidance_in` / `vector_in`, `context_embedder` ->
  `txt_in`) and fuses what diffusers splits: `attn.to_q/k/v` are the row blocks of a double block's
  `img_attn.qkv`, `attn.add_{q,k,v}_proj` of `txt_attn.qkv`, and a single block's `attn.to_q/k/v` plus
  `proj_mlp` of its `linear1` (correspondences from diffusers' convert_flux_to_diffusers.py and ComfyUI's
  utils.flux_to_diffusers, read for facts). Its adaLN linears keep their (shift, scale, gate) order.
- XLabs' files are in the module's names already; MistoLine's name the single projections
  `single_controlnet_blocks` (`mistoline_state`).
Unmapped keys raise, listing them.
"""
from __future__ import annotations

import re
from collections.abc import Mapping

import torch
from torch import Tensor

_TOP = {
    "x_embedder": "img_in", "context_embedder": "txt_in", "controlnet_x_embedder": "pos_embed_input",
    "time_text_embed.timestep_embedder.linear_1": "time_in.in_layer",
    "time_text_embed.timestep_embedder.linear_2": "time_in.out_layer",
    "time_text_embed.guidance_embedder.linear_1": "guidance_in.in_layer",
    "time_text_embed.guidance_embedder.linear_2": "guidance_in.out_layer",
    "time_text_embed.text_embedder.linear_1": "vector_in.in_layer",
    "time_text_embed.text_embedder.linear_2": "vector_in.out_layer",
}
_DOUBLE = {
    "norm1.linear": "img_mod.lin", "norm1_context.linear": "txt_mod.lin",
    "attn.to_out.0": "img_attn.proj", "attn.to_add_out": "txt_attn.proj",
    "ff.net.0.proj": "img_mlp.0", "ff.net.2": "img_mlp.2",
    "ff_context.net.0.proj": "txt_mlp.0", "ff_context.net.2": "txt_mlp.2",
}
_DOUBLE_NORMS = {"attn.norm_q": "img_attn.norm.query_norm", "attn.norm_k": "img_attn.norm.key_norm",
                 "attn.norm_added_q": "txt_attn.norm.query_norm", "attn.norm_added_k": "txt_attn.norm.key_norm"}
_DOUBLE_FUSED = {"attn.to_q": ("img_attn.qkv", 0), "attn.to_k": ("img_attn.qkv", 1), "attn.to_v": ("img_attn.qkv", 2),
                 "attn.add_q_proj": ("txt_attn.qkv", 0), "attn.add_k_proj": ("txt_attn.qkv", 1),
                 "attn.add_v_proj": ("txt_attn.qkv", 2)}
_SINGLE = {"norm.linear": "modulation.lin", "proj_out": "linear2"}
_SINGLE_NORMS = {"attn.norm_q": "norm.query_norm", "attn.norm_k": "norm.key_norm"}
_SINGLE_FUSED = {"attn.to_q": ("linear1", 0), "attn.to_k": ("linear1", 1), "attn.to_v": ("linear1", 2),
                 "proj_mlp": ("linear1", 3)}
_BLOCK_KEY = re.compile(r"(transformer_blocks|single_transformer_blocks)\.(\d+)\.(.+)\.(weight|bias)$")
_KEPT = ("controlnet_blocks.", "controlnet_single_blocks.", "controlnet_mode_embedder.")


def instantx_state(state: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """{BFL name: tensor} of a diffusers FluxControlNetModel state dict."""
    out: dict[str, Tensor] = {}
    fused: dict[str, dict[int, Tensor]] = {}
    unmapped = []
    for key, tensor in state.items():
        if key.startswith(_KEPT):
            out[key] = tensor
            continue
        module, _, leaf = key.rpartition(".")
        if module in _TOP:
            out[f"{_TOP[module]}.{leaf}"] = tensor
            continue
        m = _BLOCK_KEY.match(key)
        if m is None:
            unmapped.append(key)
            continue
        group, index, name, leaf = m.groups()
        single = group == "single_transformer_blocks"
        target = f"{'single_blocks' if single else 'double_blocks'}.{index}."
        renames, norms, parts = (_SINGLE, _SINGLE_NORMS, _SINGLE_FUSED) if single else (_DOUBLE, _DOUBLE_NORMS, _DOUBLE_FUSED)
        if name in renames:
            out[f"{target}{renames[name]}.{leaf}"] = tensor
        elif name in norms and leaf == "weight":
            out[f"{target}{norms[name]}.scale"] = tensor
        elif name in parts:
            fused_name, position = parts[name]
            fused.setdefault(f"{target}{fused_name}.{leaf}", {})[position] = tensor
        else:
            unmapped.append(key)
    if unmapped:
        raise KeyError(f"FLUX ControlNet (diffusers layout): {len(unmapped)} keys not understood: {unmapped[:8]}")
    for name, pieces in fused.items():
        expected = 4 if ".linear1." in name else 3
        if sorted(pieces) != list(range(expected)):
            raise KeyError(f"FLUX ControlNet (diffusers layout): {name} is missing some of its q / k / v / mlp parts "
                           f"(found parts {sorted(pieces)} of {expected})")
        out[name] = torch.cat([pieces[i] for i in range(expected)], dim=0)
    return out


def mistoline_state(state: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """MistoLine's file names -> the module's (`single_controlnet_blocks.` -> `controlnet_single_blocks.`)."""
    return {("controlnet_single_blocks." + k[len("single_controlnet_blocks."):]
             if k.startswith("single_controlnet_blocks.") else k): t for k, t in state.items()}


def instantx_file_state(state: Mapping[str, Tensor], hidden: int) -> dict[str, Tensor]:
    """The inverse of `instantx_state` (module state -> diffusers FluxControlNetModel names), for writing files in
    that layout (models.testing): fused q / k / v (and a single block's MLP input) split into their row blocks."""
    top = {v: k for k, v in _TOP.items()}
    renames = {False: {v: k for k, v in _DOUBLE.items()}, True: {v: k for k, v in _SINGLE.items()}}
    norms = {False: {v: k for k, v in _DOUBLE_NORMS.items()}, True: {v: k for k, v in _SINGLE_NORMS.items()}}
    fused = {False: {}, True: {}}
    for single, parts in ((False, _DOUBLE_FUSED), (True, _SINGLE_FUSED)):
        for name, (target, position) in parts.items():
            fused[single].setdefault(target, {})[position] = name
    out: dict[str, Tensor] = {}
    for key, tensor in state.items():
        if key.startswith(_KEPT):
            out[key] = tensor
            continue
        module, _, leaf = key.rpartition(".")
        if module in top:
            out[f"{top[module]}.{leaf}"] = tensor
            continue
        group, index, name = key.split(".", 2)
        name, _, leaf = name.rpartition(".")
        single = group == "single_blocks"
        prefix = f"{'single_transformer_blocks' if single else 'transformer_blocks'}.{index}."
        if name in renames[single]:
            out[f"{prefix}{renames[single][name]}.{leaf}"] = tensor
        elif name in norms[single]:
            out[f"{prefix}{norms[single][name]}.weight"] = tensor
        elif name in fused[single]:
            names = fused[single][name]
            sizes = [hidden] * 3 + ([tensor.shape[0] - 3 * hidden] if len(names) == 4 else [])
            for position, piece in enumerate(torch.split(tensor, sizes, dim=0)):
                out[f"{prefix}{names[position]}.{leaf}"] = piece
        else:
            raise KeyError(f"FLUX ControlNet: no diffusers name for {key}")
    return out
