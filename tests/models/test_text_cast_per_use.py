"""CLIP towers stored narrower than their compute dtype (an fp16 file, fp32 text encoders on the CPU) keep the
file's tensors and widen each weight when it is used: the encodings are bit-identical to a tower converted to
fp32 when loaded, resident or streamed layer by layer under --novram, and model management puts no fp32 copy
of them anywhere (SDXL's bigG alone would be 2.6 GiB of fp32 beside its 1.3 GiB of file pages)."""
from __future__ import annotations

import pytest
import torch

from diffusion import conditioning, loading
from model_management import MemorySettings, ModelManager, VramMode
from models.files import load_state_dict
from models.testing import tiny_sdxl_text_configs, tiny_sdxl_unet_config, tiny_vae_config, write_sdxl_checkpoint
from models.text import ClipTextConfig, load_text_encoder, random_text_encoder_state_dict

PROMPT = "a (photo:1.2) of a cat, [blurry:0.8]"
CONFIGS = {"clip_l": ClipTextConfig.of_kind("clip_l", hidden_size=64, num_layers=2, num_heads=1, intermediate_size=128),
           "open_clip_g": ClipTextConfig.of_kind("open_clip_g", hidden_size=64, num_layers=2, num_heads=1,
                                                 intermediate_size=128, projection_dim=48)}


@pytest.mark.parametrize("stored", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("kind", sorted(CONFIGS))
def test_a_narrower_tower_casts_per_use_with_the_values_of_a_converted_one(kind, stored):
    state = random_text_encoder_state_dict(kind, CONFIGS[kind], seed=3, dtype=stored)
    kept = load_text_encoder(kind, state, dtype=torch.float32)
    converted = load_text_encoder(kind, {k: v.float() if v.is_floating_point() else v for k, v in state.items()},
                                  dtype=torch.float32)
    assert kept.model.CASTS_WEIGHTS_PER_USE and not converted.model.CASTS_WEIGHTS_PER_USE
    assert {p.dtype for p in kept.parameters()} == {stored} and kept.dtype == torch.float32
    token = state["token_embedding.weight" if kind == "open_clip_g" else "text_model.embeddings.token_embedding.weight"]
    assert kept.model.token_embedding.weight.data_ptr() == token.data_ptr()          # the file's tensor, no copy
    for skip in (-1, -2):
        a, b = kept.encode(PROMPT, clip_skip=skip), converted.encode(PROMPT, clip_skip=skip)
        assert a[0].dtype == torch.float32 and torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


def test_a_narrower_dtype_still_converts_when_loaded():
    state = random_text_encoder_state_dict("clip_l", CONFIGS["clip_l"], seed=3)          # fp32
    half = load_text_encoder("clip_l", state, dtype=torch.float16)
    assert not half.model.CASTS_WEIGHTS_PER_USE and {p.dtype for p in half.parameters()} == {torch.float16}


@pytest.fixture(scope="module")
def sdxl_fp16(tmp_path_factory):
    return write_sdxl_checkpoint(tmp_path_factory.mktemp("xl") / "xl16.safetensors", tiny_sdxl_unet_config(),
                                 text=tiny_sdxl_text_configs(), vae=tiny_vae_config(), dtype=torch.float16)


@pytest.mark.parametrize("settings", [MemorySettings(device="cpu"),
                                      MemorySettings(device="cpu", vram_mode=VramMode.NO, vram_budget_bytes=5 * 2**20)],
                         ids=["cpu", "novram-5MiB"])
def test_sdxl_towers_from_an_fp16_file_encode_as_the_fp32_conversion_without_copies(sdxl_fp16, settings):
    manager = ModelManager(settings)
    _, clip, _ = loading.load_checkpoint_file(sdxl_fp16, manager)
    record = manager.record_of(clip)
    assert set(record.weights.cast_per_use) == set(record.weights.slots)
    assert {t.dtype for t in record.weights.home.values() if t.is_floating_point()} == {torch.float16}
    [[cond, options]] = conditioning.encode_text(clip, PROMPT)
    assert record.placement.value == ("partial" if settings.vram_mode is VramMode.NO else "full")
    # every weight the towers computed with is the home tensor itself (resident) or a same-dtype copy (streamed)
    assert all(record.weights.current(k).dtype == torch.float16 for k in record.weights.slots
               if record.weights.home[k].is_floating_point())
    # reference: the same towers converted to fp32 when loaded, straight from the file
    with load_state_dict(sdxl_fp16) as source:
        towers = []
        for prefix, kind, behaviour in (("conditioner.embedders.0.transformer.", "clip_l",
                                         {"default_clip_skip": -2, "norm_hidden_state": False}),
                                        ("conditioner.embedders.1.model.", "open_clip_g", {})):
            state = {k[len(prefix):]: source[k].float() if source[k].is_floating_point() else source[k].clone()
                     for k in source if k.startswith(prefix)}
            towers.append(load_text_encoder(kind, state, dtype=torch.float32, **behaviour))
    cond_l, _ = towers[0].encode(PROMPT)
    cond_g, pooled = towers[1].encode(PROMPT)
    assert torch.equal(cond, torch.cat([cond_l, cond_g], dim=-1)) and torch.equal(options["pooled_output"], pooled)
