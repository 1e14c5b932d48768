"""models.detection on the real key manifests (full size, no weights) and on tiny layouts."""
from __future__ import annotations

import pytest
import torch

from models.detection import detect, detect_vae_file, sd2_prediction_probe, sniff_sd2_prediction
from models.errors import UnknownModelError, UnsupportedModelError
from models.testing import CheckpointSpec, checkpoint_tensors, tiny_unet_config, tiny_vae_config
from models.unet import UNetModel
from models.vae import AutoencoderKL

from .conftest import manifest_shapes


def assert_builds_exactly(shapes, config):
    """The detected configs build modules (on meta) whose keys and shapes equal the file's."""
    with torch.device("meta"):
        unet, vae = UNetModel(config.unet), AutoencoderKL(config.vae)
    for module, prefix in ((unet, config.unet_prefix), (vae, config.vae_prefix)):
        ours = {prefix + k: tuple(v.shape) for k, v in module.state_dict().items()}
        theirs = {k: v for k, v in shapes.items() if k.startswith(prefix)}
        assert ours == theirs


@pytest.mark.parametrize("name", ["sd15_emaonly", "sd15_pruned"])
def test_sd15_manifests(name):
    shapes = manifest_shapes(name)
    config = detect(shapes)
    assert (config.family, config.variant, config.prediction_type) == ("sd1", "base", "eps")
    u = config.unet
    assert (u.model_channels, u.channel_mult, u.num_res_blocks) == (320, (1, 2, 4, 4), (2, 2, 2, 2))
    assert (u.context_dim, u.num_heads, u.use_linear_in_transformer) == (768, 8, False)
    assert u.transformer_depth == (1, 1, 1, 1, 1, 1, 0, 0) and u.transformer_depth_middle == 1
    assert (config.latent_channels, config.latent_scale_factor, config.latent_downscale) == (4, 0.18215, 8)
    assert [(s.kind, s.prefix) for s in config.text_encoders] == [("clip_l", "cond_stage_model.transformer.")]
    assert config.has_ema == (name == "sd15_pruned")
    assert_builds_exactly(shapes, config)


def test_sd21_768v_manifest():
    shapes = manifest_shapes("sd21_768v")
    config = detect(shapes)
    assert (config.family, config.variant, config.prediction_type) == ("sd2", "base", "v")
    u = config.unet
    assert (u.context_dim, u.head_dim, u.use_linear_in_transformer, u.upcast_attention) == (1024, 64, True, True)
    assert [u.heads_for(320 * m)[0] for m in (1, 2, 4)] == [5, 10, 20]
    assert [(s.kind, s.prefix) for s in config.text_encoders] == [("open_clip_h", "cond_stage_model.model.")]
    assert sd2_prediction_probe(u) == "model.diffusion_model.output_blocks.11.1.transformer_blocks.0.norm1.bias"
    assert_builds_exactly(shapes, config)


def test_sd2_prediction_statistic_follows_comfyui():
    assert sniff_sd2_prediction(0.15) == "v" and sniff_sd2_prediction(0.0) == "eps"


def test_inpainting_variant_from_nine_input_channels():
    shapes = dict(manifest_shapes("sd15_emaonly"))
    shapes["model.diffusion_model.input_blocks.0.0.weight"] = (320, 9, 3, 3)
    config = detect(shapes)
    assert (config.variant, config.unet.in_channels, config.prediction_type) == ("inpaint", 9, "eps")
    shapes = dict(manifest_shapes("sd21_768v"))
    shapes["model.diffusion_model.input_blocks.0.0.weight"] = (320, 9, 3, 3)
    config = detect(shapes)
    assert (config.family, config.variant, config.prediction_type) == ("sd2", "inpaint", "eps")


@pytest.mark.parametrize("family", ["sd1", "sd2"])
@pytest.mark.parametrize("in_channels", [4, 9])
def test_tiny_layouts_take_the_same_path(family, in_channels):
    unet = tiny_unet_config(family, in_channels)
    layout, _ = checkpoint_tensors(CheckpointSpec(family, unet, tiny_vae_config(), with_ema=True))
    shapes = {k: s for k, (s, _) in layout.items()}
    config = detect(shapes)
    assert config.family == family and config.has_ema
    assert config.unet == unet              # (the tiny sd2 config already asks for upcast attention)
    assert config.vae == tiny_vae_config()
    assert config.latent_downscale == 4
    assert_builds_exactly(shapes, config)


def test_other_depths_and_widths():
    from dataclasses import replace
    unet = replace(tiny_unet_config("sd1"), model_channels=64, channel_mult=(1, 2, 3, 4), num_res_blocks=(2, 2, 2, 2),
                   transformer_depth=(2, 2, 1, 1, 1, 1, 0, 0), transformer_depth_middle=3,
                   transformer_depth_output=(0, 0, 0, 1, 1, 1, 1, 1, 1, 2, 2, 2), context_dim=48)
    layout, _ = checkpoint_tensors(CheckpointSpec("sd1", unet, tiny_vae_config(), with_text_encoder=False))
    assert detect({k: s for k, (s, _) in layout.items()}).unet == unet


def test_unknown_layout_says_what_was_found():
    with pytest.raises(UnknownModelError, match="no LDM UNet") as info:
        detect({"foo.bar.weight": (3, 3), "foo.baz": (1,)})
    assert "foo.bar" in str(info.value)


def test_inconsistent_text_encoder_is_reported():
    shapes = dict(manifest_shapes("sd15_emaonly"))
    shapes = {k: v for k, v in shapes.items() if not k.startswith("cond_stage_model.")}
    shapes["cond_stage_model.model.token_embedding.weight"] = (49408, 1024)
    with pytest.raises(UnknownModelError, match="open_clip_h"):
        detect(shapes)


def test_standalone_vae_detection():
    shapes = {k[len("first_stage_model."):]: v for k, v in manifest_shapes("sd15_emaonly").items()
              if k.startswith("first_stage_model.")}
    config, prefix = detect_vae_file(shapes)
    assert prefix == "" and (config.ch, config.ch_mult, config.z_channels, config.downscale_factor) == (128, (1, 2, 4, 4), 4, 8)
    with pytest.raises(UnknownModelError, match="Not a VAE"):
        detect_vae_file({"x": (1,)})


@pytest.mark.parametrize("family,manifest", [("sd1", "sd15_emaonly"), ("sd1", "sd15_pruned"), ("sd2", "sd21_768v")])
def test_full_size_writer_reproduces_the_real_layout(family, manifest):
    """models.testing writes exactly the published files' keys, shapes and dtypes (checked on meta)."""
    import json

    from models.files import SAFETENSORS_NAMES
    from models.vae import VAEConfig
    from .conftest import MANIFESTS
    unet = detect(manifest_shapes(manifest)).unet
    spec = CheckpointSpec(family, unet, VAEConfig(), with_ema=manifest == "sd15_pruned")
    layout, _ = checkpoint_tensors(spec, layout_only=True)
    real = json.loads((MANIFESTS / f"{manifest}.json").read_text())["tensors"]
    ours = {k: [list(s), SAFETENSORS_NAMES[d]] for k, (s, d) in layout.items()}
    assert sorted(set(real) - set(ours)) == [] and sorted(set(ours) - set(real)) == []
    assert {k: v for k, v in ours.items() if v != real[k]} == {}
