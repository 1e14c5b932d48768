"""SD3 text encoders through the real Engine: standalone clip_l / clip_g / t5xxl files stored in bf16 (and
fp16 / fp8) from the legacy `models/clip` folder give the conditioning of fp32 files holding the same
values; a prompt whose conditioning is cached runs no T5 again."""
from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file, save_file

from model_management import MemorySettings
from models.testing import tiny_sd3_spec, write_random_sd3_checkpoint, write_random_text_encoder
from models.text import t5 as t5_module
from nodes import services
from tests.nodes.engine_harness import Capture, Harness
from tests.nodes.test_builtin_sd3 import CKPT, captured, txt2img

STORED = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp8_e4m3fn": torch.float8_e4m3fn}


@pytest.fixture(scope="module")
def files_harness(tmp_path_factory):
    h = Harness(tmp_path_factory.mktemp("base"))
    h.services = services.NodeServices(h.folders, settings=MemorySettings(force_fp32=True))
    ckpts = h.folders.paths("checkpoints")[0]
    ckpts.mkdir(parents=True, exist_ok=True)
    spec = tiny_sd3_spec(t5_dtype=torch.float8_e4m3fn)
    write_random_sd3_checkpoint(ckpts / CKPT, spec)
    encoders, legacy = h.folders.paths("text_encoders")[:2]
    assert legacy.name == "clip"
    encoders.mkdir(parents=True, exist_ok=True)
    legacy.mkdir(parents=True, exist_ok=True)
    for kind, config in spec.text_configs.items():
        for name, dtype in STORED.items():
            stored = legacy / f"{kind}_{name}.safetensors"
            write_random_text_encoder(stored, kind, config, dtype, seed=4)
            # the same values widened to fp32, in models/text_encoders
            save_file({k: v.float() for k, v in load_file(stored).items()}, encoders / f"{kind}_{name}_fp32.safetensors")
    h.registry.register("TestCapture", Capture)
    yield h
    h.close()


@pytest.fixture
def harness(files_harness):
    services.install(files_harness.services)
    files_harness.engine.clear_cache()
    yield files_harness
    services.install(None)


def triple(suffix: str) -> dict:
    prompt = txt2img()
    prompt["21"] = {"class_type": "TripleCLIPLoader", "inputs": {
        f"clip_name{i}": f"{kind}_{suffix}.safetensors" for i, kind in enumerate(("clip_l", "clip_g", "t5xxl"), 1)}}
    for node in ("6", "7"):
        prompt[node]["inputs"]["clip"] = ["21", 0]
    return prompt


@pytest.mark.parametrize("stored", list(STORED))
def test_standalone_files_from_models_clip_give_the_conditioning_of_their_fp32_values(harness, stored):
    tensor, options = captured(harness, triple(stored), ["6", 0])[0]
    harness.engine.clear_cache()
    want, want_options = captured(harness, triple(f"{stored}_fp32"), ["6", 0])[0]
    assert tensor.shape == (1, 154, 64) and tensor.abs().sum() > 0
    torch.testing.assert_close(tensor, want, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(options["pooled_output"], want_options["pooled_output"], atol=1e-5, rtol=1e-5)


def test_cached_conditioning_runs_no_t5(harness, monkeypatch):
    calls = []
    forward = t5_module.T5EncoderModel.forward

    def counted(self, ids, dtype):
        calls.append(ids.shape)
        return forward(self, ids, dtype)
    monkeypatch.setattr(t5_module.T5EncoderModel, "forward", counted)
    prompt = txt2img()
    assert harness.run(prompt).status == "success"
    first = len(calls)
    assert first >= 2                                       # the positive and the empty prompt
    prompt["3"]["inputs"]["seed"] = 99                      # only the sampler's input changes
    assert harness.run(prompt).status == "success"
    assert len(calls) == first
    prompt["6"]["inputs"]["text"] = "a (green:1.1) dog"     # a new positive: T5 runs for it alone
    assert harness.run(prompt).status == "success"
    assert 0 < len(calls) - first < first
