"""SD3's 16-channel VAE (no quant convs) against diffusers' AutoencoderKL on tiny random weights written
in the SD3 single-file layout; its latent format."""
from __future__ import annotations

import pytest
import torch

from models.checkpoint import load_checkpoint
from models.files import load_state_dict
from models.testing import tiny_sd3_spec, write_random_sd3_checkpoint
from sampling.latent_format import SD3

diffusers = pytest.importorskip("diffusers")
from diffusers.loaders.single_file_utils import convert_ldm_vae_checkpoint  # noqa: E402


def test_sd3_vae_matches_diffusers(tmp_path):
    spec = tiny_sd3_spec(text=())
    path = write_random_sd3_checkpoint(tmp_path / "sd3.safetensors", spec)
    ours = load_checkpoint(path).vae
    config = spec.vae
    with load_state_dict(path) as source:
        checkpoint = {k: v.clone() for k, v in source.items() if k.startswith("first_stage_model.")}
    n = len(config.ch_mult)
    dconfig = dict(in_channels=3, out_channels=3, block_out_channels=[config.ch * m for m in config.ch_mult],
                   down_block_types=["DownEncoderBlock2D"] * n, up_block_types=["UpDecoderBlock2D"] * n,
                   layers_per_block=config.num_res_blocks, latent_channels=16, norm_num_groups=32,
                   use_quant_conv=False, use_post_quant_conv=False,
                   scaling_factor=1.5305, shift_factor=0.0609)   # stabilityai/stable-diffusion-3-medium vae/config.json
    reference = diffusers.AutoencoderKL(**dconfig)
    reference.load_state_dict(convert_ldm_vae_checkpoint(checkpoint, dconfig), strict=True)
    reference.eval()
    images = torch.rand(1, 3, 32, 48) * 2 - 1
    latents = torch.randn(1, 16, 4, 6)
    with torch.no_grad():
        assert (ours.encode(images) - reference.encode(images).latent_dist.mean).abs().max() < 1e-4
        assert (ours.decode(latents) - reference.decode(latents).sample).abs().max() < 1e-4
    assert not hasattr(ours, "quant_conv") or ours.quant_conv is None


def test_sd3_latent_format():
    z = torch.randn(1, 16, 2, 2)
    assert (SD3.latent_channels, SD3.scale_factor, SD3.shift_factor) == (16, 1.5305, 0.0609)
    torch.testing.assert_close(SD3.process_in(z), (z - 0.0609) * 1.5305)
    torch.testing.assert_close(SD3.process_out(SD3.process_in(z)), z)
    assert len(SD3.rgb_factors) == 16 and len(SD3.rgb_bias) == 3
