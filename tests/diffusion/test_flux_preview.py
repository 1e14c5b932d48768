"""FLUX.1 step previews (16 latent channels): TAEF1 (`taef1_decoder` in models/vae_approx) when asked for and
present, else FLUX's latent-to-RGB factors. The TAEF1 reference is diffusers' AutoencoderTiny decoder with
16 latent channels (madebyollin's taef1 is that architecture), saved under the published file's names
(`N+1` for diffusers' `layers.N`, as in tests/diffusion/test_taesd3_preview.py)."""
from __future__ import annotations

import pytest
import torch

from diffusion import previews
from diffusion.flux import load_diffusion_model_file
from model_management import MemorySettings, ModelManager
from models.testing import tiny_flux_config, write_random_flux
from sampling import latent_format

from .test_taesd3_preview import write_taesd3

diffusers = pytest.importorskip("diffusers")


@pytest.fixture(scope="module")
def flux_model(tmp_path_factory):
    path = write_random_flux(tmp_path_factory.mktemp("flux") / "tiny-flux.safetensors", tiny_flux_config())
    return load_diffusion_model_file(path, ModelManager(MemorySettings(force_fp32=True)))


def test_flux_uses_taef1_when_it_is_there(flux_model, tmp_path):
    assert flux_model.latent_format is latent_format.FLUX and latent_format.FLUX.taesd_decoder_name == "taef1_decoder"
    x0 = torch.randn(1, 16, 8, 12, generator=torch.Generator().manual_seed(1))
    linear = previews.previewer_for(flux_model, [tmp_path], "taesd")          # no file yet: FLUX's factors
    torch.testing.assert_close(linear(x0), previews.latent_to_rgb(x0, latent_format.FLUX, previews.PREVIEW_MAX_PX))
    reference = write_taesd3(tmp_path, seed=4)
    (tmp_path / "taesd3_decoder.safetensors").rename(tmp_path / "taef1_decoder.safetensors")
    rgb = previews.previewer_for(flux_model, [tmp_path], "taesd")(x0)
    assert rgb.shape == (64, 96, 3) and rgb.dtype == torch.uint8
    with torch.no_grad():
        want = ((reference(x0)[0] + 1) / 2).clamp(0, 1).movedim(0, -1).mul(255).round()
    assert (rgb.float() - want).abs().max() <= 1 and rgb.float().std() > 0


def test_flux_linear_preview_is_its_factors(flux_model, tmp_path):
    x0 = torch.randn(1, 16, 4, 4, generator=torch.Generator().manual_seed(2))
    rgb = previews.previewer_for(flux_model, [tmp_path], "latent2rgb")(x0)
    factors, bias = torch.tensor(latent_format.FLUX.rgb_factors), torch.tensor(latent_format.FLUX.rgb_bias)
    want = ((torch.einsum("chw,cr->hwr", x0[0], factors) + bias + 1) / 2).clamp(0, 1) * 255
    assert (rgb.float() - want).abs().max() <= 1
