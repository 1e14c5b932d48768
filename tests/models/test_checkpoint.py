"""models.checkpoint: tiny checkpoints in the real layout through the real loader."""
from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file

from models.checkpoint import load_checkpoint
from models.convert.ldm import ema_key, unet_key_map
from models.detection import sd2_prediction_probe
from models.errors import KeyMismatchError, ModelError, UnsupportedModelError
from models.files import load_state_dict
from models.testing import tiny_unet_config

PROBE = "model.diffusion_model.input_blocks.1.0.in_layers.2.weight"


@pytest.mark.parametrize("suffix", [".safetensors", ".ckpt"])
@pytest.mark.parametrize("family", ["sd1", "sd2"])
def test_loads_every_component(tiny_checkpoint, family, suffix):
    ckpt = load_checkpoint(tiny_checkpoint(family, suffix))
    assert ckpt.config.family == family
    assert ckpt.unconsumed == []                       # DDPM buffers and EMA counters are known extras
    assert len(ckpt.text_encoders) == 1 and ckpt.text_encoder_state_dicts == []
    with load_state_dict(tiny_checkpoint(family, suffix)) as sd:
        assert torch.equal(ckpt.unet.input_blocks[1][0].in_layers[2].weight, sd[PROBE])
        assert torch.equal(ckpt.vae.decoder.conv_in.weight, sd["first_stage_model.decoder.conv_in.weight"])
    cond, pooled = ckpt.text_encoders[0].encode("a photo of a cat")
    assert cond.shape[-1] == ckpt.config.unet.context_dim
    with torch.no_grad():
        out = ckpt.unet(torch.randn(1, 4, 8, 8), torch.tensor([1.0]), cond)
    assert out.shape == (1, 4, 8, 8) and torch.isfinite(out).all()


@pytest.mark.parametrize("stored", [torch.float32, torch.float16, torch.bfloat16])
def test_stored_dtypes_and_dtype_choice(tiny_checkpoint, stored):
    path = tiny_checkpoint("sd1", dtype=stored)
    ckpt = load_checkpoint(path)
    assert ckpt.unet.out[2].weight.dtype == stored and ckpt.vae.dtype == stored
    as32 = load_checkpoint(path, dtype=torch.float32)
    assert as32.unet.out[2].weight.dtype == torch.float32
    assert torch.equal(as32.unet.out[2].weight, ckpt.unet.out[2].weight.float())


def test_ema_choice_on_a_pruned_file(tiny_checkpoint):
    path = tiny_checkpoint("sd1", with_ema=True)
    with load_state_dict(path) as sd:
        training, ema = sd[PROBE], sd[ema_key(PROBE)]
    assert not torch.equal(training, ema)
    default = load_checkpoint(path)
    assert default.weights == "training" and default.config.has_ema
    assert torch.equal(default.unet.input_blocks[1][0].in_layers[2].weight, training)
    chosen = load_checkpoint(path, use_ema=True)
    assert chosen.weights == "ema"
    assert torch.equal(chosen.unet.input_blocks[1][0].in_layers[2].weight, ema)


def test_ema_request_on_an_emaonly_file_loads_what_is_stored(tiny_checkpoint):
    ckpt = load_checkpoint(tiny_checkpoint("sd1"), use_ema=True)
    assert ckpt.weights == "as stored"


def test_incomplete_ema_copy_is_listed():
    keys = ["model.diffusion_model.a.weight", "model.diffusion_model.b.weight", "model_ema.diffusion_modelaweight"]
    with pytest.raises(KeyMismatchError, match="1 of 2") as info:
        unet_key_map(keys, use_ema=True)
    assert "model_ema.diffusion_modelbweight" in str(info.value)
    assert ema_key("model.diffusion_model.input_blocks.0.0.weight") == "model_ema.diffusion_modelinput_blocks00weight"


def test_sd2_prediction_from_weights_and_override(tiny_checkpoint):
    probe = sd2_prediction_probe(tiny_unet_config("sd2"))
    v_file = tiny_checkpoint("sd2", std_overrides={probe: 0.15})
    ckpt = load_checkpoint(v_file)
    assert (ckpt.config.prediction_type, ckpt.prediction_source) == ("v", "weights")
    eps_file = tiny_checkpoint("sd2")                  # biases ~ N(0, 0.02): ComfyUI would say eps
    assert load_checkpoint(eps_file).config.prediction_type == "eps"
    forced = load_checkpoint(eps_file, prediction_override="v")
    assert (forced.config.prediction_type, forced.prediction_source) == ("v", "override")
    assert load_checkpoint(tiny_checkpoint("sd1")).config.prediction_type == "eps"
    with pytest.raises(ModelError, match="prediction_override"):
        load_checkpoint(eps_file, prediction_override="x0")


def test_inpainting_checkpoint(tiny_checkpoint):
    ckpt = load_checkpoint(tiny_checkpoint("sd1", in_channels=9))
    assert ckpt.config.variant == "inpaint"
    with torch.no_grad():
        out = ckpt.unet(torch.randn(1, 9, 8, 8), torch.tensor([1.0]), torch.randn(1, 77, 32))
    assert out.shape == (1, 4, 8, 8)


def _rewrite(path, tmp_path, edit):
    with load_state_dict(path) as sd:
        tensors = {k: sd[k].clone() for k in sd}
    edit(tensors)
    out = tmp_path / "edited.safetensors"
    save_file(tensors, out)
    return out


def test_missing_and_misshapen_keys_are_listed(tiny_checkpoint, tmp_path):
    path = tiny_checkpoint("sd1")
    broken = _rewrite(path, tmp_path, lambda t: t.pop("model.diffusion_model.out.0.bias"))
    with pytest.raises(KeyMismatchError, match="UNet") as info:
        load_checkpoint(broken)
    assert "out.0.bias" in str(info.value)

    def misshape(t):
        t["first_stage_model.decoder.conv_out.bias"] = torch.zeros(5)
    broken = _rewrite(path, tmp_path, misshape)
    with pytest.raises(KeyMismatchError, match="VAE") as info:
        load_checkpoint(broken)
    assert "decoder.conv_out" in str(info.value)

    def extra(t):
        t["model.diffusion_model.extra_head.weight"] = torch.zeros(2)
    broken = _rewrite(path, tmp_path, extra)
    with pytest.raises(KeyMismatchError, match="unexpected"):
        load_checkpoint(broken)


def test_unknown_extra_keys_are_reported_not_fatal(tiny_checkpoint, tmp_path):
    def extra(t):
        t["some_training_state.step"] = torch.zeros(1)
    ckpt = load_checkpoint(_rewrite(tiny_checkpoint("sd1"), tmp_path, extra))
    assert ckpt.unconsumed == ["some_training_state.step"]


def test_a_label_emb_without_the_rest_of_sdxl_is_refused_clearly(tmp_path):
    path = tmp_path / "xl.safetensors"
    save_file({"model.diffusion_model.label_emb.0.0.weight": torch.zeros(2, 2),
               "model.diffusion_model.input_blocks.0.0.weight": torch.zeros(2, 4, 3, 3)}, path)
    with pytest.raises(ModelError, match="Incomplete LDM UNet: no model.diffusion_model.out.2.weight"):
        load_checkpoint(path)
