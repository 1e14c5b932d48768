"""FLUX reads the conditioning's `attention_mask` (StyleModelApply's attn_bias, FLUX Redux): the mask resized to
the token grid against interpolation matrices built independently; the transformer's additive bias checked by two
exact identities (a bias of log 2 on a key is that key twice; hidden keys are keys that are absent); Kontext
reference tokens unbiased; and Redux with attn_bias through the real Engine on a tiny FLUX (strength 0 hides the
Redux tokens, so the image is the one without them)."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from model_management import MemorySettings
from models.flux import MASK_FLOOR, Flux, joint_mask_for_grid
from models.style_model import StyleModelConfig
from models.testing import (
    flux_vae_config,
    tiny_flux_config,
    tiny_sd3_spec,
    write_random_flux,
    write_random_text_encoder,
    write_random_vae,
)
from models.testing_vision import tiny_clip_vision_config, write_random_clip_vision, write_random_style_model
from nodes import services
from tests.nodes.engine_harness import Capture, Harness, installed, write_reference_image


def _grid_matrix(grid_in: tuple[int, int], grid_out: tuple[int, int]) -> torch.Tensor:
    """[ho*wo, hi*wi]: column j is the bilinear resize of the j-th one-hot image (resizing is linear)."""
    n = grid_in[0] * grid_in[1]
    basis = torch.eye(n, dtype=torch.float64).reshape(n, 1, *grid_in)
    return F.interpolate(basis, size=grid_out, mode="bilinear").reshape(n, -1).T


def test_mask_resize_matches_interpolation_matrices():
    t, grid_in, grid_out = 3, (2, 3), (4, 5)
    n_in = grid_in[0] * grid_in[1]
    mask = torch.randn(2, t + n_in, t + n_in, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    r = _grid_matrix(grid_in, grid_out)
    expected = torch.cat([torch.cat([mask[:, :t, :t], mask[:, :t, t:] @ r.T], 2),
                          torch.cat([r @ mask[:, t:, :t], r @ mask[:, t:, t:] @ r.T], 2)], 1)
    got = joint_mask_for_grid(mask, grid_in, grid_out)
    torch.testing.assert_close(got, expected)
    assert joint_mask_for_grid(mask, grid_in, grid_in) is mask
    with pytest.raises(ValueError, match="does not cover"):
        joint_mask_for_grid(torch.zeros(1, 4, 4), (3, 3), (4, 4))


def test_hidden_keys_stay_hidden_when_resized():
    """A 1 x 1 grid resized is a broadcast; a -inf column stays a floor (no NaN from 0 x -inf)."""
    mask = torch.zeros(1, 4 + 1, 4 + 1, dtype=torch.float16)
    mask[:, :, 1:3] = float("-inf")
    got = joint_mask_for_grid(mask, (1, 1), (3, 2))
    assert got.shape == (1, 10, 10) and not torch.isnan(got).any()
    assert torch.all(got[:, :, 1:3] == MASK_FLOOR) and torch.all(got[:, :, [0, 3, *range(4, 10)]] == 0)


@pytest.fixture(scope="module")
def flux():
    torch.manual_seed(0)
    model = Flux(tiny_flux_config()).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn_like(p) * 0.2)
    return model


def _inputs(tokens: int = 6):
    g = torch.Generator().manual_seed(1)
    return dict(x=torch.randn(1, 16, 8, 8, generator=g), timesteps=torch.tensor([0.7]),
                context=torch.randn(1, tokens, 64, generator=g), y=torch.randn(1, 32, generator=g),
                guidance=torch.tensor([3.5]))


def _bias(length: int, columns: slice, value: float) -> torch.Tensor:
    mask = torch.zeros(1, length, length)
    mask[:, :, columns] = value
    return mask


@torch.no_grad()
def test_a_log2_bias_on_keys_is_those_keys_twice(flux):
    """softmax with log 2 added to a key's score = the key counted twice (text ids are all 0, so a copy of a
    text token stays identical to it through every block)."""
    a = _inputs()
    n = a["context"].shape[1] + 16
    biased = flux(**a, attention_mask=_bias(n, slice(4, 6), math.log(2.0)))
    doubled = flux(**{**a, "context": torch.cat([a["context"], a["context"][:, 4:6]], 1)})
    torch.testing.assert_close(biased, doubled, atol=1e-5, rtol=1e-5)
    assert (biased - flux(**a)).abs().max() > 1e-3


@torch.no_grad()
def test_hidden_keys_are_absent_keys(flux):
    a = _inputs()
    n = a["context"].shape[1] + 16
    for value in (float("-inf"), MASK_FLOOR):
        hidden = flux(**a, attention_mask=_bias(n, slice(4, 6), value))
        torch.testing.assert_close(hidden, flux(**{**a, "context": a["context"][:, :4]}), atol=1e-5, rtol=1e-5)
    assert torch.equal(flux(**a, attention_mask=torch.zeros(1, n, n)), flux(**a))


@torch.no_grad()
def test_reference_tokens_get_no_bias_and_a_wrong_size_is_refused(flux):
    a = _inputs()
    ref = [torch.randn(1, 16, 4, 4, generator=torch.Generator().manual_seed(3))]
    n = a["context"].shape[1] + 16
    with_refs = flux(**a, ref_latents=ref, attention_mask=_bias(n, slice(4, 6), float("-inf")))
    absent = flux(**{**a, "context": a["context"][:, :4]}, ref_latents=ref)
    torch.testing.assert_close(with_refs, absent, atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="does not fit"):
        flux(**a, attention_mask=torch.zeros(1, n + 3, n + 3))


# --- Redux with attn_bias through the Engine ----------------------------------------------------------------

REDUX = StyleModelConfig("redux", in_width=128, out_width=64)


@pytest.fixture(scope="module")
def harness_redux(tmp_path_factory):
    h = Harness(tmp_path_factory.mktemp("base"))
    h.services = services.NodeServices(h.folders, settings=MemorySettings(force_fp32=True))
    folders = {kind: h.folders.paths(kind)[0] for kind in
               ("diffusion_models", "text_encoders", "vae", "clip_vision", "style_models")}
    for path in folders.values():
        path.mkdir(parents=True, exist_ok=True)
    write_random_flux(folders["diffusion_models"] / "flux-dev.safetensors", tiny_flux_config())
    for kind, config in tiny_sd3_spec(text=("clip_l", "t5xxl")).text_configs.items():
        write_random_text_encoder(folders["text_encoders"] / f"{kind}.safetensors", kind, config)
    write_random_vae(folders["vae"] / "ae.safetensors", flux_vae_config())
    write_random_clip_vision(folders["clip_vision"] / "siglip.safetensors",
                             tiny_clip_vision_config(is_siglip=True), seed=4)
    write_random_style_model(folders["style_models"] / "redux.safetensors", REDUX, seed=1)
    write_reference_image(h, (56, 56))
    h.registry.register("TestCapture", Capture)
    yield h
    h.close()


@pytest.fixture
def harness(harness_redux):
    yield from installed(harness_redux)


def _prompt(*, styled: bool = True, strength: float = 1.0, strength_type: str = "attn_bias") -> dict:
    return {
        "1": {"class_type": "UNETLoader", "inputs": {"unet_name": "flux-dev.safetensors", "weight_dtype": "default"}},
        "2": {"class_type": "DualCLIPLoader", "inputs": {"clip_name1": "t5xxl.safetensors",
                                                         "clip_name2": "clip_l.safetensors", "type": "flux"}},
        "4": {"class_type": "CLIPTextEncode", "inputs": {"text": "a red cat", "clip": ["2", 0]}},
        "5": {"class_type": "FluxGuidance", "inputs": {"conditioning": ["4", 0], "guidance": 3.5}},
        "11": {"class_type": "CLIPVisionLoader", "inputs": {"clip_name": "siglip.safetensors"}},
        "12": {"class_type": "LoadImage", "inputs": {"image": "ref.png"}},
        "13": {"class_type": "CLIPVisionEncode", "inputs": {"clip_vision": ["11", 0], "image": ["12", 0],
                                                            "crop": "center"}},
        "14": {"class_type": "StyleModelLoader", "inputs": {"style_model_name": "redux.safetensors"}},
        "15": {"class_type": "StyleModelApply", "inputs": {"conditioning": ["5", 0], "style_model": ["14", 0],
               "clip_vision_output": ["13", 0], "strength": strength, "strength_type": strength_type}},
        "7": {"class_type": "EmptySD3LatentImage", "inputs": {"width": 48, "height": 64, "batch_size": 1}},
        "8": {"class_type": "KSampler", "inputs": {"seed": 7, "steps": 2, "cfg": 1.0, "sampler_name": "euler",
                                                   "scheduler": "simple", "denoise": 1.0, "model": ["1", 0],
                                                   "positive": ["15", 0] if styled else ["5", 0],
                                                   "negative": ["4", 0], "latent_image": ["7", 0]}},
        "99": {"class_type": "TestCapture", "inputs": {"value": ["8", 0]}},
    }


def _latent(h: Harness, prompt: dict) -> torch.Tensor:
    Capture.seen = []
    result = h.run(prompt)
    assert result.status == "success", (result.error or {}).get("exception_message")
    return Capture.seen[-1]["samples"]


def test_redux_attn_bias_through_the_engine(harness):
    plain = _latent(harness, _prompt(styled=False))
    full = _latent(harness, _prompt(strength=1.0))                      # no mask: the Redux tokens in full
    half = _latent(harness, _prompt(strength=0.5))
    hidden = _latent(harness, _prompt(strength=0.0))
    scaled = _latent(harness, _prompt(strength=0.5, strength_type="multiply"))
    assert not torch.isnan(hidden).any()
    torch.testing.assert_close(hidden, plain, atol=1e-5, rtol=1e-5)     # log 0: nobody attends to the tokens
    assert (full - plain).abs().max() > 1e-3
    assert (half - full).abs().max() > 1e-4 and (half - plain).abs().max() > 1e-4
    assert (half - scaled).abs().max() > 1e-4                         # a bias is not a scale
