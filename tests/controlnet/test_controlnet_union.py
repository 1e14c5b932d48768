"""Union ControlNets (xinsir ControlNet++ / ProMax, diffusers layout with `task_embedding`): the fusion
transformer and the control-type embedding against diffusers' ControlNetUnionModel parts on the same weights;
detection, SetUnionControlNetType through the engine on a tiny SDXL checkpoint with 320 channels."""
from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch
from PIL import Image

from models.controlnet import ControlNet, ControlNetConfig, UnionFusionBlock, UnionTypeEmbedding
from models.detection import detect_control_model
from models.files import load_state_dict
from models.testing import tiny_sdxl_unet_config, write_random_controlnet

diffusers = pytest.importorskip("diffusers")
from diffusers.models.controlnets.controlnet_union import ResidualAttentionBlock  # noqa: E402
from diffusers.models.embeddings import TimestepEmbedding, Timesteps  # noqa: E402


def union_unet():
    """An SDXL-layout UNet at the 320 channels a union net's fusion needs, one level only."""
    return replace(tiny_sdxl_unet_config(), model_channels=320, channel_mult=(1,), num_res_blocks=(1,),
                   transformer_depth=(1,), transformer_depth_middle=0, transformer_depth_output=(1, 1))


def union_config(types: int = 8) -> ControlNetConfig:
    return ControlNetConfig(unet=union_unet(), union_control_types=types)


def _randomised(module: torch.nn.Module, seed: int) -> torch.nn.Module:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g) / max(1, p[0].numel()) ** 0.5)
    return module.eval()


def test_fusion_block_matches_diffusers_residual_attention_block():
    ours = _randomised(UnionFusionBlock(), 0)
    reference = ResidualAttentionBlock(320, 8).eval()
    state = {k.replace(".in_proj.", ".in_proj_"): v for k, v in ours.state_dict().items()}
    reference.load_state_dict(state, strict=True)
    tokens = torch.randn(2, 3, 320)
    with torch.no_grad():
        got = ours(tokens)
        # diffusers' nn.MultiheadAttention is sequence-first: give it [tokens, batch, width]
        expected = reference(tokens.transpose(0, 1)).transpose(0, 1)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


def test_type_embedding_matches_diffusers_timesteps_and_timestep_embedding():
    ours = _randomised(UnionTypeEmbedding(8, 1280), 1)
    proj, embedding = Timesteps(256, True, 0), TimestepEmbedding(256 * 8, 1280)
    embedding.load_state_dict(ours.state_dict(), strict=True)
    for types in [(), (3,), (7,)]:
        one_hot = torch.zeros(1, 8)
        one_hot[0, list(types)] = 1.0
        with torch.no_grad():
            expected = embedding(proj(one_hot.flatten()).reshape(1, -1))
            torch.testing.assert_close(ours(types, torch.float32), expected, atol=1e-5, rtol=1e-5)


def test_union_file_is_detected_and_loads_in_the_diffusers_layout(tmp_path):
    path = write_random_controlnet(tmp_path / "union.safetensors", union_config(), layout="diffusers", seed=0)
    with load_state_dict(path) as source:
        shapes = source.shapes()
        assert "transformer_layes.0.attn.in_proj_weight" in shapes
        info = detect_control_model(shapes)
    assert info.config.union_control_types == 8 and info.config.unet.model_channels == 320


def test_types_change_the_residuals_and_out_of_range_is_refused():
    net = _randomised(ControlNet(union_config(types=6)), 2)
    x, t = torch.randn(1, 4, 8, 8), torch.tensor([500.0])
    context, hint, y = torch.randn(1, 3, 64), torch.rand(1, 3, 64, 64), torch.randn(1, 2816)
    with torch.no_grad():
        auto = net(x, hint, t, context, y=y)
        depth = net(x, hint, t, context, y=y, control_types=(1,))
        canny = net(x, hint, t, context, y=y, control_types=(3,))
    assert (depth.middle - auto.middle).abs().max() > 1e-4 and (depth.middle - canny.middle).abs().max() > 1e-4
    with pytest.raises(ValueError, match="out of range"):
        net(x, hint, t, context, y=y, control_types=(7,))


def test_set_union_controlnet_type_through_the_engine(tmp_path_factory):
    from model_management import MemorySettings
    from models.testing import tiny_sdxl_text_configs, tiny_vae_config, write_sdxl_checkpoint
    from nodes import services
    from tests.nodes.engine_harness import Capture, Harness
    from tests.nodes.test_sdxl_engine import sampled, txt2img

    h = Harness(tmp_path_factory.mktemp("union"))
    h.services = services.NodeServices(h.folders, settings=MemorySettings(force_fp32=True))
    write_sdxl_checkpoint(h.folders.paths("checkpoints")[0] / "xl320.safetensors", union_unet(),
                          text=tiny_sdxl_text_configs(), vae=tiny_vae_config())
    cn_dir = h.folders.paths("controlnet")[0]
    cn_dir.mkdir(parents=True, exist_ok=True)
    write_random_controlnet(cn_dir / "union.safetensors", union_config(), layout="diffusers", seed=4)
    h.folders.input.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.random.default_rng(2).integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(h.folders.input / "h.png")
    h.registry.register("TestCapture", Capture)
    services.install(h.services)
    try:
        def with_type(union_type: str | None) -> dict:
            p = txt2img(ckpt="xl320.safetensors")
            p["10"] = {"class_type": "LoadImage", "inputs": {"image": "h.png"}}
            p["11"] = {"class_type": "ControlNetLoader", "inputs": {"control_net_name": "union.safetensors"}}
            net = ["11", 0]
            if union_type is not None:
                p["13"] = {"class_type": "SetUnionControlNetType", "inputs": {"control_net": net, "type": union_type}}
                net = ["13", 0]
            p["12"] = {"class_type": "ControlNetApplyAdvanced", "inputs": {
                "positive": ["6", 0], "negative": ["7", 0], "control_net": net, "image": ["10", 0],
                "strength": 1.0, "start_percent": 0.0, "end_percent": 1.0}}
            p["3"]["inputs"].update(positive=["12", 0], negative=["12", 1])
            return p
        plain = sampled(h, txt2img(ckpt="xl320.safetensors"))["samples"]
        unset = sampled(h, with_type(None))["samples"]
        auto = sampled(h, with_type("auto"))["samples"]
        depth = sampled(h, with_type("depth"))["samples"]
        assert torch.equal(unset, auto)                                  # no type set is "auto", as in ComfyUI
        assert (auto - plain).abs().max() > 1e-3 and (depth - auto).abs().max() > 1e-4
    finally:
        services.install(None)
        h.close()
