"""SDXL ControlNet (label_emb / diffusers `add_embedding`, linear projections, head width 64, no attention at
level 0) against diffusers' ControlNetModel with text_time additional embeddings, on tiny random weights."""
from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from models.checkpoint import build_module
from models.controlnet import ControlNet
from models.convert import controlnet as control_keys
from models.detection import detect_control_model
from models.files import load_state_dict
from models.testing import tiny_controlnet_config, tiny_sdxl_unet_config, write_random_controlnet
from models.unet import timestep_embedding

diffusers = pytest.importorskip("diffusers")
POOLED = 1280
TIME_IDS = 6


def sdxl_controlnet_config():
    # diffusers gives its mid block the last level's transformer depth: keep them equal
    unet = replace(tiny_sdxl_unet_config(), transformer_depth=(0, 1, 1))
    return replace(tiny_controlnet_config("sd1"), unet=unet)


def same_encoder(a, b) -> bool:
    """Equal but for the output-block depths, which a ControlNet does not have."""
    return replace(a.unet, transformer_depth_output=()) == replace(b.unet, transformer_depth_output=()) and \
        a.hint_channels == b.hint_channels


def reference(config):
    u = config.unet
    return diffusers.ControlNetModel(
        in_channels=4, block_out_channels=[u.model_channels * m for m in u.channel_mult],
        down_block_types=["DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"], layers_per_block=1,
        cross_attention_dim=u.context_dim, transformer_layers_per_block=[1, 1, 1],
        attention_head_dim=[max(1, u.model_channels * m // 64) for m in u.channel_mult], use_linear_projection=True,
        addition_embed_type="text_time", addition_time_embed_dim=256,
        projection_class_embeddings_input_dim=u.adm_in_channels, norm_num_groups=32).eval()


def test_sdxl_controlnet_matches_diffusers_in_both_layouts(tmp_path):
    config = sdxl_controlnet_config()
    ref = reference(config)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in ref.parameters():
            p.copy_(torch.randn(p.shape, generator=g) / max(1, p[0].numel()) ** 0.5)
    from safetensors.torch import save_file
    diffusers_path = tmp_path / "diffusers.safetensors"
    save_file({k: v.contiguous() for k, v in ref.state_dict().items()}, diffusers_path)
    with load_state_dict(diffusers_path) as source:
        shapes = source.shapes()
        info = detect_control_model(shapes)
        assert info.layout == "diffusers" and same_encoder(info.config, config)
        ours = build_module(lambda: ControlNet(info.config, "sdpa"),
                            control_keys.diffusers_controlnet_key_map(info.config.unet, shapes), source,
                            torch.float32, "ControlNet")
    x, t = torch.randn(2, 4, 8, 8, generator=g), torch.tensor([999.0, 250.0])
    context, hint = torch.randn(2, 5, config.unet.context_dim, generator=g), torch.rand(2, 3, 64, 64, generator=g)
    text_embeds, time_ids = torch.randn(2, POOLED, generator=g), torch.tensor([[64.0, 64, 0, 0, 64, 64]] * 2)
    # LDM's ADM vector is the pooled text embedding then the 256-wide embedding of each size number
    y = torch.cat([text_embeds, timestep_embedding(time_ids.flatten(), 256).reshape(2, -1)], dim=1)
    with torch.no_grad():
        got = ours(x, hint, t, context, y=y)
        down, mid = ref(x, t, encoder_hidden_states=context, controlnet_cond=hint, return_dict=False,
                        added_cond_kwargs={"text_embeds": text_embeds, "time_ids": time_ids})
    for i, expected in enumerate(down):
        torch.testing.assert_close(got.skips[i], expected, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(got.middle, mid, atol=1e-4, rtol=1e-4)

    # the original layout of the same weights is detected to the same config
    path = write_random_controlnet(tmp_path / "ldm.safetensors", config, layout="control_model")
    with load_state_dict(path) as source:
        assert same_encoder(detect_control_model(source.shapes()).config, config)


def test_sdxl_controlnet_through_the_engine(tmp_path_factory):
    """A tiny SDXL checkpoint with an SDXL ControlNet (takes the ADM vector y): strength 0 is the plain image,
    strength 1 changes it, and the original and diffusers layouts agree."""
    from model_management import MemorySettings
    from models.controlnet import ControlNetConfig
    from models.testing import tiny_sdxl_text_configs, tiny_vae_config, write_sdxl_checkpoint
    from nodes import services
    from tests.nodes.engine_harness import Capture, Harness
    from tests.nodes.test_sdxl_engine import sampled, txt2img
    from PIL import Image
    import numpy as np

    h = Harness(tmp_path_factory.mktemp("xl-cn"))
    h.services = services.NodeServices(h.folders, settings=MemorySettings(force_fp32=True))
    write_sdxl_checkpoint(h.folders.paths("checkpoints")[0] / "xl.safetensors", tiny_sdxl_unet_config(),
                          text=tiny_sdxl_text_configs(), vae=tiny_vae_config())
    cn_dir = h.folders.paths("controlnet")[0]
    cn_dir.mkdir(parents=True, exist_ok=True)
    config = ControlNetConfig(unet=tiny_sdxl_unet_config())
    for layout in ("control_model", "diffusers"):
        write_random_controlnet(cn_dir / f"xl_{layout}.safetensors", config, layout=layout, seed=3)
    h.folders.input.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.random.default_rng(1).integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(h.folders.input / "h.png")
    h.registry.register("TestCapture", Capture)
    services.install(h.services)
    try:
        def with_control(name: str, strength: float) -> dict:
            p = txt2img(ckpt="xl.safetensors")
            p["10"] = {"class_type": "LoadImage", "inputs": {"image": "h.png"}}
            p["11"] = {"class_type": "ControlNetLoader", "inputs": {"control_net_name": name}}
            p["12"] = {"class_type": "ControlNetApplyAdvanced", "inputs": {
                "positive": ["6", 0], "negative": ["7", 0], "control_net": ["11", 0], "image": ["10", 0],
                "strength": strength, "start_percent": 0.0, "end_percent": 1.0}}
            p["3"]["inputs"].update(positive=["12", 0], negative=["12", 1])
            return p
        plain = sampled(h, txt2img(ckpt="xl.safetensors"))["samples"]
        assert torch.equal(sampled(h, with_control("xl_control_model.safetensors", 0.0))["samples"], plain)
        a = sampled(h, with_control("xl_control_model.safetensors", 1.0))["samples"]
        b = sampled(h, with_control("xl_diffusers.safetensors", 1.0))["samples"]
        assert (a - plain).abs().max() > 1e-3
        torch.testing.assert_close(a, b, atol=1e-5, rtol=0)
    finally:
        services.install(None)
        h.close()
