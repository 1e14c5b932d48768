"""SD3 / SD3.5 detection from shapes: the real manifests at full size (meta device, no weights), the
SD3.5 large layout derived from its public config, and the diffusion model alone."""
from __future__ import annotations

import math

import pytest
import torch

from models.detection import detect, detect_mmdit, is_mmdit
from models.mmdit import MMDiT, MMDiTConfig
from models.testing import module_layout
from models.vae import AutoencoderKL

from .conftest import manifest_shapes

PREFIX = "model.diffusion_model."

# SD3.5 large and large-turbo, from the public diffusers configs of stabilityai/stable-diffusion-3.5-large
# and -large-turbo (transformer/config.json: num_layers 38, num_attention_heads 38, attention_head_dim 64,
# caption_projection_dim 2432, joint_attention_dim 4096, pooled_projection_dim 2048, pos_embed_max_size 192,
# qk_norm "rms_norm", no dual_attention_layers; both repos give the same transformer config) and the
# model card's "8.1 billion parameters"; the published sd3.5_large.safetensors is 16.5 GB in bf16.
SD35_LARGE = MMDiTConfig(depth=38, hidden_size=2432, num_heads=38, pos_embed_max_size=192, qk_norm=True)


def assert_builds_exactly(shapes, config):
    with torch.device("meta"):
        unet, vae = MMDiT(config.unet), AutoencoderKL(config.vae)
    for module, prefix in ((unet, config.unet_prefix), (vae, config.vae_prefix)):
        ours = {prefix + k: tuple(v.shape) for k, v in module.state_dict().items()}
        assert ours == {k: v for k, v in shapes.items() if k.startswith(prefix)}


def test_sd3_medium_all_in_one():
    shapes = manifest_shapes("sd3_medium")
    config = detect(shapes)
    assert (config.family, config.variant, config.prediction_type) == ("sd3", "sd3_medium", "flow")
    u = config.unet
    assert (u.depth, u.hidden_size, u.num_heads, u.pos_embed_max_size) == (24, 1536, 24, 192)
    assert (u.qk_norm, u.dual_attention_blocks, u.context_in_dim, u.adm_in_dim) == (False, (), 4096, 2048)
    assert (config.latent_channels, config.latent_scale_factor, config.latent_shift) == (16, 1.5305, 0.0609)
    assert not config.vae.has_quant_conv
    assert [s.kind for s in config.text_encoders] == ["clip_l", "clip_g", "t5xxl"]
    assert all(any(k.startswith(s.prefix) for k in shapes) for s in config.text_encoders)
    assert_builds_exactly(shapes, config)


def test_sd35_medium():
    shapes = manifest_shapes("sd35_medium")
    config = detect(shapes)
    assert (config.family, config.variant) == ("sd3", "sd35_medium")
    u = config.unet
    assert (u.depth, u.pos_embed_max_size, u.qk_norm, u.dual_attention_blocks) == (24, 384, True, tuple(range(13)))
    assert config.text_encoders == ()
    assert_builds_exactly(shapes, config)


def test_sd35_large_derived_layout():
    layout = module_layout(MMDiT, SD35_LARGE, PREFIX)
    assert sum(math.prod(s) for s in layout.values()) == pytest.approx(8.1e9, rel=0.01)
    vae = module_layout(AutoencoderKL, detect(manifest_shapes("sd35_medium")).vae, "first_stage_model.")
    config = detect({**layout, **vae})
    assert (config.variant, config.unet) == ("sd35_large", SD35_LARGE)
    # 2432 = 38 * 64: depth, heads and width agree, as in the released file
    assert layout[PREFIX + "x_embedder.proj.weight"] == (2432, 16, 2, 2)
    assert layout[PREFIX + "joint_blocks.37.context_block.adaLN_modulation.1.weight"] == (2 * 2432, 2432)


@pytest.mark.parametrize("prefix", ["", PREFIX])
def test_diffusion_model_alone(prefix):
    shapes = {prefix + k[len(PREFIX):]: v for k, v in manifest_shapes("sd35_medium").items() if k.startswith(PREFIX)}
    assert is_mmdit(shapes, prefix) and not is_mmdit(shapes, "x" + prefix)
    assert detect_mmdit(shapes, prefix) == detect(manifest_shapes("sd35_medium")).unet


def test_tiny_layout_takes_the_same_path():
    tiny = MMDiTConfig(depth=2, hidden_size=128, num_heads=2, context_in_dim=64, adm_in_dim=48,
                       pos_embed_max_size=16, qk_norm=True, dual_attention_blocks=(0,))
    assert detect_mmdit(module_layout(MMDiT, tiny, PREFIX)) == tiny
