"""The FLUX.1 VAE (a standalone ae.safetensors: 16 latent channels, no quant convs) against diffusers'
AutoencoderKL with black-forest-labs/FLUX.1-dev's vae/config.json settings (latent_channels 16,
use_quant_conv / use_post_quant_conv false, scaling_factor 0.3611, shift_factor 0.1159) at a tiny width,
on random weights written in the file's layout; the latent scale and shift as diffusers' FluxPipeline
applies them ((z - shift) * scale into the transformer, z / scale + shift back)."""
from __future__ import annotations

import pytest
import torch

from models.checkpoint import load_vae
from models.files import load_state_dict
from models.testing import flux_vae_config, write_random_vae
from sampling.latent_format import FLUX

diffusers = pytest.importorskip("diffusers")
from diffusers.loaders.single_file_utils import convert_ldm_vae_checkpoint  # noqa: E402


def test_flux_ae_file_matches_diffusers_with_the_flux_scale_and_shift(tmp_path):
    config = flux_vae_config()
    path = write_random_vae(tmp_path / "ae.safetensors", config, seed=4)
    ours, found = load_vae(path)
    assert found.embed_dim == 16 and not found.has_quant_conv
    with load_state_dict(path) as source:
        checkpoint = {k: v.clone() for k, v in source.items()}
    n = len(config.ch_mult)
    dconfig = dict(in_channels=3, out_channels=3, block_out_channels=[config.ch * m for m in config.ch_mult],
                   down_block_types=["DownEncoderBlock2D"] * n, up_block_types=["UpDecoderBlock2D"] * n,
                   layers_per_block=config.num_res_blocks, latent_channels=16, norm_num_groups=32,
                   use_quant_conv=False, use_post_quant_conv=False, scaling_factor=0.3611, shift_factor=0.1159)
    reference = diffusers.AutoencoderKL(**dconfig)
    reference.load_state_dict(convert_ldm_vae_checkpoint(checkpoint, dconfig), strict=True)
    reference.eval()
    g = torch.Generator().manual_seed(0)
    images = torch.rand(1, 3, 32, 48, generator=g) * 2 - 1
    model_latents = torch.randn(1, 16, 4, 6, generator=g)
    scale, shift = reference.config.scaling_factor, reference.config.shift_factor
    with torch.no_grad():
        want_in = (reference.encode(images).latent_dist.mean - shift) * scale
        assert (FLUX.process_in(ours.encode(images)) - want_in).abs().max() < 1e-4
        want_out = reference.decode(model_latents / scale + shift).sample
        assert (ours.decode(FLUX.process_out(model_latents)) - want_out).abs().max() < 1e-4
        assert want_out.abs().mean() > 1e-3
    assert (FLUX.latent_channels, FLUX.scale_factor, FLUX.shift_factor) == (16, 0.3611, 0.1159)
