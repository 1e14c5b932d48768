"""FLUX.1 detection from shapes: tiny files and the full-size layouts on the meta device.

Full-size layouts are derived from the public configs: Black Forest Labs' `flux/util.py` configs
(flux-dev / flux-schnell: in_channels 64, vec_in_dim 768, context_in_dim 4096, hidden_size 3072,
mlp_ratio 4.0, num_heads 24, depth 19, depth_single_blocks 38, axes_dim [16, 56, 56], qkv_bias True,
guidance_embed True for dev / False for schnell; flux-dev-fill in_channels 384, out_channels 64;
flux-dev-depth / -canny in_channels 128) and the key names of the published flux1-dev.safetensors
(`double_blocks.N.img_attn.qkv.weight`, `single_blocks.N.linear1.weight`, `guidance_in.in_layer.weight`,
as diffusers' single-file converter reads them)."""
from __future__ import annotations

import pytest
import torch

from models.convert.flux import flux_key_map, weight_scales
from models.detection import detect, detect_flux, flux_variant, is_flux, is_mmdit
from models.files import load_state_dict
from models.flux import FluxConfig
from models.flux_checkpoint import diffusion_model_prefix, load_flux_transformer
from models.testing import flux_layout, random_tensor, tiny_flux_config, write_random_flux

FULL = {"dev": FluxConfig(), "schnell": FluxConfig(guidance_embed=False),
        "dev-fill": FluxConfig(in_channels=384), "dev-control": FluxConfig(in_channels=128)}


@pytest.mark.parametrize("name", list(FULL))
def test_full_size_layouts(name):
    config = FULL[name]
    shapes = flux_layout(config, "model.diffusion_model.")
    assert shapes["model.diffusion_model.double_blocks.18.img_attn.qkv.weight"] == (9216, 3072)
    assert shapes["model.diffusion_model.single_blocks.37.linear1.weight"] == (3 * 3072 + 12288, 3072)
    assert ("model.diffusion_model.guidance_in.in_layer.weight" in shapes) == config.guidance_embed
    assert detect_flux(shapes) == config
    assert flux_variant(config) == name
    assert is_flux(shapes) and not is_mmdit(shapes)
    n = sum(torch.Size(s).numel() for s in shapes.values())
    assert 11.8e9 < n < 12.0e9            # FLUX.1 [dev] / [schnell]: 12 B parameters (model card)


def test_all_in_one_detects_flux_with_vae_and_text_prefixes():
    shapes = flux_layout(FULL["dev"], "model.diffusion_model.")
    shapes.update({"vae.encoder.conv_in.weight": (128, 3, 3, 3), "vae.decoder.conv_in.weight": (512, 16, 3, 3),
                   "vae.encoder.down.0.block.0.conv1.weight": (128, 128, 3, 3),
                   "vae.encoder.down.0.block.1.conv1.weight": (128, 128, 3, 3),
                   "vae.encoder.conv_out.weight": (32, 512, 3, 3), "vae.decoder.conv_out.weight": (3, 128, 3, 3),
                   "text_encoders.clip_l.transformer.text_model.final_layer_norm.weight": (768,),
                   "text_encoders.t5xxl.transformer.shared.weight": (32128, 4096)})
    config = detect(shapes)
    assert config.family == "flux" and config.variant == "dev" and config.vae_prefix == "vae."
    assert config.latent_scale_factor == 0.3611 and config.latent_shift == 0.1159 and config.latent_channels == 16
    assert [s.kind for s in config.text_encoders] == ["clip_l", "t5xxl"]


@pytest.mark.parametrize("prefix", ["", "model.diffusion_model."])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float8_e4m3fn])
def test_tiny_files_in_every_dtype_load(tmp_path, prefix, dtype):
    config = tiny_flux_config()
    path = write_random_flux(tmp_path / "f.safetensors", config, prefix=prefix, dtype=dtype)
    with load_state_dict(path) as source:
        assert diffusion_model_prefix(source.shapes()) == prefix
        module, found, _ = load_flux_transformer(source, prefix, torch.float32, "auto")
    assert found == config
    w = module.double_blocks[0].img_attn.qkv.weight
    want = random_tensor("double_blocks.0.img_attn.qkv.weight", tuple(w.shape), torch.float32, 0).to(dtype).float()
    assert torch.equal(w, want)


def test_scaled_fp8_is_dequantised(tmp_path):
    config = tiny_flux_config(guidance=False)
    path = write_random_flux(tmp_path / "s.safetensors", config, scaled_fp8=True)
    with load_state_dict(path) as source:
        shapes = source.shapes()
        assert "scaled_fp8" in shapes and "img_in.scale_weight" in shapes
        assert "img_in.scale_weight" not in flux_key_map(shapes, "")
        assert weight_scales(shapes, flux_key_map(shapes, ""))["img_in.weight"] == "img_in.scale_weight"
        module, found, _ = load_flux_transformer(source, "", torch.float32, "auto")
    assert found == config
    want = random_tensor("img_in.weight", tuple(module.img_in.weight.shape), torch.float32, 0)
    got = module.img_in.weight
    assert (got - want).abs().max() <= want.abs().max() * 2 ** -3 and (got - want).abs().max() > 0
    assert (got - want).abs().mean() < want.abs().mean() * 0.05       # fp8 rounding only, scale applied


def test_all_in_one_tiny_file_loads_every_part(tmp_path):
    """model.diffusion_model.* + vae.* + text_encoders.{clip_l,t5xxl}.transformer.* (ComfyUI's layout)."""
    from models.checkpoint import load_checkpoint
    from models.testing import (flux_vae_config, module_layout, sd3_text_state, tiny_sd3_spec,
                                write_safetensors_streaming)
    from models.vae import AutoencoderKL
    config = tiny_flux_config()
    state = {k: random_tensor(k, s, torch.float32, 0) for k, s in flux_layout(config, "model.diffusion_model.").items()}
    state.update({k: random_tensor(k, s, torch.float32, 0)
                  for k, s in module_layout(AutoencoderKL, flux_vae_config(), "vae.").items()})
    for kind, text_config in tiny_sd3_spec(text=("clip_l", "t5xxl")).text_configs.items():
        state.update({f"text_encoders.{kind}.transformer.{k}": v
                      for k, v in sd3_text_state(kind, text_config, with_embed_tokens_copy=False).items()})
    path = tmp_path / "flux-aio.safetensors"
    write_safetensors_streaming(path, {k: (tuple(v.shape), v.dtype) for k, v in state.items()}, lambda n: state[n])
    loaded = load_checkpoint(path, dtype=torch.float32)
    assert loaded.config.family == "flux" and loaded.config.variant == "dev"
    assert loaded.unet.config == config and loaded.vae is not None
    assert [e.kind for e in loaded.text_encoders] == ["clip_l", "t5xxl"] and not loaded.unconsumed
    assert torch.equal(loaded.unet.img_in.weight, state["model.diffusion_model.img_in.weight"])
