"""Out of memory is recovered by the fall-back chain; an induced OOM stands in for a full GPU."""
from __future__ import annotations

import pytest
import torch

from model_management import (SAMPLING_FALLBACKS, Fallback, MemorySettings, ModelHandle, ModelManager,
                              OutOfMemoryAfterFallbacks, is_out_of_memory, with_oom_fallbacks)
from tests.model_management.toys import ToyTextEncoder, ToyUNet, ToyVAEDecoder, make, txt2img

PER_SAMPLE_BYTES = 100_000      # the simulated activations of one batch element


def rig(budget: int, threshold: int):
    """A manager with a simulated device of `budget` bytes, and a UNet whose forward raises torch's OOM
    error when resident weights plus simulated activations exceed `threshold`."""
    manager = ModelManager(MemorySettings(device="cpu", vram_budget_bytes=budget))
    unet = make(ToyUNet, 0)
    attempts: list[int] = []

    def pretend_allocation(module, args):
        used = manager.ledger.bytes + args[0].shape[0] * PER_SAMPLE_BYTES
        attempts.append(used)
        if used > threshold:
            raise torch.OutOfMemoryError(f"CUDA out of memory. Tried to allocate {used} bytes (simulated)")

    unet.register_forward_pre_hook(pretend_allocation)
    handles = (ModelHandle(unet), ModelHandle(make(ToyTextEncoder, 1)), ModelHandle(make(ToyVAEDecoder, 2)))
    return manager, handles, attempts


def reference() -> torch.Tensor:
    return txt2img(ModelManager(MemorySettings(device="cpu")), ModelHandle(make(ToyUNet, 0)),
                   ModelHandle(make(ToyTextEncoder, 1)), ModelHandle(make(ToyVAEDecoder, 2)))


def run_with_fallbacks(manager, handles):
    tried: list[dict] = []

    def attempt(options: dict) -> torch.Tensor:
        tried.append(options)
        return txt2img(manager, *handles, options=options)

    image = with_oom_fallbacks(attempt, SAMPLING_FALLBACKS, free=manager.free, what="KSampler #3")
    return image, tried


@pytest.mark.parametrize("threshold, budget, attempts_needed, last_option", [
    (480_000, 1_000_000, 3, ("is_cfg_split", True)),          # batch split is enough
    (400_000, 500_000, 4, ("vram_mode", "lowvram")),          # half the weights resident
    (250_000, 1_000_000, 5, ("vram_mode", "novram")),         # everything streamed
])
def test_an_induced_oom_is_recovered_by_the_fallback_chain(threshold, budget, attempts_needed,
                                                           last_option) -> None:
    manager, handles, attempts = rig(budget, threshold)
    image, tried = run_with_fallbacks(manager, handles)
    assert len(tried) == attempts_needed
    key, value = last_option
    assert getattr(tried[-1][key], "value", tried[-1][key]) == value
    assert torch.allclose(image, reference(), atol=1e-5)
    assert max(attempts[-4:]) <= threshold and manager.ledger.peak_bytes <= budget


def test_when_everything_fails_the_error_lists_what_was_tried() -> None:
    manager, handles, _ = rig(1_000_000, 50_000)
    with pytest.raises(OutOfMemoryAfterFallbacks) as caught:
        run_with_fallbacks(manager, handles)
    error = caught.value
    assert error.tried == ["as requested"] + [f.name for f in SAMPLING_FALLBACKS]
    assert "KSampler #3 ran out of memory" in str(error) and "novram" in str(error)
    assert "freeing cached models" in error.details and "simulated" in error.details
    assert error.to_json()["type"] == "out_of_memory"
    assert manager.ledger.bytes >= 0


def test_other_errors_are_not_retried_and_free_runs_between_attempts() -> None:
    calls, frees = [], []

    def broken(options):
        calls.append(options)
        raise ValueError("not a memory problem")

    with pytest.raises(ValueError):
        with_oom_fallbacks(broken, [Fallback("x", {"a": 1})], free=lambda: frees.append(1))
    assert len(calls) == 1 and frees == []

    def second_time_lucky(options):
        calls.append(options)
        if len(calls) < 3:
            raise RuntimeError("MPS backend out of memory (MPS allocated: 1 GB)")
        return options

    result = with_oom_fallbacks(second_time_lucky, [Fallback("x", {"a": 1})], free=lambda: frees.append(1))
    assert result == {"a": 1}
    assert frees == [1]
    assert is_out_of_memory(torch.OutOfMemoryError("x"))
    assert not is_out_of_memory(RuntimeError("shape mismatch"))
