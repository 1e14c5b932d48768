"""Our UNet against diffusers' UNet2DConditionModel on the same tiny random weights (diffusers converts the
LDM keys with its own single-file converter, so the reference shares no code with Plexus)."""
from __future__ import annotations

import pytest
import torch

from models.attention import ATTENTION_BACKENDS, set_attention_backend
from models.checkpoint import load_checkpoint
from models.files import load_state_dict
from models.unet import UNetConfig, UNetModel

diffusers = pytest.importorskip("diffusers")
from diffusers.loaders.single_file_utils import convert_ldm_unet_checkpoint  # noqa: E402


def diffusers_unet_config(c: UNetConfig) -> dict:
    levels = len(c.channel_mult)
    has_attn = [c.transformer_depth[sum(c.num_res_blocks[:i])] > 0 for i in range(levels)]
    heads = [c.heads_for(c.model_channels * m)[0] for m in c.channel_mult]
    assert len(set(c.num_res_blocks)) == 1
    return dict(
        in_channels=c.in_channels, out_channels=c.out_channels,
        block_out_channels=[c.model_channels * m for m in c.channel_mult],
        down_block_types=["CrossAttnDownBlock2D" if a else "DownBlock2D" for a in has_attn],
        up_block_types=["CrossAttnUpBlock2D" if a else "UpBlock2D" for a in reversed(has_attn)],
        layers_per_block=c.num_res_blocks[0], cross_attention_dim=c.context_dim,
        attention_head_dim=heads if c.num_heads < 0 else c.num_heads,   # diffusers' name; it means heads
        use_linear_projection=c.use_linear_in_transformer, upcast_attention=c.upcast_attention,
        norm_num_groups=c.norm_groups, flip_sin_to_cos=True, freq_shift=0,
    )


def reference_unet(path, config: UNetConfig):
    with load_state_dict(path) as source:
        checkpoint = dict(source.items())
    dconfig = diffusers_unet_config(config)
    model = diffusers.UNet2DConditionModel(**dconfig)
    converted = convert_ldm_unet_checkpoint(checkpoint, dconfig)
    missing, unexpected = model.load_state_dict(converted, strict=True), None
    return model.eval()


@pytest.mark.parametrize("family,in_channels", [("sd1", 4), ("sd2", 4), ("sd1", 9), ("sd2", 9)])
def test_unet_matches_diffusers(tiny_checkpoint, family, in_channels):
    path = tiny_checkpoint(family, in_channels=in_channels)
    ckpt = load_checkpoint(path)
    reference = reference_unet(path, ckpt.config.unet)
    x = torch.randn(2, in_channels, 16, 16)
    t = torch.tensor([3.0, 871.0])
    ctx = torch.randn(2, 7, ckpt.config.unet.context_dim)
    with torch.no_grad():
        expected = reference(x, t, encoder_hidden_states=ctx).sample
        for backend in ATTENTION_BACKENDS:
            set_attention_backend(ckpt.unet, backend)
            got = ckpt.unet(x, t, ctx)
            assert got.shape == (2, 4, 16, 16)
            assert (got - expected).abs().max().item() < 1e-4, backend


def test_unet_odd_latent_size_keeps_shape(tiny_checkpoint):
    ckpt = load_checkpoint(tiny_checkpoint("sd1"))
    with torch.no_grad():
        out = ckpt.unet(torch.randn(1, 4, 13, 11), torch.tensor([500.0]), torch.randn(1, 3, 32))
    assert out.shape == (1, 4, 13, 11)


def test_unet_channels_last_and_bf16_agree(tiny_checkpoint):
    ckpt = load_checkpoint(tiny_checkpoint("sd1"))
    x, t, ctx = torch.randn(2, 4, 16, 16), torch.tensor([10.0, 900.0]), torch.randn(2, 5, 32)
    with torch.no_grad():
        ref = ckpt.unet(x, t, ctx)
        ckpt.unet.to(memory_format=torch.channels_last)
        assert (ckpt.unet(x.to(memory_format=torch.channels_last), t, ctx) - ref).abs().max() < 1e-4
        ckpt.unet.to(torch.bfloat16)
        low = ckpt.unet(x, t, ctx).float()
    assert torch.isfinite(low).all() and (low - ref).abs().max() < 0.1 * ref.abs().max()


def test_unknown_attention_backend_names_the_choices():
    with pytest.raises(ValueError, match="sub_quadratic"):
        UNetModel(UNetConfig(), attention="flash9") if False else set_attention_backend(torch.nn.Linear(1, 1), "x")


def test_full_size_sd15_unet_builds_on_meta():
    with torch.device("meta"):
        unet = UNetModel(UNetConfig())
    assert sum(p.numel() for p in unet.parameters()) == 859_520_964
    assert UNetModel.OFFLOAD_BLOCKS == ("input_blocks", "middle_block", "output_blocks")
