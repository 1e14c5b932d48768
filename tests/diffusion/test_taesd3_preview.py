"""SD3 step previews: TAESD3 (`taesd3_decoder` in models/vae_approx, 16 latent channels) when asked for and
present, else SD3's latent-to-RGB factors. The TAESD3 reference is diffusers' AutoencoderTiny decoder
(madebyollin's TAESD in diffusers) with 16 latent channels: its `layers.N` are the published file's `N+1`
(the published decoder has its clamp as layer 0, diffusers applies it in forward), its output is in [-1, 1]."""
from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file

from diffusion import loading, previews
from model_management import MemorySettings, ModelManager
from models.testing import tiny_sd3_spec, write_random_sd3_checkpoint
from sampling import latent_format

diffusers = pytest.importorskip("diffusers")


@pytest.fixture(scope="module")
def sd3_model(tmp_path_factory):
    path = write_random_sd3_checkpoint(tmp_path_factory.mktemp("sd3") / "tiny-sd3.safetensors",
                                       tiny_sd3_spec(text=()))
    model, _, _ = loading.load_checkpoint_file(path, ModelManager(MemorySettings(force_fp32=True)))
    return model


def write_taesd3(folder, seed=0):
    """A random diffusers TAESD decoder for 16 channels, saved under the published file's names."""
    torch.manual_seed(seed)
    reference = diffusers.AutoencoderTiny(latent_channels=16).decoder.eval()
    state = {}
    for key, value in reference.state_dict().items():
        index, rest = key.removeprefix("layers.").split(".", 1)
        state[f"{int(index) + 1}.{rest}"] = value.contiguous()
    save_file(state, str(folder / "taesd3_decoder.safetensors"))
    return reference


def test_sd3_uses_taesd3_when_it_is_there(sd3_model, tmp_path):
    assert sd3_model.latent_format.taesd_decoder_name == "taesd3_decoder"
    assert sd3_model.latent_format.latent_channels == 16
    x0 = torch.randn(1, 16, 8, 12, generator=torch.Generator().manual_seed(1))
    linear = previews.previewer_for(sd3_model, [tmp_path], "taesd")          # no file yet: SD3's factors
    torch.testing.assert_close(linear(x0), previews.latent_to_rgb(x0, latent_format.SD3, previews.PREVIEW_MAX_PX))
    reference = write_taesd3(tmp_path)
    rgb = previews.previewer_for(sd3_model, [tmp_path], "taesd")(x0)
    assert rgb.shape == (64, 96, 3) and rgb.dtype == torch.uint8
    with torch.no_grad():
        want = ((reference(x0)[0] + 1) / 2).clamp(0, 1).movedim(0, -1).mul(255).round()
    assert (rgb.float() - want).abs().max() <= 1
    assert rgb.float().std() > 0


def test_sd3_linear_preview_is_its_factors(sd3_model, tmp_path):
    x0 = torch.randn(1, 16, 4, 4, generator=torch.Generator().manual_seed(2))
    rgb = previews.previewer_for(sd3_model, [tmp_path], "latent2rgb")(x0)
    factors, bias = torch.tensor(latent_format.SD3.rgb_factors), torch.tensor(latent_format.SD3.rgb_bias)
    want = ((torch.einsum("chw,cr->hwr", x0[0], factors) + bias + 1) / 2).clamp(0, 1) * 255
    assert (rgb.float() - want).abs().max() <= 1
