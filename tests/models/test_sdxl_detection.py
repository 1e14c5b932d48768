"""Detection of the SDXL family at full size (meta shapes only): the sd_xl_base_1.0 manifest and the
layouts of the refiner, inpainting, SSD-1B and Segmind Vega written by models.testing (sources of each
layout: see SDXL_UNET_CONFIGS there)."""
from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from models.detection import SDXL_LATENT_SCALE, detect
from models.errors import UnknownModelError, UnsupportedModelError
from models.testing import SDXL_UNET_CONFIGS, sdxl_layout
from models.unet import UNetModel
from models.vae import AutoencoderKL

from .conftest import manifest_shapes


def shapes_of(layout) -> dict[str, tuple[int, ...]]:
    return {k: s for k, (s, _) in layout.items()}


def assert_builds_exactly(shapes, config):
    with torch.device("meta"):
        unet, vae = UNetModel(config.unet), AutoencoderKL(config.vae)
    for module, prefix in ((unet, config.unet_prefix), (vae, config.vae_prefix)):
        ours = {prefix + k: tuple(v.shape) for k, v in module.state_dict().items()}
        assert ours == {k: v for k, v in shapes.items() if k.startswith(prefix)}


def test_sdxl_base_manifest():
    shapes = manifest_shapes("sdxl_base")
    config = detect(shapes)
    assert (config.family, config.variant, config.prediction_type, config.architecture) == \
        ("sdxl", "base", "eps", "SDXL")
    assert config.unet == SDXL_UNET_CONFIGS["base"]
    u = config.unet
    assert (u.adm_in_channels, u.context_dim, u.transformer_depth_middle) == (2816, 2048, 10)
    assert u.heads_for(640) == (10, 64) and u.heads_for(1280) == (20, 64)
    assert config.latent_scale_factor == SDXL_LATENT_SCALE == 0.13025 and config.latent_channels == 4
    assert [(s.kind, s.prefix) for s in config.text_encoders] == [
        ("clip_l", "conditioner.embedders.0.transformer."), ("open_clip_g", "conditioner.embedders.1.model.")]
    assert dict(config.text_encoders[0].behaviour) == {"default_clip_skip": -2, "norm_hidden_state": False}
    assert not config.zero_terminal_snr
    assert_builds_exactly(shapes, config)


def test_the_writer_reproduces_the_base_manifest():
    import json

    from models.files import SAFETENSORS_NAMES
    from .conftest import MANIFESTS
    real = json.loads((MANIFESTS / "sdxl_base.json").read_text())["tensors"]
    ours = {k: [list(s), SAFETENSORS_NAMES[d]] for k, (s, d) in sdxl_layout(SDXL_UNET_CONFIGS["base"]).items()}
    assert ours == real


@pytest.mark.parametrize("name,architecture,middle", [("ssd1b", "SSD1B", -1), ("vega", "Segmind_Vega", -1)])
def test_distilled_sdxl_layouts(name, architecture, middle):
    shapes = shapes_of(sdxl_layout(SDXL_UNET_CONFIGS[name]))
    assert "model.diffusion_model.middle_block.1.in_layers.0.weight" not in shapes       # one mid res block
    config = detect(shapes)
    assert (config.family, config.architecture, config.unet.transformer_depth_middle) == ("sdxl", architecture, middle)
    assert config.unet == SDXL_UNET_CONFIGS[name]
    assert_builds_exactly(shapes, config)


def test_refiner_layout():
    shapes = shapes_of(sdxl_layout(SDXL_UNET_CONFIGS["refiner"], refiner=True))
    config = detect(shapes)
    assert (config.family, config.architecture, config.unet.model_channels) == ("sdxl_refiner", "SDXLRefiner", 384)
    assert config.unet == SDXL_UNET_CONFIGS["refiner"]
    assert [(s.kind, s.prefix) for s in config.text_encoders] == [("open_clip_g", "conditioner.embedders.0.model.")]
    assert_builds_exactly(shapes, config)


def test_inpainting_from_nine_input_channels():
    shapes = shapes_of(sdxl_layout(replace(SDXL_UNET_CONFIGS["base"], in_channels=9)))
    config = detect(shapes)
    assert (config.family, config.variant, config.unet.in_channels) == ("sdxl", "inpaint", 9)


def test_v_prediction_and_zero_terminal_snr_keys():
    shapes = dict(manifest_shapes("sdxl_base"))
    v = detect(shapes | {"v_pred": (0,)})
    assert (v.prediction_type, v.zero_terminal_snr) == ("v", False)
    z = detect(shapes | {"v_pred": (0,), "ztsnr": (0,)})
    assert (z.prediction_type, z.zero_terminal_snr) == ("v", True)
    assert not detect(shapes | {"ztsnr": (0,)}).zero_terminal_snr        # ComfyUI reads ztsnr only with v_pred


def test_a_unet_only_sdxl_file_has_no_text_slots_and_a_half_text_stack_is_named():
    shapes = manifest_shapes("sdxl_base")
    assert detect({k: v for k, v in shapes.items() if not k.startswith("conditioner.")}).text_encoders == ()
    with pytest.raises(UnknownModelError, match="embedders.1"):
        detect({k: v for k, v in shapes.items() if not k.startswith("conditioner.embedders.1.")})


def test_other_label_emb_widths_are_refused():
    shapes = dict(manifest_shapes("sdxl_base"))
    shapes["model.diffusion_model.label_emb.0.0.weight"] = (1280, 1536)
    with pytest.raises(UnsupportedModelError, match="1536"):
        detect(shapes)
