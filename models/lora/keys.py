"""LoRA module names -> Plexus weight keys, for the UNet and the CLIP text towers.

A LoRA file names the *module* it adapts; what that name looks like depends on the trainer:

- kohya sd-scripts: the module path in the training framework's model with `.` -> `_`, under `lora_unet_`
  (`lora_unet_down_blocks_0_attentions_0_proj_in`: diffusers' UNet2DConditionModel names, what nearly
  every kohya LoRA uses; older LDM-trained ones use the LDM names, `lora_unet_input_blocks_1_1_proj_in`)
  and `lora_te_` / `lora_te1_` / `lora_te2_` for the text towers in Hugging Face CLIPTextModel names
  (`lora_te_text_model_encoder_layers_0_self_attn_q_proj`; kohya converts SD2's OpenCLIP to HF names too).
- diffusers / PEFT: dotted diffusers names under `unet.` / `text_encoder.` / `text_encoder_2.`, optionally
  below PEFT's `base_model.model.`; diffusers' old attention processors add `.processor.` before `to_q`
  and call `to_out.0` `to_out` (`unet.down_blocks.0...attn1.processor.to_out_lora.up.weight`).
- LyCORIS: the kohya names (SimpleTuner also `lycoris_` + underscored diffusers names).

Plexus's UNet uses the LDM names, so the diffusers names are mapped onto it through
:func:`diffusers_unet_module_map`, built from the block structure of any `UNetConfig` (the same walk as
diffusers' `UNet2DConditionModel` and LDM's `openaimodel.UNetModel`, read for facts only), so tiny test
models and SD1.5 use the same code. Nothing here reads tensors: names and configs in, names out.
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping

from torch import nn

from models.flux import Flux
from models.lora.flux_keys import flux_lora_names
from models.lora.mmdit_keys import mmdit_lora_names
from models.mmdit import MMDiT
from models.text.clip import ClipTextModel
from models.unet import UNetConfig, UNetModel

# diffusers ResnetBlock2D child -> LDM ResBlock child
_RESNET_CHILDREN = {
    "norm1": "in_layers.0", "conv1": "in_layers.2", "time_emb_proj": "emb_layers.1",
    "norm2": "out_layers.0", "conv2": "out_layers.3", "conv_shortcut": "skip_connection",
}
# children of one BasicTransformerBlock (same names in both layouts)
_TRANSFORMER_BLOCK_CHILDREN = (
    "attn1.to_q", "attn1.to_k", "attn1.to_v", "attn1.to_out.0",
    "attn2.to_q", "attn2.to_k", "attn2.to_v", "attn2.to_out.0",
    "ff.net.0.proj", "ff.net.2", "norm1", "norm2", "norm3",
)
# prefixes under which diffusers-named UNet LoRAs appear (plain, diffusers pipeline, PEFT, both)
_DIFFUSERS_UNET_PREFIXES = ("", "unet.", "base_model.model.", "unet.base_model.model.")


def _resnet(out: dict[str, str], diffusers: str, ldm: str) -> None:
    for d, l in _RESNET_CHILDREN.items():
        out[f"{diffusers}.{d}"] = f"{ldm}.{l}"


def _transformer(out: dict[str, str], diffusers: str, ldm: str, depth: int) -> None:
    for child in ("norm", "proj_in", "proj_out"):
        out[f"{diffusers}.{child}"] = f"{ldm}.{child}"
    for block in range(depth):
        for child in _TRANSFORMER_BLOCK_CHILDREN:
            out[f"{diffusers}.transformer_blocks.{block}.{child}"] = f"{ldm}.transformer_blocks.{block}.{child}"


def diffusers_unet_module_map(config: UNetConfig) -> dict[str, str]:
    """{diffusers UNet2DConditionModel module path: LDM module path} for every module with weights.

    Down path: level i has `num_res_blocks[i]` res blocks (`down_blocks.i.resnets.j`, with
    `attentions.j` where that block has a transformer), then a downsampler except on the last level;
    LDM counts them all in one `input_blocks` list after the stem conv. The up path mirrors it with one
    extra res block per level and the upsampler in the level's last block (after its transformer, if any).
    """
    out: dict[str, str] = {
        "conv_in": "input_blocks.0.0",
        "time_embedding.linear_1": "time_embed.0", "time_embedding.linear_2": "time_embed.2",
        "add_embedding.linear_1": "label_emb.0.0", "add_embedding.linear_2": "label_emb.0.2",   # SDXL
        "conv_norm_out": "out.0", "conv_out": "out.2",
    }
    levels = len(config.channel_mult)
    depths = iter(config.transformer_depth)
    block = 1
    for level in range(levels):
        for j in range(config.num_res_blocks[level]):
            _resnet(out, f"down_blocks.{level}.resnets.{j}", f"input_blocks.{block}.0")
            depth = next(depths)
            if depth:
                _transformer(out, f"down_blocks.{level}.attentions.{j}", f"input_blocks.{block}.1", depth)
            block += 1
        if level != levels - 1:
            out[f"down_blocks.{level}.downsamplers.0.conv"] = f"input_blocks.{block}.0.op"
            block += 1

    _resnet(out, "mid_block.resnets.0", "middle_block.0")
    if config.transformer_depth_middle > 0:
        _transformer(out, "mid_block.attentions.0", "middle_block.1", config.transformer_depth_middle)
    if config.transformer_depth_middle >= 0:           # -1: one res block only (SSD-1B, Segmind Vega)
        _resnet(out, "mid_block.resnets.1", f"middle_block.{2 if config.transformer_depth_middle else 1}")

    depths = iter(config.transformer_depth_output)
    block = 0
    for up, level in enumerate(reversed(range(levels))):
        for j in range(config.num_res_blocks[level] + 1):
            _resnet(out, f"up_blocks.{up}.resnets.{j}", f"output_blocks.{block}.0")
            depth = next(depths)
            if depth:
                _transformer(out, f"up_blocks.{up}.attentions.{j}", f"output_blocks.{block}.1", depth)
            if level and j == config.num_res_blocks[level]:
                out[f"up_blocks.{up}.upsamplers.0.conv"] = f"output_blocks.{block}.{2 if depth else 1}.conv"
            block += 1
    return out


def _underscored(path: str) -> str:
    return path.replace(".", "_")


def _old_diffusers_processor_name(diffusers: str) -> str:
    """diffusers' pre-PEFT attention-processor naming: `attn1.to_q` -> `attn1.processor.to_q`,
    `attn1.to_out.0` -> `attn1.processor.to_out`."""
    name = diffusers.replace(".to_", ".processor.to_")
    return name[:-2] if name.endswith(".to_out.0") else name


def unet_lora_names(config: UNetConfig, weight_keys: Iterable[str], prefix: str = "") -> dict[str, str]:
    """{LoRA module name: weight key} for a UNet whose parameters are `prefix + <LDM name>`.

    Every spelling listed in the module docstring is included; only modules that have a `.weight` in
    `weight_keys` are (so a LoRA for another architecture finds nothing to patch and says so)."""
    keys = set(weight_keys)
    names: dict[str, str] = {}
    for key in sorted(keys):                                   # LDM names, kohya and generic spellings
        if key.startswith(prefix) and key.endswith(".weight"):
            ldm = key[len(prefix):-len(".weight")]
            names[f"lora_unet_{_underscored(ldm)}"] = key
            names[ldm] = key
            names[f"diffusion_model.{ldm}"] = key
    for diffusers, ldm in diffusers_unet_module_map(config).items():
        key = f"{prefix}{ldm}.weight"
        if key not in keys:
            continue
        names[f"lora_unet_{_underscored(diffusers)}"] = key
        names[f"lycoris_{_underscored(diffusers)}"] = key
        for p in _DIFFUSERS_UNET_PREFIXES:
            names[p + diffusers] = key
            names[p + _old_diffusers_processor_name(diffusers)] = key
    return names


def text_encoder_lora_names(weight_keys: Iterable[str], prefix: str = "", *, index: int = 0,
                            count: int = 1) -> dict[str, str]:
    """{LoRA module name: weight key} for text tower `index` of `count` (SD1/SD2: 0 of 1; SDXL: clip_l is
    0, bigG is 1), whose parameters are `prefix + <HF CLIPTextModel name>` (`text_model.encoder...`)."""
    if count == 1:
        kohya, diffusers = ("lora_te_", "lora_te1_"), ("text_encoder.",)
    else:
        kohya = (f"lora_te{index + 1}_",) + (("lora_te_",) if index == 0 else ())
        diffusers = ("text_encoder." if index == 0 else f"text_encoder_{index + 1}.",)
    names: dict[str, str] = {}
    for key in sorted(weight_keys):
        if not (key.startswith(prefix) and key.endswith(".weight")):
            continue
        hf = key[len(prefix):-len(".weight")]
        for p in kohya:
            names[p + _underscored(hf)] = key
        for p in diffusers:
            names[p + hf] = key
            names[p + "base_model.model." + hf] = key
    return names


def lora_names_for(module: nn.Module, *, text_encoder_index: int | None = None,
                   text_encoder_count: int | None = None) -> dict[str, str]:
    """{LoRA module name: state-dict key of `module`} for every UNet and CLIP text tower inside `module`
    (found by type, so any wrapper works). Text towers are numbered in the order they are found unless
    `text_encoder_index` / `text_encoder_count` say otherwise (one tower per handle, SDXL)."""
    keys = [k for k, _ in module.state_dict(keep_vars=True).items()]
    towers = [(path, m) for path, m in module.named_modules() if isinstance(m, ClipTextModel)]
    names: dict[str, str] = {}
    for path, sub in module.named_modules():
        if isinstance(sub, UNetModel):
            names.update(unet_lora_names(sub.config, keys, f"{path}." if path else ""))
        if isinstance(sub, MMDiT):                        # SD3 / SD3.5 (models/lora/mmdit_keys.py)
            names.update(mmdit_lora_names(sub.config, keys, f"{path}." if path else ""))
        if isinstance(sub, Flux):                         # FLUX.1 (models/lora/flux_keys.py)
            names.update(flux_lora_names(sub.config, keys, f"{path}." if path else ""))
    count = text_encoder_count if text_encoder_count is not None else len(towers)
    for i, (path, _) in enumerate(towers):
        index = text_encoder_index if text_encoder_index is not None else i
        names.update(text_encoder_lora_names(keys, f"{path}." if path else "", index=index, count=count))
        names.update(comfy_text_encoder_lora_names(keys, path))
    return names


# Plexus text tower kind -> ComfyUI's name for it (`text_encoders.<name>.transformer.<HF name>` LoRA keys,
# as ComfyUI's LoraSave writes them)
COMFY_TOWER_NAMES = {"clip_l": "clip_l", "open_clip_h": "clip_h", "open_clip_g": "clip_g", "clip_g": "clip_g"}


def comfy_text_encoder_lora_names(weight_keys: Iterable[str], tower_path: str) -> dict[str, str]:
    """ComfyUI's spelling for the tower at `tower_path` ("towers.<kind>.model"): text_encoders.<name>.transformer.<hf>."""
    parts = tower_path.split(".")
    if len(parts) != 3 or parts[0] != "towers" or parts[1] not in COMFY_TOWER_NAMES:
        return {}
    prefix = tower_path + "."
    head = f"text_encoders.{COMFY_TOWER_NAMES[parts[1]]}.transformer."
    return {head + key[len(prefix):-len(".weight")]: key for key in weight_keys
            if key.startswith(prefix) and key.endswith(".weight")}


def module_weight_shapes(module: nn.Module) -> dict[str, tuple[int, ...]]:
    """State-dict key -> shape, without touching data (works on meta and placeholder tensors)."""
    return {k: tuple(v.shape) for k, v in module.state_dict(keep_vars=True).items()}


def invert(names: Mapping[str, str]) -> dict[str, list[str]]:
    """{weight key: [LoRA names]} (for reports and tests)."""
    out: dict[str, list[str]] = {}
    for name, key in names.items():
        out.setdefault(key, []).append(name)
    return out
