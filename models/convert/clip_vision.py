"""CLIP vision files onto models/clip_vision.py names (Hugging Face `vision_model.*` / `visual_projection`).

Layouts:
- Hugging Face (`CLIPVisionModelWithProjection`, `SiglipVisionModel`, or a whole `CLIPModel` file): keys
  kept; everything outside the vision tower (text model, `position_ids` buffers, SigLIP's attention-pool
  `head`, `logit_scale`) is left out, as ComfyUI's non-strict load leaves it;
- OpenCLIP (`visual.*`, and the tower bundled in SD2.1 unCLIP checkpoints under `embedder.model.visual.*`):
  `class_embedding`, `conv1`, `positional_embedding`, `ln_pre`, `ln_post`, `proj` [C, P] (transposed to
  the projection's [P, C] weight) and `transformer.resblocks.N.{ln_1, attn.in_proj_*, attn.out_proj,
  ln_2, mlp.c_fc, mlp.c_proj}` (the fused q/k/v projection split in three).
"""
from __future__ import annotations

import re
from collections.abc import Mapping

from torch import Tensor

OPEN_CLIP_PREFIXES = ("visual.", "embedder.model.visual.")
HF_PREFIXES = ("vision_model.", "visual_projection.")

_OPEN_CLIP_TOP = {
    "class_embedding": "vision_model.embeddings.class_embedding",
    "conv1.weight": "vision_model.embeddings.patch_embedding.weight",
    "positional_embedding": "vision_model.embeddings.position_embedding.weight",
    "ln_pre.weight": "vision_model.pre_layrnorm.weight",
    "ln_pre.bias": "vision_model.pre_layrnorm.bias",
    "ln_post.weight": "vision_model.post_layernorm.weight",
    "ln_post.bias": "vision_model.post_layernorm.bias",
}
_OPEN_CLIP_LAYER = {"ln_1": "layer_norm1", "ln_2": "layer_norm2", "attn.out_proj": "self_attn.out_proj",
                    "mlp.c_fc": "mlp.fc1", "mlp.c_proj": "mlp.fc2"}
_RESBLOCK = re.compile(r"transformer\.resblocks\.(\d+)\.(.+)\.(weight|bias)")
_IN_PROJ = re.compile(r"transformer\.resblocks\.(\d+)\.attn\.in_proj_(weight|bias)")


def open_clip_prefix(keys) -> str | None:
    """The OpenCLIP visual prefix of these keys, or None when they are not in that layout."""
    keys = set(keys)
    for prefix in OPEN_CLIP_PREFIXES:
        if prefix + "transformer.resblocks.0.attn.in_proj_weight" in keys:
            return prefix
    return None


def open_clip_to_hf(state: Mapping[str, Tensor], prefix: str) -> dict[str, Tensor]:
    """An OpenCLIP visual tower under `prefix` -> Hugging Face names (keys outside `prefix` are ignored;
    a key inside it that maps to nothing raises, naming it)."""
    out: dict[str, Tensor] = {}
    unmapped = []
    for key in state:
        if not key.startswith(prefix):
            continue
        name = key[len(prefix):]
        if name in _OPEN_CLIP_TOP:
            out[_OPEN_CLIP_TOP[name]] = state[key]
        elif name == "proj":
            out["visual_projection.weight"] = state[key].t()                  # [C, P] -> [P, C]
        elif m := _IN_PROJ.fullmatch(name):
            layer, param = m.groups()
            q, k, v = state[key].chunk(3, dim=0)                              # [3C, ...] -> 3 x [C, ...]
            base = f"vision_model.encoder.layers.{layer}.self_attn."
            out[base + "q_proj." + param], out[base + "k_proj." + param], out[base + "v_proj." + param] = q, k, v
        elif (m := _RESBLOCK.fullmatch(name)) and m.group(2) in _OPEN_CLIP_LAYER:
            layer, module, param = m.groups()
            out[f"vision_model.encoder.layers.{layer}.{_OPEN_CLIP_LAYER[module]}.{param}"] = state[key]
        else:
            unmapped.append(key)
    if unmapped:
        from models.errors import UnknownModelError, summarise_keys
        raise UnknownModelError("CLIP vision (OpenCLIP layout): keys with no place in the vision tower",
                                summarise_keys(unmapped))
    return out


def hf_vision_keys(keys) -> list[str]:
    """The keys of a Hugging Face file that belong to the vision tower."""
    return [k for k in keys if k.startswith(HF_PREFIXES) and not k.endswith("position_ids")
            and not k.startswith("vision_model.head.")]


def hf_to_open_clip(state: Mapping[str, Tensor], prefix: str) -> dict[str, Tensor]:
    """The inverse of `open_clip_to_hf`: a tower in Hugging Face names -> OpenCLIP names under `prefix`
    (q, k, v fused into `in_proj`, the projection transposed back to [C, P]); a key with no OpenCLIP name
    (a SigLIP tower's, say) raises, naming it."""
    import torch

    top = {hf: oc for oc, hf in _OPEN_CLIP_TOP.items()}
    layer_names = {hf: oc for oc, hf in _OPEN_CLIP_LAYER.items()}
    layer_key = re.compile(r"vision_model\.encoder\.layers\.(\d+)\.(.+)\.(weight|bias)")
    out: dict[str, Tensor] = {}
    fused: dict[tuple[str, str], dict[str, Tensor]] = {}
    unmapped = []
    for key, tensor in state.items():
        if key in top:
            out[prefix + top[key]] = tensor
        elif key == "visual_projection.weight":
            out[prefix + "proj"] = tensor.t().contiguous()                    # [P, C] -> [C, P]
        elif (m := layer_key.fullmatch(key)) and m.group(2) in layer_names:
            layer, module, param = m.groups()
            out[f"{prefix}transformer.resblocks.{layer}.{layer_names[module]}.{param}"] = tensor
        elif (m := layer_key.fullmatch(key)) and m.group(2) in ("self_attn.q_proj", "self_attn.k_proj",
                                                                 "self_attn.v_proj"):
            layer, module, param = m.groups()
            fused.setdefault((layer, param), {})[module.rsplit(".", 1)[1][0]] = tensor  # "q" / "k" / "v"
        else:
            unmapped.append(key)
    for (layer, param), parts in fused.items():
        if set(parts) != {"q", "k", "v"}:
            unmapped.append(f"vision_model.encoder.layers.{layer}.self_attn.*_proj.{param}")
            continue
        out[f"{prefix}transformer.resblocks.{layer}.attn.in_proj_{param}"] = torch.cat(
            [parts["q"], parts["k"], parts["v"]])                             # 3 x [C, ...] -> [3C, ...]
    if unmapped:
        from models.errors import UnknownModelError, summarise_keys
        raise UnknownModelError("CLIP vision: keys with no OpenCLIP name", summarise_keys(unmapped))
    return out
