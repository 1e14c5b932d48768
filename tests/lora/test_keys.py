"""LoRA module names -> Plexus weight keys, checked against independent references:

- the diffusers -> LDM UNet map against diffusers' own single-file converter (`convert_ldm_unet_checkpoint`),
  on tiny SD1/SD2 configs whose tensors carry their own index, so every converted key names its source;
- kohya names: the modules a real kohya LoRA targets (sd-scripts `networks/lora.py` rule: every Linear
  and Conv2d inside the diffusers `Transformer2DModel`s, plus the 3x3 convs of `ResnetBlock2D` /
  `Downsample2D` / `Upsample2D` for LoCon, and every Linear of the text encoder's `CLIPAttention` /
  `CLIPMLP`) enumerated from diffusers' and transformers' own models built on the meta device, then
  mapped onto the real SD1.5 / SD2.1 layouts from tests/data/manifests: every one must hit a real weight
  whose size the LoRA product has.
"""
from __future__ import annotations

import math

import pytest
import torch

from models.lora import diffusers_unet_module_map, text_encoder_lora_names, unet_lora_names
from models.lora.keys import lora_names_for
from models.testing import sd15_unet_config, tiny_unet_config
from models.text.convert import expected_shapes, text_encoder_config_from_shapes
from models.unet import UNetConfig, UNetModel
from tests.lora.conftest import manifest_shapes

import diffusers
import transformers

UNET_PREFIX = "model.diffusion_model."


@pytest.mark.parametrize("family", ["sd1", "sd2"])
def test_diffusers_map_agrees_with_diffusers_own_converter(family: str) -> None:
    from diffusers.loaders.single_file_utils import convert_ldm_unet_checkpoint

    config = tiny_unet_config(family)
    with torch.device("meta"):
        layout = UNetModel(config).state_dict()
    keys = list(layout)
    # one scalar per tensor holding its index: the converter moves (and for SD2 reshapes) tensors only
    ldm = {UNET_PREFIX + k: torch.full(tuple(v.shape), float(i)) for i, (k, v) in enumerate(layout.items())}
    converted = convert_ldm_unet_checkpoint(ldm, {"layers_per_block": config.num_res_blocks[0]})
    ours = diffusers_unet_module_map(config)
    checked = 0
    for diffusers_key, tensor in converted.items():
        if not diffusers_key.endswith(".weight"):
            continue
        source = keys[int(tensor.reshape(-1)[0])]
        module = diffusers_key[:-len(".weight")]
        assert module in ours, f"{module} is missing from the map"
        assert ours[module] + ".weight" == source, module
        checked += 1
    assert checked == sum(k.endswith(".weight") for k in keys)


def _diffusers_unet(family: str):
    from diffusers import UNet2DConditionModel
    common = {"sample_size": 64, "in_channels": 4, "out_channels": 4, "layers_per_block": 2,
              "block_out_channels": (320, 640, 1280, 1280),
              "down_block_types": ("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
              "up_block_types": ("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3}
    if family == "sd1":
        config = dict(common, cross_attention_dim=768, attention_head_dim=8)
    else:
        config = dict(common, cross_attention_dim=1024, attention_head_dim=(5, 10, 20, 20),
                      use_linear_projection=True)
    with torch.device("meta"):
        return UNet2DConditionModel(**config)


def kohya_targets(root: torch.nn.Module, prefix: str, classes: set[str]) -> dict[str, tuple[int, ...]]:
    """{kohya LoRA name: shape of the module's weight} by sd-scripts' naming rule."""
    out = {}
    for name, module in root.named_modules():
        if type(module).__name__ not in classes:
            continue
        for child_name, child in module.named_modules():
            if type(child).__name__ in ("Linear", "LoRACompatibleLinear", "Conv2d", "LoRACompatibleConv"):
                out[f"{prefix}.{name}.{child_name}".replace(".", "_")] = tuple(child.weight.shape)
    return out


UNET_CLASSES = {"Transformer2DModel", "ResnetBlock2D", "Downsample2D", "Upsample2D"}
TE_CLASSES = {"CLIPAttention", "CLIPSdpaAttention", "CLIPMLP"}


@pytest.mark.parametrize("family, manifest", [("sd1", "sd15_emaonly"), ("sd2", "sd21_768v")])
def test_every_module_a_kohya_lora_targets_maps_to_a_real_unet_weight(family: str, manifest: str) -> None:
    shapes = manifest_shapes(manifest)
    config = UNetConfig() if family == "sd1" else UNetConfig(context_dim=1024, num_heads=-1, head_dim=64,
                                                             use_linear_in_transformer=True,
                                                             upcast_attention=True)
    names = unet_lora_names(config, shapes, UNET_PREFIX)
    targets = kohya_targets(_diffusers_unet(family), "lora_unet", UNET_CLASSES)
    assert len(targets) > 250                                  # 192 transformer layers + LoCon convs for SD1
    for lora_name, shape in targets.items():
        key = names.get(lora_name)
        assert key is not None, f"{lora_name} maps to nothing"
        assert key in shapes and math.prod(shapes[key]) == math.prod(shape), (lora_name, key)
    # the LDM-named spelling of older kohya LoRAs reaches the same weights
    assert names["lora_unet_input_blocks_1_1_proj_in"] == names["lora_unet_down_blocks_0_attentions_0_proj_in"] \
        == UNET_PREFIX + "input_blocks.1.1.proj_in.weight"
    assert names["lora_unet_up_blocks_3_attentions_2_transformer_blocks_0_attn2_to_out_0"] == \
        UNET_PREFIX + "output_blocks.11.1.transformer_blocks.0.attn2.to_out.0.weight"
    assert names["lora_unet_up_blocks_0_upsamplers_0_conv"] == UNET_PREFIX + "output_blocks.2.1.conv.weight"
    assert names["lora_unet_up_blocks_1_upsamplers_0_conv"] == UNET_PREFIX + "output_blocks.5.2.conv.weight"


@pytest.mark.parametrize("family, manifest, prefix", [("sd1", "sd15_emaonly", "cond_stage_model.transformer."),
                                                      ("sd2", "sd21_768v", "cond_stage_model.model.")])
def test_every_module_a_kohya_lora_targets_maps_to_a_real_text_encoder_weight(family, manifest, prefix) -> None:
    from transformers import CLIPTextConfig, CLIPTextModel
    file_shapes = {k[len(prefix):]: v for k, v in manifest_shapes(manifest).items() if k.startswith(prefix)}
    kind = "clip_l" if family == "sd1" else "open_clip_h"
    ours = expected_shapes(text_encoder_config_from_shapes(kind, file_shapes))   # our HF-named layout
    names = text_encoder_lora_names(ours)
    width, layers = (768, 12) if family == "sd1" else (1024, 24)
    with torch.device("meta"):
        reference = CLIPTextModel(CLIPTextConfig(hidden_size=width, num_hidden_layers=layers,
                                                 num_attention_heads=width // 64, intermediate_size=4 * width))
    # transformers 4.x (what kohya trains with) nests the layers under `text_model.`; 5.x dropped that level
    root, prefix = (reference.text_model, "lora_te.text_model") if hasattr(reference, "text_model") \
        else (reference, "lora_te.text_model")
    targets = kohya_targets(root, prefix, TE_CLASSES)
    assert len(targets) == 6 * layers
    for lora_name, shape in targets.items():
        key = names.get(lora_name)
        assert key is not None and ours[key] == shape, lora_name
    assert names["text_encoder.text_model.encoder.layers.3.mlp.fc1"] == "text_model.encoder.layers.3.mlp.fc1.weight"
    assert names["lora_te1_text_model_encoder_layers_0_self_attn_q_proj"] == \
        "text_model.encoder.layers.0.self_attn.q_proj.weight"


def test_diffusers_and_peft_spellings_reach_the_same_weight() -> None:
    config = tiny_unet_config("sd1")
    with torch.device("meta"):
        keys = list(UNetModel(config).state_dict())
    names = unet_lora_names(config, keys)
    target = "input_blocks.1.1.transformer_blocks.0.attn1.to_out.0.weight"
    for spelling in ("down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_out.0",
                     "unet.down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_out.0",
                     "base_model.model.down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_out.0",
                     "unet.down_blocks.0.attentions.0.transformer_blocks.0.attn1.processor.to_out",
                     "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_out_0",
                     "lycoris_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_out_0",
                     "lora_unet_input_blocks_1_1_transformer_blocks_0_attn1_to_out_0",
                     "input_blocks.1.1.transformer_blocks.0.attn1.to_out.0"):
        assert names[spelling] == target, spelling


def test_names_are_found_inside_any_wrapper_by_type() -> None:
    from models.text import ClipTextConfig, ClipTextModel, TextEncoder
    config = tiny_unet_config("sd1")
    with torch.device("meta"):
        wrapper = torch.nn.ModuleDict({"diffusion_model": UNetModel(config)})
        text = TextEncoder(ClipTextConfig.of_kind("clip_l", hidden_size=32, num_layers=2, num_heads=1,
                                                  intermediate_size=64))
    assert lora_names_for(wrapper)["lora_unet_down_blocks_0_attentions_0_proj_in"] == \
        "diffusion_model.input_blocks.1.1.proj_in.weight"
    te = lora_names_for(text)
    assert te["lora_te_text_model_encoder_layers_1_mlp_fc2"] == "model.text_model.encoder.layers.1.mlp.fc2.weight"
    sdxl_second = lora_names_for(text, text_encoder_index=1, text_encoder_count=2)
    assert "lora_te2_text_model_encoder_layers_1_mlp_fc2" in sdxl_second
    assert "lora_te_text_model_encoder_layers_1_mlp_fc2" not in sdxl_second
    assert "text_encoder_2.text_model.encoder.layers.1.mlp.fc2" in sdxl_second
    assert isinstance(ClipTextModel, type)


def test_sd15_full_size_map_covers_every_unet_module() -> None:
    config = sd15_unet_config()
    shapes = {UNET_PREFIX + k: v for k, v in manifest_shapes("sd15_emaonly").items()}
    mapped = {ldm for ldm in diffusers_unet_module_map(config).values()}
    modules = {k[len(UNET_PREFIX) * 2:-len(".weight")] for k in shapes
               if k.startswith(UNET_PREFIX * 2) and k.endswith(".weight")}
    assert modules and modules <= mapped


def test_clip_towers_inside_one_handle_are_numbered_in_order() -> None:
    from diffusion.objects import TextEncoderStack
    from models.text import ClipTextConfig, TextEncoder
    small = {"hidden_size": 32, "num_layers": 1, "num_heads": 1, "intermediate_size": 64}
    with torch.device("meta"):
        one = TextEncoderStack({"clip_l": TextEncoder(ClipTextConfig.of_kind("clip_l", **small))})
        two = TextEncoderStack({"clip_l": TextEncoder(ClipTextConfig.of_kind("clip_l", **small)),
                                "clip_g": TextEncoder(ClipTextConfig.of_kind("clip_l", **small))})
    q = "text_model.encoder.layers.0.self_attn.q_proj"
    assert lora_names_for(one)[f"lora_te_{q.replace('.', '_')}"] == f"towers.clip_l.model.{q}.weight"
    names = lora_names_for(two)
    assert names[f"lora_te1_{q.replace('.', '_')}"] == f"towers.clip_l.model.{q}.weight"
    assert names[f"lora_te2_{q.replace('.', '_')}"] == f"towers.clip_g.model.{q}.weight"
    assert names[f"text_encoder_2.{q}"] == f"towers.clip_g.model.{q}.weight"
