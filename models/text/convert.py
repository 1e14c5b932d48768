"""Text-encoder checkpoint layouts: sizes from shapes, key conversion, random weights in the real layout.

Two layouts, with the checkpoint prefix (`cond_stage_model.transformer.` / `cond_stage_model.model.`,
SDXL's `conditioner.embedders.0.transformer.` / `conditioner.embedders.1.model.`) already stripped; each
kind has one (`LAYOUTS`): "clip_l" and "clip_g" the HF layout, "open_clip_h" and "open_clip_g" OpenCLIP's.
- HF layout ("clip_l", "clip_g"): Hugging Face CLIPTextModel names, as SD1.x files store them (`text_model.embeddings.
  token_embedding.weight`, `text_model.encoder.layers.N.self_attn.q_proj.weight` ...). SD1.5 also
  stores `text_model.embeddings.position_ids` (I64 0..76, sometimes a drifted float); some old files
  lack the `text_model.` level. An optional `text_projection.weight` is [out, in] (nn.Linear); standalone
  bigG files (`clip_g.safetensors`, transformers' CLIPTextModelWithProjection) always carry it.
- OpenCLIP layout ("open_clip_h", "open_clip_g"): OpenCLIP names, as SD2.x and SDXL files store them: `token_embedding.weight`,
  `positional_embedding` (no `.weight`), `transformer.resblocks.N.{ln_1, attn.in_proj_weight/bias
  (q, k, v stacked on dim 0), attn.out_proj, ln_2, mlp.c_fc, mlp.c_proj}`, `ln_final`,
  `text_projection` [in, out] used as `x @ W` (so the Linear weight is its transpose), `logit_scale`.
  The mapping is the one ComfyUI's `clip_text_transformers_convert` and open_clip's HF export use.

Every function here is pure and works on meta tensors, so full-size layouts can be checked for free.
"""
from __future__ import annotations

import math
import re
from collections.abc import Mapping

import torch
from torch import Tensor

from ..errors import KeyMismatchError, UnknownModelError, summarise_keys
from .clip import KIND_DEFAULTS, ClipTextConfig

KINDS = tuple(KIND_DEFAULTS)
LAYOUTS = {"clip_l": "hf", "clip_g": "hf", "clip_h": "hf", "open_clip_h": "open_clip", "open_clip_g": "open_clip"}
HEAD_DIM = 64         # every CLIP text tower SD uses: L 768/12, H 1024/16, bigG 1280/20

# OpenCLIP resblock names -> HF layer names (weight and bias each)
_OPEN_CLIP_BLOCK = {
    "ln_1": "layer_norm1", "ln_2": "layer_norm2", "attn.out_proj": "self_attn.out_proj",
    "mlp.c_fc": "mlp.fc1", "mlp.c_proj": "mlp.fc2",
}
_HF_LAYER_PARAMS = [f"{m}.{p}" for m in ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj",
                                          "self_attn.out_proj", "layer_norm1", "layer_norm2", "mlp.fc1", "mlp.fc2")
                    for p in ("weight", "bias")]
# stored in real files, not needed to run (constants or training-only)
_IGNORED = {"hf": {"text_model.embeddings.position_ids", "logit_scale"}, "open_clip": {"logit_scale"}}


def _check_kind(kind: str) -> None:
    if kind not in KINDS:
        raise UnknownModelError(f"unknown text encoder kind {kind!r}; choose one of {list(KINDS)}")


def _layer_count(shapes: Mapping[str, tuple[int, ...]], pattern: str) -> int:
    found = {int(m.group(1)) for k in shapes if (m := re.match(pattern, k))}
    if found != set(range(len(found))):
        raise UnknownModelError(f"text encoder layers are not numbered 0..N-1: found {sorted(found)}")
    return len(found)


def _heads(hidden: int) -> int:
    if hidden < HEAD_DIM:
        return 1                                    # tiny test models
    if hidden % HEAD_DIM:
        raise UnknownModelError(f"text encoder width {hidden} is not a multiple of the {HEAD_DIM}-wide heads "
                                "every CLIP text tower uses")
    return hidden // HEAD_DIM


def _with_text_model_prefix(keys) -> bool:
    return any(k.startswith("text_model.") for k in keys)


def text_encoder_config_from_shapes(kind: str, shapes: Mapping[str, tuple[int, ...]]) -> ClipTextConfig:
    """The config of a text tower from its (prefix-stripped) key -> shape map; pure, no tensors needed."""
    _check_kind(kind)
    shapes = {k: tuple(v) for k, v in shapes.items()}
    if LAYOUTS[kind] == "hf":
        p = "text_model." if _with_text_model_prefix(shapes) else ""
        needed = [f"{p}embeddings.token_embedding.weight", f"{p}embeddings.position_embedding.weight",
                  f"{p}encoder.layers.0.mlp.fc1.weight"]
        layers_re = rf"{re.escape(p)}encoder\.layers\.(\d+)\."
        projection = shapes.get("text_projection.weight", (None,))[0]
    else:
        needed = ["token_embedding.weight", "positional_embedding", "transformer.resblocks.0.mlp.c_fc.weight"]
        layers_re = r"transformer\.resblocks\.(\d+)\."
        projection = shapes.get("text_projection", (None, None))[1]
    missing = [k for k in needed if k not in shapes]
    if missing:
        raise UnknownModelError(
            f"not a {kind} text encoder: missing {', '.join(missing)}",
            f"found {len(shapes)} keys: {summarise_keys(list(shapes))}",
        )
    vocab, hidden = shapes[needed[0]]
    positions = shapes[needed[1]][0]
    return ClipTextConfig.of_kind(
        kind, vocab_size=vocab, max_positions=positions, hidden_size=hidden,
        num_layers=_layer_count(shapes, layers_re), num_heads=_heads(hidden),
        intermediate_size=shapes[needed[2]][0], projection_dim=projection,
    )


def expected_shapes(config: ClipTextConfig) -> dict[str, tuple[int, ...]]:
    """Parameter name -> shape of `ClipTextModel(config)` (the HF layout, `text_model.` included)."""
    c, i = config.hidden_size, config.intermediate_size
    sizes = {"self_attn.q_proj": (c, c), "self_attn.k_proj": (c, c), "self_attn.v_proj": (c, c),
             "self_attn.out_proj": (c, c), "layer_norm1": (c,), "layer_norm2": (c,), "mlp.fc1": (i, c),
             "mlp.fc2": (c, i)}
    out = {"text_model.embeddings.token_embedding.weight": (config.vocab_size, c),
           "text_model.embeddings.position_embedding.weight": (config.max_positions, c)}
    for n in range(config.num_layers):
        for name in _HF_LAYER_PARAMS:
            module, param = name.rsplit(".", 1)
            shape = sizes[module]
            out[f"text_model.encoder.layers.{n}.{name}"] = shape if param == "weight" else shape[:1]
    out["text_model.final_layer_norm.weight"] = (c,)
    out["text_model.final_layer_norm.bias"] = (c,)
    if config.projection_dim:
        out["text_projection.weight"] = (config.projection_dim, c)
    return out


def checkpoint_shapes(kind: str, config: ClipTextConfig) -> dict[str, tuple[int, ...]]:
    """Key -> shape of the real checkpoint layout of `kind` (prefix stripped), optional keys included."""
    return {k: tuple(v.shape) for k, v in random_text_encoder_state_dict(kind, config, device="meta").items()}


def convert_state_dict(kind: str, state_dict: Mapping[str, Tensor], config: ClipTextConfig) -> dict[str, Tensor]:
    """A checkpoint's text-encoder tensors -> `ClipTextModel` parameters. Every key is checked against the
    checkpoint layout first; `KeyMismatchError` lists the unexpected, missing and misshapen keys by their
    names in the file. The known unused keys (`position_ids`, `logit_scale`) may be absent and are dropped."""
    _check_kind(kind)
    tensors = dict(state_dict)
    layout = LAYOUTS[kind]
    if layout == "hf" and not _with_text_model_prefix(tensors):          # old files: no `text_model.` level
        tensors = {k if k in ("text_projection.weight", "logit_scale") else "text_model." + k: v
                   for k, v in tensors.items()}
    _check_against(tensors, checkpoint_shapes(kind, config), _IGNORED[layout], kind)
    kept = {k: v for k, v in tensors.items() if k not in _IGNORED[layout]}
    if layout == "hf":
        return kept
    return dict(pair for key, tensor in kept.items() for pair in _open_clip_key(key, tensor))


def _open_clip_key(key: str, tensor: Tensor) -> list[tuple[str, Tensor]]:
    """One OpenCLIP tensor -> its HF-named tensor(s); the key is known to be valid (checked before)."""
    fixed = {"token_embedding.weight": "text_model.embeddings.token_embedding.weight",
             "positional_embedding": "text_model.embeddings.position_embedding.weight",
             "ln_final.weight": "text_model.final_layer_norm.weight",
             "ln_final.bias": "text_model.final_layer_norm.bias"}
    if key in fixed:
        return [(fixed[key], tensor)]
    if key == "text_projection":
        return [("text_projection.weight", tensor.t())]           # [in, out] (x @ W) -> Linear [out, in]
    m = re.fullmatch(r"transformer\.resblocks\.(\d+)\.(.+)\.(weight|bias)", key) or \
        re.fullmatch(r"transformer\.resblocks\.(\d+)\.(attn)\.in_proj_(weight|bias)", key)
    layer, module, param = m.groups()
    base = f"text_model.encoder.layers.{layer}."
    if module == "attn":
        third = tensor.shape[0] // 3                                  # [3C, ...] = q, k, v stacked
        return [(f"{base}self_attn.{p}_proj.{param}", tensor[third * j:third * (j + 1)])
                for j, p in enumerate("qkv")]
    return [(f"{base}{_OPEN_CLIP_BLOCK[module]}.{param}", tensor)]


def _check_against(found: Mapping[str, Tensor], expected: Mapping[str, tuple[int, ...]],
                   optional: set[str], kind: str) -> None:
    unexpected = sorted(set(found) - set(expected))
    missing = sorted(set(expected) - set(found) - optional)
    misshapen = sorted(f"{k} {tuple(found[k].shape)} != {expected[k]}" for k in set(found) & set(expected)
                       if k not in optional and tuple(found[k].shape) != expected[k])
    if unexpected or missing or misshapen:
        parts = [f"{label} ({len(keys)}): {summarise_keys(keys)}" for label, keys in
                 (("unexpected", unexpected), ("missing", missing), ("wrong shape", misshapen)) if keys]
        raise KeyMismatchError(f"the {kind} text encoder weights do not fit its layout", "\n".join(parts),
                               {"unexpected": unexpected, "missing": missing, "wrong_shape": misshapen})


def random_text_encoder_state_dict(kind: str, config: ClipTextConfig, *, seed: int = 0,
                                   dtype: torch.dtype = torch.float32,
                                   device: torch.device | str = "cpu") -> dict[str, Tensor]:
    """Seeded random weights in the real checkpoint layout of `kind` (prefix stripped), sorted by key.
    Linear weights ~ N(0, 1/fan_in), biases and norm offsets small, so activations stay O(1) at any size.
    device="meta" gives the full layout (keys, shapes, dtypes) without allocating anything."""
    _check_kind(kind)
    gen = torch.Generator().manual_seed(seed)
    hf: dict[str, Tensor] = {}
    for name, shape in expected_shapes(config).items():
        if torch.device(device).type == "meta":
            t = torch.empty(shape, device="meta")
        elif name.endswith("embedding.weight"):
            t = torch.randn(shape, generator=gen) * 0.02
        elif "layer_norm" in name and name.endswith("weight"):
            t = 1.0 + torch.randn(shape, generator=gen) * 0.1
        elif name.endswith("bias") or "layer_norm" in name:
            t = torch.randn(shape, generator=gen) * 0.05
        else:
            t = torch.randn(shape, generator=gen) / math.sqrt(shape[-1])
        hf[name] = t.to(device=device, dtype=dtype)
    if kind in ("clip_g", "clip_h"):
        return dict(sorted(hf.items()))          # transformers >= 4.31 saves no position_ids buffer
    if kind == "clip_l":
        # SD1.5 and SDXL store the position ids: I64 [1, P] holding 0..P-1
        hf["text_model.embeddings.position_ids"] = torch.arange(config.max_positions, device=device).unsqueeze(0)
        return dict(sorted(hf.items()))
    return dict(sorted(_to_open_clip(hf, config, dtype, device).items()))


def to_open_clip_layout(hf: Mapping[str, Tensor], config: ClipTextConfig, dtype: torch.dtype,
                        device: torch.device | str = "cpu") -> dict[str, Tensor]:
    """HF-named OpenCLIP text weights (as the encoder holds them) -> the names SD2.x / SDXL files store."""
    return _to_open_clip(dict(hf), config, dtype, device)


def _to_open_clip(hf: dict[str, Tensor], config: ClipTextConfig, dtype: torch.dtype,
                  device: torch.device | str) -> dict[str, Tensor]:
    """The inverse of `_open_clip_key`: HF names -> OpenCLIP names (q, k, v fused, projection transposed)."""
    inverse = {v: k for k, v in _OPEN_CLIP_BLOCK.items()}
    out = {"token_embedding.weight": hf.pop("text_model.embeddings.token_embedding.weight"),
           "positional_embedding": hf.pop("text_model.embeddings.position_embedding.weight"),
           "ln_final.weight": hf.pop("text_model.final_layer_norm.weight"),
           "ln_final.bias": hf.pop("text_model.final_layer_norm.bias"),
           "logit_scale": torch.tensor(math.log(1 / 0.07), dtype=dtype, device=device)}   # CLIP's initial temperature
    if "text_projection.weight" in hf:
        out["text_projection"] = hf.pop("text_projection.weight").t().contiguous()
    for n in range(config.num_layers):
        base = f"text_model.encoder.layers.{n}."
        for param in ("weight", "bias"):
            out[f"transformer.resblocks.{n}.attn.in_proj_{param}"] = torch.cat(
                [hf.pop(f"{base}self_attn.{p}_proj.{param}") for p in "qkv"])
            for hf_module, oc_module in inverse.items():
                out[f"transformer.resblocks.{n}.{oc_module}.{param}"] = hf.pop(f"{base}{hf_module}.{param}")
    return out
