"""A LoRA-like file -> weight patches for one model, plus a report of every key that found no use.

    names = lora_names_for(unet_module)                  # models.lora.keys
    result = build_patches(load_lora_state_dict(path), names, module_weight_shapes(unet_module))
    handle.add_patches(result.patches, strength, source=path.name)
    result.unmatched                                      # LoRA keys that address nothing here, by name

Keys are grouped by module: each key is split into a module name and a parameter suffix from
:data:`SUFFIX_ROLES` (kohya `.lora_up.weight`, PEFT `.lora_B.weight`, diffusers `.lora.up.weight` and
`_lora.up.weight`, LyCORIS `.hada_w1_a` / `.lokr_w1` / `.diff`, DoRA `.dora_scale` /
`.lora_magnitude_vector`, `.alpha` ...). A group's roles decide its format. A key is *used* when its
module maps to a weight of the model and its format builds a patch of the weight's size; every other
key is listed in the report (unknown module, unknown suffix, incomplete group, wrong size), never
silently dropped.
"""
from __future__ import annotations

import logging
import os
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import NamedTuple

from torch import Tensor

from models.errors import summarise_keys
from models.files import load_state_dict
from models.lora.adapters import Adapter, Diff, LoHa, LoKr, LoRA, RowBlocks, SetWeight, SwapHalves

log = logging.getLogger("plexus.lora")

# file-key suffix -> role; longest suffixes are tried first
SUFFIX_ROLES: dict[str, str] = {
    ".lora_up.weight": "up", ".lora_down.weight": "down", ".lora_mid.weight": "mid",       # kohya / LoCon
    ".lora_B.weight": "up", ".lora_A.weight": "down",                                      # PEFT / diffusers
    ".lora_B.default.weight": "up", ".lora_A.default.weight": "down",
    ".lora.up.weight": "up", ".lora.down.weight": "down",                                  # diffusers LoRACompatible
    "_lora.up.weight": "up", "_lora.down.weight": "down",                                  # diffusers attn processors
    ".lora_linear_layer.up.weight": "up", ".lora_linear_layer.down.weight": "down",        # transformers-style TE
    ".alpha": "alpha",
    ".dora_scale": "dora_scale", ".lora_magnitude_vector": "dora_scale",
    ".lora_magnitude_vector.weight": "dora_scale",
    ".hada_w1_a": "hada_w1_a", ".hada_w1_b": "hada_w1_b", ".hada_w2_a": "hada_w2_a", ".hada_w2_b": "hada_w2_b",
    ".hada_t1": "hada_t1", ".hada_t2": "hada_t2",
    ".lokr_w1": "lokr_w1", ".lokr_w1_a": "lokr_w1_a", ".lokr_w1_b": "lokr_w1_b",
    ".lokr_w2": "lokr_w2", ".lokr_w2_a": "lokr_w2_a", ".lokr_w2_b": "lokr_w2_b", ".lokr_t2": "lokr_t2",
    ".diff": "diff", ".diff_b": "diff_b", ".w_norm": "diff", ".b_norm": "diff_b",          # LyCORIS full / norms
    ".set_weight": "set",
}
_SUFFIXES = sorted(SUFFIX_ROLES, key=len, reverse=True)


def split_key(key: str) -> tuple[str, str] | None:
    """`lora_unet_x.lora_up.weight` -> (`lora_unet_x`, "up"); None for a key no LoRA format uses."""
    for suffix in _SUFFIXES:
        if key.endswith(suffix) and len(key) > len(suffix):
            return key[:-len(suffix)], SUFFIX_ROLES[suffix]
    return None


class WeightSlice(NamedTuple):
    """A LoRA module that addresses rows `start .. start + rows` of a fused weight (and of its bias), as a
    value of the `names` map: diffusers' `attn.to_q` is the first third of an MM-DiT's `attn.qkv`."""

    key: str
    start: int
    rows: int


class HalvesSwapped(NamedTuple):
    """A LoRA module whose weight (and bias) has the two output-row halves of `key` in the other order, as a
    value of the `names` map: diffusers' (scale, shift) `norm1_context.linear` of an MM-DiT's last context
    block against the single-file (shift, scale) `adaLN_modulation.1`."""

    key: str


@dataclass
class PatchSet:
    """What one LoRA file does to one model."""

    patches: dict[str, Adapter] = field(default_factory=dict)    # weight key -> patch at full strength
    used_keys: set[str] = field(default_factory=set)              # file keys that went into a patch
    unmatched: list[str] = field(default_factory=list)            # file keys that address nothing here
    problems: list[str] = field(default_factory=list)             # groups that matched but could not be used
    formats: Counter = field(default_factory=Counter)             # "lora" / "loha" / ... -> count

    def summary(self) -> str:
        kinds = ", ".join(f"{n} {k}" for k, n in sorted(self.formats.items())) or "nothing"
        text = f"{len(self.patches)} weights patched ({kinds})"
        if self.unmatched:
            text += f"; {len(self.unmatched)} keys matched no weight: {summarise_keys(self.unmatched, 8)}"
        if self.problems:
            text += f"; {len(self.problems)} modules unusable: " + "; ".join(self.problems[:5])
        return text


def load_lora_state_dict(path: str | os.PathLike) -> dict[str, Tensor]:
    """All tensors of a LoRA / LyCORIS / embedding-style file (`.safetensors` memory-mapped, pickles with
    `weights_only=True` through :func:`models.files.load_state_dict`)."""
    with load_state_dict(path) as source:
        return {k: source[k] for k in source}


def _alpha(tensor: Tensor | None) -> float | None:
    return None if tensor is None else float(tensor.float().reshape(-1)[0])


def _build(module: str, roles: dict[str, Tensor], file_keys: dict[str, str]) -> tuple[dict[str, Adapter], set[str]]:
    """Patches of one module group: {"weight" | "bias": adapter}, and the roles they consumed."""
    r = roles
    alpha = _alpha(r.get("alpha"))
    dora = r.get("dora_scale")
    made: dict[str, Adapter] = {}
    used: set[str] = set()

    def keys(*names: str) -> tuple[str, ...]:
        present = tuple(n for n in names if n in r)
        used.update(present)
        return tuple(file_keys[n] for n in present)

    if "up" in r and "down" in r:
        made["weight"] = LoRA(keys("up", "down", "mid", "alpha", "dora_scale"), up=r["up"], down=r["down"],
                              alpha=alpha, mid=r.get("mid"), dora_scale=dora)
    elif all(k in r for k in ("hada_w1_a", "hada_w1_b", "hada_w2_a", "hada_w2_b")):
        made["weight"] = LoHa(keys("hada_w1_a", "hada_w1_b", "hada_w2_a", "hada_w2_b", "hada_t1", "hada_t2",
                                   "alpha", "dora_scale"),
                              w1a=r["hada_w1_a"], w1b=r["hada_w1_b"], w2a=r["hada_w2_a"], w2b=r["hada_w2_b"],
                              alpha=alpha, t1=r.get("hada_t1"), t2=r.get("hada_t2"), dora_scale=dora)
    elif ("lokr_w1" in r or {"lokr_w1_a", "lokr_w1_b"} <= r.keys()) and \
            ("lokr_w2" in r or {"lokr_w2_a", "lokr_w2_b"} <= r.keys()):
        made["weight"] = LoKr(keys("lokr_w1", "lokr_w1_a", "lokr_w1_b", "lokr_w2", "lokr_w2_a", "lokr_w2_b",
                                   "lokr_t2", "alpha", "dora_scale"),
                              w1=r.get("lokr_w1"), w1a=r.get("lokr_w1_a"), w1b=r.get("lokr_w1_b"),
                              w2=r.get("lokr_w2"), w2a=r.get("lokr_w2_a"), w2b=r.get("lokr_w2_b"),
                              t2=r.get("lokr_t2"), alpha=alpha, dora_scale=dora)
    elif "diff" in r:
        made["weight"] = Diff(keys("diff"), diff=r["diff"])
    elif "set" in r:
        made["weight"] = SetWeight(keys("set"), value=r["set"])
    if "diff_b" in r:
        made["bias"] = Diff(keys("diff_b"), diff=r["diff_b"])
    return made, used


def build_patches(lora: Mapping[str, Tensor], names: Mapping[str, str],
                  shapes: Mapping[str, tuple[int, ...]] | None = None) -> PatchSet:
    """Patches for the weights `names` reaches ({LoRA module name: weight key or WeightSlice}, from
    `models.lora.keys`); the slices of one weight become one RowBlocks patch, a HalvesSwapped module a
    SwapHalves patch.

    `shapes` ({weight key: shape}) lets every patch be checked against its weight now, so a LoRA for a
    model of another size is reported here rather than failing when the model is loaded."""
    result = PatchSet()
    groups: dict[str, dict[str, Tensor]] = {}
    group_keys: dict[str, dict[str, str]] = {}
    for key, tensor in lora.items():
        split = split_key(key)
        if split is None:
            result.unmatched.append(key)
            continue
        module, role = split
        groups.setdefault(module, {})[role] = tensor
        group_keys.setdefault(module, {})[role] = key

    sliced: dict[str, list[tuple[int, int, Adapter]]] = {}
    for module, roles in groups.items():
        weight_key = names.get(module)
        if weight_key is None:
            result.unmatched.extend(group_keys[module].values())
            continue
        rows, swapped = None, isinstance(weight_key, HalvesSwapped)
        if isinstance(weight_key, WeightSlice):
            weight_key, rows = weight_key.key, weight_key
        elif swapped:
            weight_key = weight_key.key
        made, used = _build(module, roles, group_keys[module])
        leftover = [group_keys[module][r] for r in roles if r not in used]
        if not made:
            result.problems.append(f"{module}: incomplete ({', '.join(sorted(roles))})")
        elif leftover:
            result.problems.append(f"{module}: unused {', '.join(sorted(leftover))}")
        for part, adapter in made.items():
            target = weight_key if part == "weight" else weight_key[:-len("weight")] + "bias"
            shape = shapes.get(target) if shapes is not None else None
            if rows is not None and shape is not None:
                shape = (rows.rows, *shape[1:]) if rows.start + rows.rows <= shape[0] else (0,)
            problem = _check_shape(adapter, shape, shapes is not None and target not in shapes)
            if problem:
                result.problems.append(f"{module}: {problem}")
                continue
            result.formats[adapter.name] += 1
            if swapped:
                adapter = SwapHalves(adapter.source_keys, inner=adapter)
            if rows is not None:
                sliced.setdefault(target, []).append((rows.start, rows.rows, adapter))
            else:
                result.patches[target] = adapter
            result.used_keys.update(adapter.source_keys)
    for target, blocks in sliced.items():
        blocks = sorted(blocks, key=lambda b: b[0])
        if target in result.patches:                 # a whole-weight patch as well: applied first
            if shapes is None or target not in shapes:
                result.problems.append(f"{target}: a whole-weight patch and row-block patches, size unknown")
                continue
            blocks = [(0, shapes[target][0], result.patches[target]), *blocks]
        result.patches[target] = RowBlocks(tuple(k for _, _, a in blocks for k in a.source_keys), blocks=tuple(blocks))
    result.unmatched.sort()
    return result


def _check_shape(adapter: Adapter, shape: tuple[int, ...] | None, is_missing: bool) -> str | None:
    if is_missing:
        return "the model has no such weight (a bias patch for a layer without bias?)"
    if shape is None:
        return None
    numel = adapter.delta_numel()
    expected = 1
    for n in shape:
        expected *= n
    if numel is not None and numel != expected:
        return f"its {adapter.name} patch has {numel} values but the weight has shape {tuple(shape)}"
    if adapter.dora_scale is not None and adapter.dora_scale.numel() not in (shape[0], shape[1] if len(shape) > 1 else -1):
        return f"its DoRA scale of shape {tuple(adapter.dora_scale.shape)} fits neither axis of {tuple(shape)}"
    return None


def log_report(result: PatchSet, source: str, what: str, *, unmatched: Iterable[str] | None = None) -> None:
    """One info line, plus a warning naming the keys that matched nothing (ComfyUI: "lora key not loaded")."""
    log.info("%s on %s: %s", source, what, result.summary())
    missing = list(result.unmatched if unmatched is None else unmatched)
    if missing:
        log.warning("%s: %d keys match no weight of the %s and were not applied: %s", source, len(missing),
                    what, summarise_keys(missing, 20))
    for problem in result.problems:
        log.warning("%s: %s", source, problem)


def is_text_encoder_key(key: str) -> bool:
    """Keys a model-only load leaves alone on purpose (they belong to the text encoder)."""
    return key.startswith(("lora_te", "text_encoder"))          # lora_te_/te1_/te2_, text_encoder(_2).


