"""Key maps of control-model files onto models/controlnet.py and models/t2i_adapter.py module names.

Each map is `{module key: file key}` (what models.checkpoint.build_module takes; it checks every key and
shape both ways):

- ControlNet, original layout: the module's names under `control_model.` (lllyasviel .pth and their
  safetensors repacks) or bare (`zero_convs.0.0.weight`, most community files);
- ControlNet, diffusers layout (`ControlNetModel.save_pretrained`): the UNet encoder names of diffusers
  (`down_blocks.L.resnets.J`, `mid_block`, models.lora.keys.diffusers_unet_module_map), plus
  `controlnet_cond_embedding.{conv_in,blocks.N,conv_out}` -> `input_hint_block.{0,2,..,14}`,
  `controlnet_down_blocks.N` -> `zero_convs.N.0`, `controlnet_mid_block` -> `middle_block_out.0`;
- T2I-Adapter, diffusers layout (`T2IAdapter.save_pretrained`, keys under `adapter.`): full
  `body.L.resnets.J` -> `body.{L*n+J}` with the stage's `in_conv` on its first block; light
  `body.L.resnets.J` -> `body.L.body.J`;
- control-LoRA (Stability's `control-lora-*-rank*.safetensors`, marked by a `lora_controlnet` key): bare
  original names; `<module>.up` / `<module>.down` are the low-rank factors of a Linear / Conv2d weight of the
  base UNet's encoder (`control_lora_parts`), `<name>.weight` / `.bias` are full tensors (the hint block,
  zero convs, norms, biases);
- union ControlNets (diffusers layout): `task_embedding`, `transformer_layes`, `spatial_ch_projs` and
  `control_add_embedding` keep their names, except `attn.in_proj_weight/bias` -> `attn.in_proj.weight/bias`.
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping

from models.controlnet import HINT_STRIDES
from models.lora.keys import diffusers_unet_module_map
from models.t2i_adapter import T2IAdapterConfig
from models.unet import UNetConfig

CONTROLNET_PREFIXES = ("control_model.", "")
UNION_PREFIXES = ("task_embedding", "transformer_layes.", "spatial_ch_projs.", "control_add_embedding.")


def ldm_controlnet_key_map(keys: Iterable[str], prefix: str) -> dict[str, str]:
    """Original layout: the file's keys under `prefix`, minus the prefix (a diff ControlNet's
    `difference` marker and other keys outside the prefix are not weights of the net)."""
    return {k[len(prefix):]: k for k in keys if k.startswith(prefix) and k != "difference"
            and (prefix or not k.startswith("lora_controlnet"))}


def diffusers_controlnet_module_map(config: UNetConfig) -> dict[str, str]:
    """{module path: diffusers module path} of a diffusers ControlNetModel with the encoder of `config`."""
    unet = {ldm: d for d, ldm in diffusers_unet_module_map(config).items()
            if ldm.startswith(("input_blocks.", "middle_block.", "time_embed.", "label_emb."))}
    out = dict(unet)
    hint_convs = len(HINT_STRIDES)
    for i in range(hint_convs):
        diffusers = ("controlnet_cond_embedding.conv_in" if i == 0 else
                     "controlnet_cond_embedding.conv_out" if i == hint_convs - 1 else
                     f"controlnet_cond_embedding.blocks.{i - 1}")
        out[f"input_hint_block.{2 * i}"] = diffusers
    blocks = 1 + sum(config.num_res_blocks) + len(config.channel_mult) - 1
    for i in range(blocks):
        out[f"zero_convs.{i}.0"] = f"controlnet_down_blocks.{i}"
    out["middle_block_out.0"] = "controlnet_mid_block"
    return out


def diffusers_controlnet_key_map(config: UNetConfig, keys: Iterable[str]) -> dict[str, str]:
    """{module key: file key} for the parameters present in the file (`.weight` / `.bias` per module)."""
    by_diffusers = {d: ldm for ldm, d in diffusers_controlnet_module_map(config).items()}
    out = {}
    for key in keys:
        if key.startswith(UNION_PREFIXES):              # union parts keep their names (MultiheadAttention's
            out[key.replace(".attn.in_proj_", ".attn.in_proj.")] = key        # in_proj_weight -> in_proj.weight)
            continue
        module, _, leaf = key.rpartition(".")
        ldm = by_diffusers.get(module)
        out[f"{ldm}.{leaf}" if ldm else f"<unmapped>.{key}"] = key
    return out


def diffusers_t2i_key_map(config: T2IAdapterConfig, keys: Iterable[str]) -> dict[str, str]:
    """{module key: file key} for a diffusers T2IAdapter (keys under `adapter.`)."""
    out = {}
    n = config.num_res_blocks
    for key in keys:
        rest = key.removeprefix("adapter.")
        parts = rest.split(".")
        if parts[0] == "body" and config.kind == "full":
            stage = int(parts[1])
            if parts[2] == "resnets":                            # body.L.resnets.J.<leaf>
                rest = ".".join(["body", str(stage * n + int(parts[3])), *parts[4:]])
            else:                                                # body.L.in_conv.<leaf>: on the stage's first block
                rest = ".".join(["body", str(stage * n), *parts[2:]])
        elif parts[0] == "body":                                 # light: body.L.resnets.J -> body.L.body.J
            if parts[2] == "resnets":
                rest = ".".join(["body", parts[1], "body", *parts[3:]])
        out[rest] = key
    return out


def t2i_original_key_map(keys: Iterable[str]) -> dict[str, str]:
    return {k: k for k in keys}


def strip_wrapper(state: Mapping) -> Mapping:
    """TencentARC pickles sometimes hold the adapter under an `adapter` entry."""
    inner = state.get("adapter") if hasattr(state, "get") else None
    return inner if isinstance(inner, Mapping) else state


CONTROL_LORA_MARKER = "lora_controlnet"
_LOW_RANK_LEAVES = (".up", ".down")


def control_lora_parts(keys: Iterable[str]) -> tuple[dict[str, str], dict[str, tuple[str, str]]]:
    """A control-LoRA file's keys -> ({module key: file key} of its full tensors,
    {module weight key: (up key, down key)} of its low-rank weight deltas). As ComfyUI's ControlLora, keys
    that are not `.weight` / `.bias` / `.up` / `.down`, or hold `__`, are not parts of the net."""
    full: dict[str, str] = {}
    factors: dict[str, dict[str, str]] = {}
    for key in keys:
        if key == CONTROL_LORA_MARKER or "__" in key:
            continue
        if key.endswith(_LOW_RANK_LEAVES):
            module, _, leaf = key.rpartition(".")
            factors.setdefault(module + ".weight", {})[leaf] = key
        elif key.endswith((".weight", ".bias")):
            full[key] = key
    incomplete = sorted(k for k, f in factors.items() if len(f) != 2)
    if incomplete:
        raise KeyError(f"control-LoRA low-rank weights without their pair (.up and .down): {incomplete[:8]}")
    return full, {k: (f["up"], f["down"]) for k, f in factors.items()}
