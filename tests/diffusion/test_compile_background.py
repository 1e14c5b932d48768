"""--compile-unet's background compile (diffusion/compile.py) on the tiny random-weight SD1.5 checkpoint:
the first call of a new signature returns the eager output without waiting for its compile, the compiled
forward is swapped in when ready and follows weights patched between prompts, a failing compile leaves
that signature eager with a warning, and the persistent cache folder is what inductor is pointed at.
The gate backend below blocks inside the compile until the test opens it: a call that returned while the
gate was shut did not wait for the compile."""
from __future__ import annotations

import logging
import os
import threading

import pytest
import torch
import torch._dynamo

from diffusion import compile as compile_module
from diffusion.compile import BACKEND_OPTION, CACHE_ENV, CompiledForward, use_cache_dir
from tests.diffusion.test_compile import load, patch, sample

ENTERED, GATE = threading.Event(), threading.Event()


@torch._dynamo.register_backend
def _gated_aot_eager(graph, example_inputs):
    """aot_eager, once the test opens GATE (ENTERED says the compile has begun)."""
    from torch._dynamo.backends.registry import lookup_backend

    ENTERED.set()
    assert GATE.wait(120), "the test never opened the gate"
    return lookup_backend("aot_eager")(graph, example_inputs)


@torch._dynamo.register_backend
def _always_fails(graph, example_inputs):
    raise RuntimeError("no working C++ compiler found")


@pytest.fixture(autouse=True)
def _fresh_dynamo():
    torch._dynamo.reset()
    ENTERED.clear()
    GATE.clear()
    yield
    GATE.set()
    torch._dynamo.reset()


def inputs(batch: int = 2, size: int = 8, seed: int = 3):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(batch, 4, size, size, generator=g), torch.tensor([999.0, 20.0][:batch] * (batch // 2 or 1)),
            torch.randn(batch, 77, 32, generator=g))


def test_first_call_runs_eager_while_the_compile_waits_then_the_compiled_forward_is_used(tiny_sd15, caplog):
    model, _ = load(tiny_sd15)
    forward = CompiledForward.of(model.module, "_gated_aot_eager")
    with torch.inference_mode():
        x, t, context = inputs()
        expected = model.module(x, t, context)
        with caplog.at_level(logging.INFO, logger="plexus.diffusion"):
            first = forward(x, t, context)                       # returns while the compile is held at the gate
            assert ENTERED.wait(60) and not GATE.is_set()
            assert not forward.is_ready(x, context) and forward.compiled_calls == 0
            second = forward(x, t, context)                      # still eager, and no second job
            GATE.set()
            assert forward.wait(120)
        assert forward.is_ready(x, context) and forward.compiles == 1 and not forward.is_failed
        third = forward(x, t, context)
    assert forward.compiled_calls == 1
    torch.testing.assert_close(first, expected, atol=0, rtol=0)
    torch.testing.assert_close(second, expected, atol=0, rtol=0)
    torch.testing.assert_close(third, expected, atol=1e-5, rtol=1e-5)
    assert caplog.text.count("compiling the diffusion model in the background") == 1
    assert "in the background; the next steps run compiled" in caplog.text


def test_sampling_with_a_background_compile_equals_eager_and_follows_lora_patches(tiny_sd15):
    model, clip = load(tiny_sd15, compile_diffusion_model=True)
    eager_model, eager_clip = load(tiny_sd15, prepack_weights=False)
    twin = model.clone()
    twin.options[BACKEND_OPTION] = "aot_eager"
    first = sample(twin, clip)                     # its steps run eager while the signature compiles
    forward = CompiledForward.of(model.module, "aot_eager")
    assert forward.background and forward.wait(120) and forward.compiles >= 1
    calls_before = forward.compiled_calls
    base = sample(twin, clip)
    patched = sample(patch(twin), clip)            # weights swapped in their slots between prompts
    back = sample(twin, clip)
    assert forward.compiled_calls - calls_before == 3 * 2, "each step (one batch-2 call) of 3 prompts ran compiled"
    assert forward.compiles == 1, "one signature (batch 2 at 8x8), compiled once, LoRA changes included"
    reference = sample(eager_model, eager_clip)
    torch.testing.assert_close(first, reference, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(base, reference, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(patched, sample(patch(eager_model), eager_clip), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(back, base, atol=1e-6, rtol=1e-6)
    assert (patched - base).abs().max() > 1e-2


def test_a_failing_background_compile_warns_once_and_that_signature_stays_eager(tiny_sd15, caplog):
    model, _ = load(tiny_sd15)
    forward = CompiledForward.of(model.module, "_always_fails")
    with torch.inference_mode(), caplog.at_level(logging.WARNING, logger="plexus.diffusion"):
        x, t, context = inputs()
        first = forward(x, t, context)
        assert forward.wait(120)
        again = forward(x, t, context)
        assert forward.wait(120)
        expected = model.module(x, t, context)
    assert forward.is_failed and "no working C++ compiler found" in forward.error
    assert forward.compiles == 0 and forward.compiled_calls == 0
    assert caplog.text.count("compiling the diffusion model failed") == 1
    torch.testing.assert_close(first, expected, atol=0, rtol=0)
    torch.testing.assert_close(again, expected, atol=0, rtol=0)


def test_a_guard_miss_runs_eager_and_recompiles_in_the_background(tiny_sd15, caplog):
    model, _ = load(tiny_sd15)
    forward = CompiledForward.of(model.module, "aot_eager")
    with torch.inference_mode():
        x, t, context = inputs()
        forward(x, t, context)
        assert forward.wait(120) and forward.compiles == 1
    weight = model.module.out[2].weight
    with torch.inference_mode():         # a weight made under inference mode fails a guard (dispatch keys)
        weight.data = weight.data * 1.0
        with caplog.at_level(logging.INFO, logger="plexus.diffusion"):
            missed = forward(x, t, context)
        assert "guards failed" in caplog.text and forward.compiled_calls == 0
        assert forward.wait(120) and forward.compiles == 2
        hit = forward(x, t, context)
        expected = model.module(x, t, context)
    assert forward.compiled_calls == 1
    torch.testing.assert_close(missed, expected, atol=0, rtol=0)
    torch.testing.assert_close(hit, expected, atol=1e-5, rtol=1e-5)


def test_the_worker_thread_is_a_daemon(tiny_sd15):
    model, _ = load(tiny_sd15)
    forward = CompiledForward.of(model.module, "aot_eager")
    with torch.inference_mode():
        forward(*inputs())
    assert forward.wait(120)
    assert compile_module._WORKER and compile_module._WORKER[0].daemon


def test_the_cache_folder_is_set_before_compiling_unless_the_environment_names_one(tmp_path, monkeypatch):
    monkeypatch.delenv(CACHE_ENV, raising=False)
    folder = tmp_path / "cache" / "compile"
    assert use_cache_dir(folder) == str(folder)
    assert folder.is_dir() and os.environ[CACHE_ENV] == str(folder)
    from torch._inductor.runtime.cache_dir_utils import cache_dir
    assert cache_dir() == str(folder), "inductor reads the folder when it compiles, not at import"
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "theirs"))
    assert use_cache_dir(folder) == str(tmp_path / "theirs")


def test_sampling_points_inductor_at_the_configured_cache_folder(tiny_sd15, tmp_path, monkeypatch):
    monkeypatch.delenv(CACHE_ENV, raising=False)
    folder = tmp_path / "plexus-compile-cache"
    model, clip = load(tiny_sd15, compile_diffusion_model=True, compile_cache_dir=str(folder))
    twin = model.clone()
    twin.options[BACKEND_OPTION] = "aot_eager"
    sample(twin, clip, steps=1)
    assert CompiledForward.of(model.module, "aot_eager").wait(120)
    assert os.environ[CACHE_ENV] == str(folder) and folder.is_dir()


EXITING_SCRIPT = """
import sys, threading, time, torch, torch._dynamo
sys.path.insert(0, {root!r})
from diffusion.compile import CompiledForward

@torch._dynamo.register_backend
def _never_finishes(graph, example_inputs):
    threading.Event().wait()

class Tiny(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.linear = torch.nn.Linear(4, 4)

    def forward(self, x, timesteps, context):
        return self.linear(x) + context.mean()

forward = CompiledForward(Tiny(), backend="_never_finishes")
with torch.inference_mode():
    forward(torch.zeros(2, 4), torch.zeros(2), torch.zeros(2, 1, 4))
time.sleep(0.5)
print("exiting with a compile in flight")
"""


def test_a_compile_in_flight_does_not_keep_the_process_alive():
    import subprocess
    import sys
    from pathlib import Path

    root = str(Path(__file__).resolve().parents[2])
    script = EXITING_SCRIPT.format(root=root)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "exiting with a compile in flight" in done.stdout
