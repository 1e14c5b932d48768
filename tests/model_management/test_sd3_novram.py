"""An SD3 txt2img under `--novram` and a small device budget (the full-size run is bench/sd3_memory.py
--novram --vram-budget 2): the text encoders leave the device when the diffusion model samples, and the
latent is the one the default mode gives."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from diffusion import conditioning, ksampler, loading
from model_management import MemorySettings, ModelManager, VramMode
from models.testing import tiny_sd3_spec, write_random_sd3_checkpoint


@pytest.fixture(scope="module")
def sd3_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("sd3") / "tiny-sd3.safetensors"
    return write_random_sd3_checkpoint(path, tiny_sd3_spec(t5_dtype=torch.float8_e4m3fn))


def txt2img(path: Path, settings: MemorySettings):
    manager = ModelManager(settings)
    model, clip, _ = loading.load_checkpoint_file(path, manager)
    pos, neg = conditioning.encode_text(clip, "a (red:1.2) cat"), conditioning.encode_text(clip, "")
    text_during_encode = {m["name"]: m["placement"] for m in manager.report()["models"]}
    latent = ksampler.ksample(model, {"samples": torch.zeros(1, 16, 8, 8)}, pos, neg, seed=3, steps=2, cfg=4.5,
                              sampler_name="euler", scheduler="simple")["samples"]
    after = {m["name"]: m for m in manager.report()["models"]}
    return latent, text_during_encode, after


def test_novram_small_budget_evicts_the_text_encoders_and_gives_the_default_latent(sd3_file):
    base, _, _ = txt2img(sd3_file, MemorySettings(force_fp32=True))
    latent, during, after = txt2img(sd3_file, MemorySettings(force_fp32=True, vram_mode=VramMode.NO,
                                                             vram_budget_bytes=16 * 2**20))
    text = next(name for name in after if "#text" in name)
    assert during[text] != "ram"                                     # it was on the device to encode
    assert after[text]["placement"] == "ram" and after[text]["resident_bytes"] == 0
    assert "novram" in after[text]["why"]
    torch.testing.assert_close(latent, base, atol=1e-5, rtol=1e-5)
