"""FLUX LoRA module names (kohya `lora_unet_`, BFL dotted, diffusers `transformer.`) -> Plexus weight keys."""
from __future__ import annotations

import torch

from models.flux import Flux
from models.lora.keys import lora_names_for
from models.testing import tiny_flux_config


def test_flux_lora_names_reach_the_weights():
    with torch.device("meta"):
        model = Flux(tiny_flux_config())
    names = lora_names_for(model)
    keys = set(model.state_dict())
    assert names["lora_unet_double_blocks_0_img_attn_qkv"] == "double_blocks.0.img_attn.qkv.weight"
    assert names["lora_unet_single_blocks_1_linear1"] == "single_blocks.1.linear1.weight"
    assert names["diffusion_model.double_blocks.0.txt_mlp.2"] == "double_blocks.0.txt_mlp.2.weight"
    assert names["transformer.transformer_blocks.0.attn.to_add_out"] == "double_blocks.0.txt_attn.proj.weight"
    assert names["transformer.single_transformer_blocks.1.proj_out"] == "single_blocks.1.linear2.weight"
    assert names["transformer.time_text_embed.guidance_embedder.linear_1"] == "guidance_in.in_layer.weight"
    assert "transformer.transformer_blocks.0.attn.to_q" not in names         # a slice of a fused weight
    assert set(names.values()) <= keys
