"""Weights of modules that cast per use (T5-XXL's fp8 weights) go onto the device as stored: never one
bf16/fp32 copy of the whole tower (the full-size SD3 medium all-in-one file was killed for out of memory
when model management cast its 4.9 GB of fp8 T5 to 19.6 GB of fp32 on load); on the CPU their file pages
are dropped while other models compute."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from diffusion import conditioning, loading
from model_management import MemorySettings, ModelHandle, ModelManager, VramMode
from model_management.weights import ModuleWeights
from models.files import model_file_ranges
from models.testing import tiny_sd3_spec, write_random_sd3_checkpoint

FP8 = torch.float8_e4m3fn


class PerUse(nn.Module):
    CASTS_WEIGHTS_PER_USE = True

    def __init__(self):
        super().__init__()
        self.a = nn.Linear(4, 4, bias=False)
        self.b = nn.Linear(4, 4, bias=False)
        self.a.weight.data = self.a.weight.data.to(FP8)
        self.b.weight.data = self.b.weight.data.double()       # wider than any compute dtype


class Stack(nn.Module):
    def __init__(self):
        super().__init__()
        self.kept = PerUse()
        self.plain = nn.Linear(4, 4, bias=False)
        self.plain.weight.data = self.plain.weight.data.to(FP8)


def test_device_dtype_keeps_only_what_casts_per_use_and_is_no_wider():
    w = ModuleWeights(Stack())
    assert w.cast_per_use == {"kept.a.weight", "kept.b.weight"}
    assert w.device_dtype("kept.a.weight", torch.bfloat16) == FP8
    assert w.device_dtype("kept.b.weight", torch.bfloat16) == torch.bfloat16
    assert w.device_dtype("plain.weight", torch.float32) == torch.float32
    assert w.device_dtype("kept.a.weight", None) == FP8
    assert w.nbytes("kept.a.weight", torch.float32) == 16
    assert w.nbytes("plain.weight", torch.float32) == 64


@pytest.fixture(scope="module")
def sd3_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("sd3") / "tiny-sd3.safetensors"
    return write_random_sd3_checkpoint(path, tiny_sd3_spec(t5_dtype=FP8))


def t5_of(clip) -> nn.Module:
    return clip.module.towers["t5xxl"].model


@pytest.mark.parametrize("settings", [MemorySettings(), MemorySettings(vram_mode=VramMode.NO, vram_budget_bytes=64 * 2**20)],
                         ids=["cpu", "novram"])
def test_fp8_t5_is_not_copied_when_loaded(sd3_file, settings):
    manager = ModelManager(settings)
    _, clip, _ = loading.load_checkpoint_file(sd3_file, manager)
    t5 = t5_of(clip)
    before = {id(m): w.data_ptr() for m, w in ((m, m.weight) for m in t5.modules() if isinstance(m, nn.Linear))}
    assert {m.weight.dtype for m in t5.modules() if isinstance(m, nn.Linear)} == {FP8}
    manager.load_models_for([clip])                   # streaming hooks (novram) first, the spies after them
    seen = []
    hooks = [m.register_forward_pre_hook(lambda m, a: seen.append((id(m), m.weight.dtype, m.weight.data_ptr())))
             for m in t5.modules() if isinstance(m, nn.Linear)]
    try:
        cond = conditioning.encode_text(clip, "a cat")
    finally:
        for hook in hooks:
            hook.remove()
    assert torch.isfinite(cond[0][0]).all()
    # every linear of T5 computed from its fp8 weight itself: the file view, no copy (streamed or resident)
    assert seen and all(dtype == FP8 for _, dtype, _ in seen)
    if settings.vram_mode is not VramMode.NO:
        assert all(ptr == before[n] for n, _, ptr in seen)
    record = manager.record_of(clip)
    fp8_bytes = sum(m.weight.numel() for m in t5.modules() if isinstance(m, nn.Linear))
    fp32_rest = sum(manager.record_of(clip).weights.nbytes(k, torch.float32)
                    for k in record.weights.keys() if k not in record.weights.cast_per_use)
    fp8_keys = [k for k in record.weights.cast_per_use if record.weights.home[k].dtype == FP8]
    assert sum(record.weights.nbytes(k, record.dtype) for k in fp8_keys) >= fp8_bytes
    assert record.device_bytes < fp32_rest + 2 * sum(record.weights.home[k].numel() for k in record.weights.cast_per_use)


def test_fp8_t5_gives_the_same_conditioning_resident_and_streamed(sd3_file):
    out = []
    for settings in (MemorySettings(), MemorySettings(vram_mode=VramMode.NO, vram_budget_bytes=64 * 2**20)):
        manager = ModelManager(settings)
        _, clip, _ = loading.load_checkpoint_file(sd3_file, manager)
        out.append(conditioning.encode_text(clip, "a (red:1.2) cat")[0][0])
    assert torch.equal(out[0], out[1])


def test_patched_fp8_weight_is_held_in_the_compute_dtype(sd3_file):
    manager = ModelManager(MemorySettings())
    _, clip, _ = loading.load_checkpoint_file(sd3_file, manager)
    key = next(k for k in manager.record_of(clip).weights.cast_per_use if k.endswith("SelfAttention.q.weight"))
    patched = clip.clone()
    patched.add_patches({key: lambda w: w + 1.0})
    manager.load_models_for([patched])
    current = manager.record_of(patched).weights.current(key)
    home = manager.record_of(patched).weights.home[key]
    assert current.dtype == manager.record_of(patched).dtype
    assert torch.equal(current, (home.float() + 1.0).to(current.dtype))
    manager.unload(patched)
    assert manager.record_of(clip).weights.current(key).dtype == FP8


def _held_bytes(manager, handle) -> int:
    record = manager.record_of(handle)
    return sum(record.weights.current(k).numel() * record.weights.current(k).element_size()
               for k in record.resident_keys)


def test_the_ledger_counts_a_patched_fp8_weight_at_the_size_it_is_held(sd3_file):
    """A patched fp8 weight is held in the compute dtype (above): the device ledger, the record's resident
    and device sizes and the units the planner streams count it so, not at its fp8 size."""
    manager = ModelManager(MemorySettings())
    _, clip, _ = loading.load_checkpoint_file(sd3_file, manager)
    manager.load_models_for([clip])
    plain = manager.ledger.bytes
    assert plain == _held_bytes(manager, clip)
    record = manager.record_of(clip)
    keys = [k for k in record.weights.cast_per_use if k.endswith("SelfAttention.q.weight")]
    patched = clip.clone()
    patched.add_patches({k: (lambda w: w + 1.0) for k in keys})
    manager.load_models_for([patched])
    wider = sum(record.weights.home[k].numel() for k in keys) * (record.dtype.itemsize - 1)
    assert manager.ledger.bytes == _held_bytes(manager, patched) == plain + wider
    assert record.resident_bytes == manager.ledger.bytes
    assert record.device_bytes == sum(u.nbytes for u in record.units) == plain + wider
    manager.unload(patched)
    assert manager.ledger.bytes == 0
    manager.load_models_for([clip])                    # back to the unpatched sizes
    assert manager.ledger.bytes == plain and record.device_bytes == plain


def test_a_patched_scaled_weight_is_counted_in_the_compute_dtype():
    from models.fp8_weights import ScaledFp8Linear
    layer = nn.Linear(8, 4, bias=False)
    layer.weight.data = layer.weight.data.to(FP8)
    ScaledFp8Linear.convert(layer, torch.tensor(0.5))
    w = ModuleWeights(nn.Sequential(layer))
    assert w.scales == {"0.weight": "0.scale_weight"}
    assert w.nbytes("0.weight", None) == 32
    assert w.nbytes("0.weight", None, patched=True) == 32 * 4          # the true value, float32
    assert w.nbytes("0.weight", torch.bfloat16, patched=True) == 32 * 2
    assert w.widened_by(["0.weight", "0.scale_weight"]) == {"0.weight"}


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/status and maps")
def test_t5_file_pages_are_released_while_the_diffusion_model_computes(sd3_file):
    manager = ModelManager(MemorySettings())
    model, clip, _ = loading.load_checkpoint_file(sd3_file, manager)
    conditioning.encode_text(clip, "a cat")
    released = []
    weights = manager.record_of(clip).weights
    original = weights.page_releaser
    weights.page_releaser = lambda tensors: released.append(original(tensors)) or released[-1]
    manager.load_models_for([model])
    manager.load_models_for([model])                  # once per idle period, not per call
    t5_bytes = sum(weights.home[k].numel() for k in weights.cast_per_use if weights.home[k].dtype == FP8)
    assert len(released) == 1 and released[0] >= t5_bytes
    assert any(r.contains(weights.home[next(iter(weights.cast_per_use))]) for r in model_file_ranges().values())
    manager.load_models_for([clip])
    manager.load_models_for([model])
    assert len(released) == 2
    again = conditioning.encode_text(clip, "a cat")   # pages read back from the file: same result
    assert torch.isfinite(again[0][0]).all()


# --- CLIP-L / CLIP-G of an fp16 SD3 file: kept fp16, cast per use (models/text/encoder.py load_text_encoder) ---

@pytest.fixture(scope="module")
def sd3_fp16_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("sd3fp16") / "tiny-sd3-fp16.safetensors"
    return write_random_sd3_checkpoint(path, tiny_sd3_spec(dtype=torch.float16, t5_dtype=FP8))


def test_fp16_clip_towers_stay_fp16_file_views_and_compute_in_fp32(sd3_fp16_file):
    manager = ModelManager(MemorySettings())
    _, clip, _ = loading.load_checkpoint_file(sd3_fp16_file, manager)
    manager.load_models_for([clip])
    record = manager.record_of(clip)
    assert record.dtype == torch.float32                                  # the CPU's text-encoder dtype
    ranges = list(model_file_ranges().values())
    for kind in ("clip_l", "clip_g"):
        tower = clip.module.towers[kind]
        assert tower.model.CASTS_WEIGHTS_PER_USE and tower.dtype == torch.float32
        weights = [p for p in tower.parameters() if p.is_floating_point()]
        assert {p.dtype for p in weights} == {torch.float16}
        assert all(any(r.contains(p.data) for r in ranges) for p in weights)    # views of the mapped file
        keys = [k for k in record.weights.keys() if k.startswith(f"towers.{kind}.")]
        assert keys and all(k in record.weights.cast_per_use for k in keys)
        assert all(record.weights.nbytes(k, torch.float32) == record.weights.home[k].numel() * 2 for k in keys)


def test_clip_cast_per_use_gives_the_values_of_an_fp32_copy(sd3_fp16_file):
    from models.files import load_state_dict
    from models.text import CLIP_L_PENULTIMATE, load_text_encoder
    with load_state_dict(sd3_fp16_file) as source:
        for kind, behaviour in (("clip_l", CLIP_L_PENULTIMATE), ("clip_g", {})):
            prefix = f"text_encoders.{kind}.transformer."
            state = {k[len(prefix):]: source[k] for k in source if k.startswith(prefix)}
            kept = load_text_encoder(kind, state, dtype=torch.float32, **behaviour)
            copied = load_text_encoder(kind, {k: v.float() for k, v in state.items()}, dtype=torch.float32,
                                       **behaviour)
            assert kept.model.token_embedding.weight.dtype == torch.float16
            assert copied.model.token_embedding.weight.dtype == torch.float32
            a, b = kept.encode("a (red:1.3) cat"), copied.encode("a (red:1.3) cat")
            assert a[0].dtype == torch.float32
            torch.testing.assert_close(a[0], b[0], rtol=0, atol=1e-6)
            torch.testing.assert_close(a[1], b[1], rtol=0, atol=1e-6)
