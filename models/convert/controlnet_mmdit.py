"""diffusers SD3ControlNetModel files -> models/controlnet_mmdit.py state dicts (single-file MM-DiT names).

A pure function over the state dict: diffusers splits what the single-file layout fuses (`attn.to_q/k/v`
are the row blocks of `x_block.attn.qkv`, `add_{q,k,v}_proj` of `context_block.attn.qkv`), so the
conversion concatenates them; the other modules are renamed one to one (the same correspondences as
models/lora/mmdit_keys.py, from diffusers' single-file converter, read for facts). No block of a ControlNet
is pre-only, so every `norm1_context` is a 6-way (shift, scale, gate) adaLN and needs no reordering.
Unmapped or missing keys raise, listing them.
"""
from __future__ import annotations

import re
from collections.abc import Mapping

import torch
from torch import Tensor

_TOP = {
    "pos_embed.proj": "x_embedder.proj", "pos_embed_input.proj": "pos_embed_input.proj",
    "context_embedder": "context_embedder",
    "time_text_embed.timestep_embedder.linear_1": "t_embedder.mlp.0",
    "time_text_embed.timestep_embedder.linear_2": "t_embedder.mlp.2",
    "time_text_embed.text_embedder.linear_1": "y_embedder.mlp.0",
    "time_text_embed.text_embedder.linear_2": "y_embedder.mlp.2",
}
_BLOCK = {
    "attn.to_out.0": "x_block.attn.proj", "attn.to_add_out": "context_block.attn.proj",
    "attn2.to_out.0": "x_block.attn2.proj",
    "ff.net.0.proj": "x_block.mlp.fc1", "ff.net.2": "x_block.mlp.fc2",
    "ff_context.net.0.proj": "context_block.mlp.fc1", "ff_context.net.2": "context_block.mlp.fc2",
    "norm1.linear": "x_block.adaLN_modulation.1", "norm1_context.linear": "context_block.adaLN_modulation.1",
    "attn.norm_q": "x_block.attn.ln_q", "attn.norm_k": "x_block.attn.ln_k",
    "attn.norm_added_q": "context_block.attn.ln_q", "attn.norm_added_k": "context_block.attn.ln_k",
    "attn2.norm_q": "x_block.attn2.ln_q", "attn2.norm_k": "x_block.attn2.ln_k",
}
_FUSED = {"attn.to_": "x_block.attn.qkv", "attn.add_": "context_block.attn.qkv", "attn2.to_": "x_block.attn2.qkv"}
_BLOCK_KEY = re.compile(r"transformer_blocks\.(\d+)\.(.+)\.(weight|bias)$")


def sd3_controlnet_state(state: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """{single-file name: tensor} of a diffusers SD3ControlNetModel state dict."""
    out: dict[str, Tensor] = {}
    fused: dict[str, dict[str, Tensor]] = {}
    unmapped = []
    for key, tensor in state.items():
        if key == "pos_embed.pos_embed":
            out["pos_embed"] = tensor
            continue
        module, _, leaf = key.rpartition(".")
        if module in _TOP:
            out[f"{_TOP[module]}.{leaf}"] = tensor
            continue
        if module.startswith("controlnet_blocks."):
            out[key] = tensor
            continue
        m = _BLOCK_KEY.match(key)
        if m is None:
            unmapped.append(key)
            continue
        block, name, leaf = m.groups()
        if name in _BLOCK:
            out[f"joint_blocks.{block}.{_BLOCK[name]}.{leaf}"] = tensor
            continue
        for stem, target in _FUSED.items():          # attn.to_q / attn.add_q_proj / attn2.to_q ...
            part = name[len(stem):].removesuffix("_proj") if name.startswith(stem) else ""
            if part in ("q", "k", "v"):
                fused.setdefault(f"joint_blocks.{block}.{target}.{leaf}", {})[part] = tensor
                break
        else:
            unmapped.append(key)
    if unmapped:
        raise KeyError(f"SD3 ControlNet: {len(unmapped)} keys with no place in the model: {sorted(unmapped)[:8]}")
    incomplete = sorted(k for k, parts in fused.items() if set(parts) != {"q", "k", "v"})
    if incomplete:
        raise KeyError(f"SD3 ControlNet: q/k/v projections incomplete for {incomplete[:8]}")
    for key, parts in fused.items():
        out[key] = torch.cat([parts["q"], parts["k"], parts["v"]], dim=0)   # [3D, ...]: q, k, v row blocks
    return out


# --- SD3.5 large ControlNets in Stability AI's layout (models/controlnet_mmdit.py SD35ControlNet) -------------
# The blocks, `controlnet_blocks` and `pos_embed_input` already carry the module's names; the timestep and
# pooled-text embedders may be stored under diffusers' names (the released files) or the single-file ones
# (ComfyUI's MMDIT_MAP_BASIC renames the former; facts only). `control_type` is a value, not a weight.
_SD35_EMBEDDERS = {
    "time_text_embed.timestep_embedder.linear_1": "t_embedder.mlp.0",
    "time_text_embed.timestep_embedder.linear_2": "t_embedder.mlp.2",
    "time_text_embed.text_embedder.linear_1": "y_embedder.mlp.0",
    "time_text_embed.text_embedder.linear_2": "y_embedder.mlp.2",
}
_SD35_BLOCK_KEY = re.compile(r"transformer_blocks\.\d+\.(adaLN_modulation\.1|attn\.qkv|attn\.proj|mlp\.fc1|mlp\.fc2)"
                             r"\.(weight|bias)$")
_SD35_OWN = re.compile(r"(controlnet_blocks\.\d+|pos_embed_input\.proj|t_embedder\.mlp\.[02]|y_embedder\.mlp\.[02])"
                       r"\.(weight|bias)$")
SD35_CONTROL_TYPE_KEY = "control_type"


def sd35_controlnet_state(state: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """{SD35ControlNet name: tensor} of a Stability SD3.5 ControlNet file (without its `control_type`)."""
    out: dict[str, Tensor] = {}
    unmapped = []
    for key, tensor in state.items():
        if key == SD35_CONTROL_TYPE_KEY:
            continue
        module, _, leaf = key.rpartition(".")
        if module in _SD35_EMBEDDERS:
            out[f"{_SD35_EMBEDDERS[module]}.{leaf}"] = tensor
        elif _SD35_BLOCK_KEY.match(key) or _SD35_OWN.match(key):
            out[key] = tensor
        else:
            unmapped.append(key)
    if unmapped:
        raise KeyError(f"SD3.5 ControlNet: {len(unmapped)} keys with no place in the model: {sorted(unmapped)[:8]}")
    return out
