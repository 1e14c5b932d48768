"""Control residuals inside the UNet against diffusers' UNet2DConditionModel with
`down_block_additional_residuals` / `mid_block_additional_residual` (ControlNet) and
`down_intrablock_additional_residuals` (T2I-Adapter), on the same tiny random weights."""
from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from models.checkpoint import load_checkpoint
from models.controlnet import ControlNet, ControlResiduals
from models.t2i_adapter import T2IAdapter
from models.testing import (CheckpointSpec, tiny_controlnet_config, tiny_t2i_config, tiny_unet_config,
                            tiny_vae_config, write_random_checkpoint)
from tests.models.test_unet import reference_unet

pytest.importorskip("diffusers")


def two_res_block_unet():
    """tiny_unet_config("sd1") with 2 res blocks per level (SD1.5's count, where T2I features land)."""
    return replace(tiny_unet_config("sd1"), num_res_blocks=(2, 2, 2), transformer_depth=(1, 1, 1, 1, 0, 0),
                   transformer_depth_output=(0, 0, 0, 1, 1, 1, 1, 1, 1))


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    path = tmp_path_factory.mktemp("unet") / "tiny.safetensors"
    return write_random_checkpoint(path, CheckpointSpec("sd1", two_res_block_unet(), tiny_vae_config(),
                                                        with_text_encoder=False))


def _random(module: torch.nn.Module, seed: int) -> torch.nn.Module:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g) / max(1, p[0].numel()) ** 0.5)
    return module.eval()


def test_controlnet_residuals_are_added_where_diffusers_adds_them(checkpoint):
    ckpt = load_checkpoint(checkpoint)
    reference = reference_unet(checkpoint, ckpt.config.unet)
    net = _random(ControlNet(replace(tiny_controlnet_config("sd1"), unet=two_res_block_unet())), 1)
    x, t, ctx = torch.randn(2, 4, 16, 16), torch.tensor([3.0, 871.0]), torch.randn(2, 7, 32)
    hint = torch.rand(2, 3, 128, 128)
    with torch.no_grad():
        residuals = net(x, hint, t, ctx)
        plain = ckpt.unet(x, t, ctx)
        got = ckpt.unet(x, t, ctx, control=residuals)
        expected = reference(x, t, encoder_hidden_states=ctx,
                             down_block_additional_residuals=[residuals.skips[i] for i in sorted(residuals.skips)],
                             mid_block_additional_residual=residuals.middle).sample
    assert (got - plain).abs().max() > 1e-2
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=1e-4)


def test_t2i_features_are_added_where_diffusers_adds_them(checkpoint):
    ckpt = load_checkpoint(checkpoint)
    reference = reference_unet(checkpoint, ckpt.config.unet)
    adapter = _random(T2IAdapter(tiny_t2i_config("full")), 2)
    x, t, ctx = torch.randn(2, 4, 16, 16), torch.tensor([3.0, 871.0]), torch.randn(2, 7, 32)
    hint = torch.rand(2, 3, 128, 128)
    with torch.no_grad():
        features = adapter.features(hint)
        got = ckpt.unet(x, t, ctx, control=adapter(hint))
        expected = reference(x, t, encoder_hidden_states=ctx,
                             down_intrablock_additional_residuals=[f.clone() for f in features]).sample
        plain = ckpt.unet(x, t, ctx)
    assert (got - plain).abs().max() > 1e-2
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=1e-4)


def test_stacked_residuals_add_up_and_misfits_are_skipped():
    a = ControlResiduals(after_input={2: torch.ones(1, 2, 4, 4)}, skips={0: torch.ones(1, 2, 4, 4)})
    b = ControlResiduals(skips={0: torch.full((1, 2, 4, 4), 2.0), 1: torch.ones(1, 2, 4, 4)},
                         middle=torch.ones(1, 2, 2, 2))
    both = a.plus(b)
    assert torch.equal(both.skips[0], torch.full((1, 2, 4, 4), 3.0)) and 1 in both.skips and 2 in both.after_input
    assert both.middle is not None
    h = torch.zeros(1, 2, 8, 8)
    assert torch.equal(both.add_to_skip(0, h), h)                     # a 4x4 residual cannot go on 8x8
