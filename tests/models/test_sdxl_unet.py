"""SDXL's UNet (label_emb / ADM size conditioning, per-level transformer depths, no attention at level 0,
linear proj) against diffusers' UNet2DConditionModel with addition_embed_type="text_time", on the same
tiny random weights; diffusers converts the LDM keys with its own single-file converter."""
from __future__ import annotations

import pytest
import torch

from models.sdxl import base_adm, refiner_adm
from models.testing import random_tensor
from models.unet import UNetConfig, UNetModel

diffusers = pytest.importorskip("diffusers")
from diffusers.loaders.single_file_utils import convert_ldm_unet_checkpoint  # noqa: E402

POOLED, EMBED = 16, 8          # tiny bigG pooled width and size-embedding width
# SDXL's shape at a small scale: no attention at level 0, depth 1 then 2 (SDXL: 2 then 10), middle as deep as
# the last level, linear proj, head width 64, a context wider than the model
TINY_SDXL = UNetConfig(model_channels=32, channel_mult=(1, 2, 4), num_res_blocks=(2, 2, 2),
                       transformer_depth=(0, 0, 1, 1, 2, 2), transformer_depth_middle=2,
                       transformer_depth_output=(2, 2, 2, 1, 1, 1, 0, 0, 0), context_dim=48, num_heads=-1,
                       head_dim=64, use_linear_in_transformer=True, adm_in_channels=POOLED + 6 * EMBED)


def diffusers_config(c: UNetConfig, time_ids: int) -> dict:
    heads = [c.heads_for(c.model_channels * m)[0] for m in c.channel_mult]
    return dict(
        in_channels=c.in_channels, out_channels=c.out_channels,
        block_out_channels=[c.model_channels * m for m in c.channel_mult],
        down_block_types=["DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"],
        up_block_types=["CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"],
        layers_per_block=2, transformer_layers_per_block=[1, 1, 2], cross_attention_dim=c.context_dim,
        attention_head_dim=heads, use_linear_projection=True, norm_num_groups=c.norm_groups,
        flip_sin_to_cos=True, freq_shift=0, addition_embed_type="text_time",
        addition_time_embed_dim=EMBED, projection_class_embeddings_input_dim=POOLED + time_ids * EMBED)


def tiny_pair(config: UNetConfig, time_ids: int):
    with torch.device("meta"):
        names = {k: (tuple(v.shape), v.dtype) for k, v in UNetModel(config).state_dict().items()}
    weights = {k: random_tensor(k, shape, torch.float32, seed=3) for k, (shape, _) in names.items()}
    ours = UNetModel(config)
    ours.load_state_dict(weights, strict=True)
    dconfig = diffusers_config(config, time_ids)
    reference = diffusers.UNet2DConditionModel(**dconfig)
    converted = convert_ldm_unet_checkpoint({"model.diffusion_model." + k: v for k, v in weights.items()}, dconfig)
    reference.load_state_dict(converted, strict=True)
    return ours.eval(), reference.eval()


def test_sdxl_base_unet_matches_diffusers_text_time() -> None:
    ours, reference = tiny_pair(TINY_SDXL, time_ids=6)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 4, 16, 24, generator=g)
    t = torch.tensor([11.0, 850.0])
    ctx = torch.randn(2, 9, 48, generator=g)
    pooled = torch.randn(2, POOLED, generator=g)
    sizes = dict(width=1024, height=768, crop_w=16, crop_h=32, target_width=896, target_height=1152)
    y = base_adm(pooled, **sizes, embed_dim=EMBED)
    time_ids = torch.tensor([[768.0, 1024.0, 32.0, 16.0, 1152.0, 896.0]] * 2)   # diffusers: (h, w), (top, left), (h, w)
    with torch.no_grad():
        expected = reference(x, t, encoder_hidden_states=ctx,
                             added_cond_kwargs={"text_embeds": pooled, "time_ids": time_ids}).sample
        got = ours(x, t, ctx, y)
        without_sizes = ours(x, t, ctx, base_adm(pooled, width=512, height=512, embed_dim=EMBED))
    assert got.shape == (2, 4, 16, 24)
    assert (got - expected).abs().max().item() < 1e-4
    assert (got - without_sizes).abs().max().item() > 1e-3        # the sizes reach the output


def test_sdxl_refiner_adm_matches_diffusers_aesthetic_score() -> None:
    config = UNetConfig(**{**TINY_SDXL.__dict__, "adm_in_channels": POOLED + 5 * EMBED})
    ours, reference = tiny_pair(config, time_ids=5)
    g = torch.Generator().manual_seed(1)
    x, t, ctx = torch.randn(1, 4, 16, 16, generator=g), torch.tensor([500.0]), torch.randn(1, 5, 48, generator=g)
    pooled = torch.randn(1, POOLED, generator=g)
    y = refiner_adm(pooled, width=1024, height=1024, crop_w=0, crop_h=8, aesthetic_score=2.5, embed_dim=EMBED)
    time_ids = torch.tensor([[1024.0, 1024.0, 8.0, 0.0, 2.5]])   # diffusers' requires_aesthetics_score order
    with torch.no_grad():
        expected = reference(x, t, encoder_hidden_states=ctx,
                             added_cond_kwargs={"text_embeds": pooled, "time_ids": time_ids}).sample
        assert (ours(x, t, ctx, y) - expected).abs().max().item() < 1e-4


def test_a_missing_or_misshapen_adm_vector_is_explained() -> None:
    ours = UNetModel(TINY_SDXL)
    x, t, ctx = torch.randn(1, 4, 8, 8), torch.tensor([1.0]), torch.randn(1, 3, 48)
    with pytest.raises(ValueError, match="ADM vector"):
        ours(x, t, ctx)
    with pytest.raises(ValueError, match=r"\(1, 64\)"):
        ours(x, t, ctx, torch.zeros(1, 10))


def test_full_size_adm_widths() -> None:
    pooled = torch.zeros(1, 1280)
    assert base_adm(pooled, width=1024, height=1024).shape == (1, 2816)
    assert refiner_adm(pooled, width=1024, height=1024).shape == (1, 2560)
