"""diffusers/PEFT LoRA names on SDXL-layout UNets: every weighted module of diffusers' UNet2DConditionModel
(text_time config) maps to a module of ours with the same weight shape, including the single-res-block
middle of SSD-1B / Segmind Vega."""
from __future__ import annotations

from dataclasses import replace

import pytest
import torch
from torch import nn

from models.lora.keys import diffusers_unet_module_map
from models.unet import UNetModel
from tests.models.test_sdxl_unet import TINY_SDXL, diffusers_config

diffusers = pytest.importorskip("diffusers")


@pytest.mark.parametrize("middle", [2, -1])
def test_every_diffusers_sdxl_module_maps_to_ours(middle):
    config = replace(TINY_SDXL, transformer_depth_middle=middle)
    dconfig = diffusers_config(config, time_ids=6)
    if middle < 0:
        dconfig["mid_block_type"] = None
    reference = diffusers.UNet2DConditionModel(**dconfig)
    with torch.device("meta"):
        ours = dict(UNetModel(config).named_modules())
    mapping = diffusers_unet_module_map(config)
    weighted = {n: m for n, m in reference.named_modules() if isinstance(m, (nn.Linear, nn.Conv2d))}
    if middle < 0:        # diffusers has no mid block at all; ours keeps the one res block the files hold
        assert not any(n.startswith("mid_block") for n in weighted)
    for name, module in weighted.items():
        assert name in mapping, name
        assert tuple(ours[mapping[name]].weight.shape) == tuple(module.weight.shape), name
    assert all(target in ours for target in mapping.values())
