"""--compile-unet (diffusion/compile.py) on the tiny random-weight SD1.5 checkpoint through the real loader:
compiled sampling equals eager, weights changed through a handle are followed without a recompile,
streaming and failed compiles run eager, a background compile does not hold up the first call and is
swapped in when ready. One test compiles with inductor (tens of seconds on a CPU); the behavioural ones use
dynamo's "aot_eager" backend (same tracing and guards, no code generation). `BLOCKING` tests run the
compile on the sampling thread, so that its counts are final when the sampler returns."""
from __future__ import annotations

import logging

import pytest
import torch
import torch._dynamo

from diffusion import conditioning, ksampler, loading
from diffusion.compile import BACKEND_OPTION, COMPILING_MESSAGE, CompiledForward
from model_management import MemorySettings, ModelManager, Placement, VramMode

SAMPLE_ARGS = {"seed": 5, "steps": 2, "cfg": 5.0, "sampler_name": "euler", "scheduler": "normal"}
PATCHED_KEYS = ("input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight", "middle_block.0.in_layers.2.weight",
                "out.2.bias")


@pytest.fixture(autouse=True)
def _fresh_dynamo():
    """Compiled code is cached per code object for the whole process: each test starts without any."""
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


BLOCKING = {"compile_diffusion_model": True, "compile_in_background": False}


def load(path, **settings):
    manager = ModelManager(MemorySettings(force_fp32=True, **settings))
    model, clip, _ = loading.load_checkpoint_file(path, manager)
    return model, clip


def with_backend(model, backend: str):
    twin = model.clone()
    twin.options[BACKEND_OPTION] = backend
    return twin


def sample(model, clip, **overrides) -> torch.Tensor:
    positive, negative = conditioning.encode_text(clip, "a cat"), conditioning.encode_text(clip, "a dog")
    latent = {"samples": torch.zeros(1, 4, 8, 8)}
    return ksampler.ksample(model, latent, positive, negative, **{**SAMPLE_ARGS, **overrides})["samples"]


def patch(model):
    """A clone with three weights changed: a cross-attention projection, a conv and the output bias."""
    twin = model.clone()
    twin.add_patches({PATCHED_KEYS[0]: lambda w: w * 1.5, PATCHED_KEYS[1]: lambda w: w - 0.02,
                      PATCHED_KEYS[2]: lambda w: w + 0.5})
    return twin


@pytest.fixture
def eager(tiny_sd15):
    """The eager reference on plain weights: a compiled forward reads them as they are, while an eager run
    would pack patched convolutions (diffusion/prepacking.py), whose kernel sums in another order."""
    return load(tiny_sd15, prepack_weights=False)


def test_inductor_compiled_sampling_equals_eager(tiny_sd15, eager, caplog):
    model, clip = load(tiny_sd15, **BLOCKING)
    with caplog.at_level(logging.INFO, logger="plexus.diffusion"):
        compiled = sample(model, clip)
    forward = CompiledForward.of(model.module)
    assert forward.backend == "inductor" and not forward.is_failed
    assert forward.compiles == 1 and forward.compile_s > 0
    assert COMPILING_MESSAGE in caplog.text and "compiled the diffusion model in" in caplog.text
    # one forward agrees to fp32 rounding (inductor fuses and reorders: about 2e-6 measured) ...
    g = torch.Generator().manual_seed(3)
    with torch.inference_mode():      # as in sampling: inputs made outside it would fail a guard and recompile
        x, t = torch.randn(2, 4, 8, 8, generator=g), torch.tensor([999.0, 20.0])
        context = torch.randn(2, 77, 32, generator=g)
        torch.testing.assert_close(forward(x, t, context), model.module(x, t, context), atol=1e-5, rtol=1e-5)
    assert forward.compiles == 1, "the sampling run compiled this signature already"
    # ... and two Euler steps from sigma 14.6 at cfg 5 scale those differences by about 1e3
    torch.testing.assert_close(compiled, sample(*eager), atol=5e-3, rtol=1e-3)


def test_compiled_forward_follows_weights_patched_through_a_handle(tiny_sd15, eager):
    model, clip = load(tiny_sd15, **BLOCKING)
    model = with_backend(model, "aot_eager")
    eager_model, eager_clip = eager
    base = sample(model, clip)
    patched = sample(patch(model), clip)
    back = sample(model, clip)

    torch.testing.assert_close(base, sample(eager_model, eager_clip), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(patched, sample(patch(eager_model), eager_clip), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(back, base, atol=1e-6, rtol=1e-6)
    assert (patched - base).abs().max() > 1e-2
    forward = CompiledForward.of(model.module, "aot_eager")
    assert forward.compiles == 1, "swapping weights in their slots must not recompile"


def test_new_latent_size_compiles_once_more(tiny_sd15):
    model, clip = load(tiny_sd15, **BLOCKING)
    model = with_backend(model, "aot_eager")
    positive = conditioning.encode_text(clip, "a cat")
    for size in (8, 16, 8):
        ksampler.ksample(model, {"samples": torch.zeros(1, 4, size, size)}, positive, positive,
                         **{**SAMPLE_ARGS, "steps": 1})
    assert CompiledForward.of(model.module, "aot_eager").compiles == 2


def test_streamed_model_runs_eager(tiny_sd15, eager, caplog):
    model, clip = load(tiny_sd15, **BLOCKING, vram_mode=VramMode.NO,
                       vram_budget_bytes=1 << 30)
    model = with_backend(model, "aot_eager")
    with caplog.at_level(logging.INFO, logger="plexus.diffusion"):
        streamed = sample(model, clip)
    assert model.manager.record_of(model).placement is Placement.PARTIAL
    assert "streamed (partial load): running it eager" in caplog.text
    assert "_plexus_compiled" not in model.module.__dict__
    torch.testing.assert_close(streamed, sample(*eager), atol=1e-5, rtol=1e-5)


@torch._dynamo.register_backend
def _fails_like_a_missing_compiler(graph, example_inputs):
    raise RuntimeError("no working C++ compiler found")


@pytest.mark.parametrize("backend", ["no_such_backend", "_fails_like_a_missing_compiler"])
def test_failed_compile_falls_back_to_eager(tiny_sd15, eager, caplog, backend):
    model, clip = load(tiny_sd15, **BLOCKING)
    model = with_backend(model, backend)
    with caplog.at_level(logging.WARNING, logger="plexus.diffusion"):
        out = sample(model, clip)
        again = sample(model, clip)
    forward = CompiledForward.of(model.module, backend)
    assert forward.is_failed and forward.compiles == 0
    assert caplog.text.count("compiling the diffusion model failed") == 1
    torch.testing.assert_close(out, sample(*eager), atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(again, out)


def test_without_the_setting_nothing_is_compiled(tiny_sd15):
    model, clip = load(tiny_sd15)
    sample(model, clip)
    assert "_plexus_compiled" not in model.module.__dict__


def test_an_error_of_the_inputs_is_raised_and_compiling_stays_on(tiny_sd15):
    model, _ = load(tiny_sd15, **BLOCKING)
    forward = CompiledForward.of(model.module, "aot_eager")
    with torch.inference_mode(), pytest.raises(RuntimeError):
        forward(torch.zeros(1, 4, 8, 8), torch.tensor([10.0]), torch.zeros(1, 77, 7))    # context must be 32 wide
    assert forward.wait(120)             # the background compile of that call fails, and so does its eager run
    assert not forward.is_failed


def test_torch_compile_model_node_compiles_without_the_setting(tiny_sd15, eager):
    from nodes.builtin.step_cache import TorchCompileModel

    model, clip = load(tiny_sd15, compile_in_background=False)
    (compiled,) = TorchCompileModel().run(model, "cudagraphs")
    assert "_plexus_compiled" not in model.module.__dict__
    out = sample(compiled, clip)
    forward = CompiledForward.of(model.module, "cudagraphs")
    assert forward.compiles + int(forward.is_failed) >= 1          # compiled, or tried and fell back to eager
    torch.testing.assert_close(out, sample(*eager), atol=1e-4, rtol=1e-4)
    assert BACKEND_OPTION not in model.options                       # the node clones
