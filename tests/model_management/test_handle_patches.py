"""Copy-on-write patches on handles: applied on the device, removed exactly, private to each clone."""
from __future__ import annotations

import torch
from torch import nn

from model_management import MemorySettings, ModelHandle, ModelManager, VramMode, WeightPatch, apply_patches
from tests.model_management.toys import ToyUNet, make


def snapshot(module: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def assert_bit_identical(module: nn.Module, reference: dict[str, torch.Tensor]) -> None:
    state = module.state_dict()
    assert state.keys() == reference.keys()
    for key, value in reference.items():
        assert torch.equal(state[key], value) and state[key].dtype == value.dtype, key


def linear_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 2)).eval()


def test_a_patch_applies_on_load_and_the_base_is_bit_identical_after_unload() -> None:
    module = linear_model()
    base = snapshot(module)
    homes = {k: v.data_ptr() for k, v in module.state_dict().items()}
    manager = ModelManager(MemorySettings())
    handle = ModelHandle(module).clone()
    assert handle.add_patches({"0.weight": lambda w: w + 1.0, "missing.weight": lambda w: w}) == ["0.weight"]
    assert_bit_identical(module, base)                     # recording a patch changes nothing yet

    manager.load_models_for([handle])
    assert torch.equal(module[0].weight, base["0.weight"] + 1.0)
    assert torch.equal(module[1].weight, base["1.weight"])

    manager.unload(handle)
    assert_bit_identical(module, base)
    assert {k: v.data_ptr() for k, v in module.state_dict().items()} == homes   # the very same tensors


def test_patches_merge_in_fp32_with_strength_and_cast_back() -> None:
    weight = torch.randn(3, 3).to(torch.float16)
    seen = []

    def double(w: torch.Tensor) -> torch.Tensor:
        seen.append(w.dtype)
        return w * 2.0

    full = apply_patches(weight, (WeightPatch(double, 1.0),))
    half = apply_patches(weight, (WeightPatch(double, 0.5),))
    assert seen == [torch.float32, torch.float32]
    assert full.dtype is torch.float16 and torch.equal(full, (weight.float() * 2).half())
    assert torch.equal(half, (weight.float() * 1.5).half())
    stacked = apply_patches(weight, (WeightPatch(double), WeightPatch(lambda w: w + 1)))
    assert torch.equal(stacked, (weight.float() * 2 + 1).half())       # in order, each on the last result


def test_an_in_place_patch_never_writes_to_the_base() -> None:
    weight = torch.randn(2, 2)
    before = weight.clone()
    apply_patches(weight, (WeightPatch(lambda w: w.add_(5.0)),))
    assert torch.equal(weight, before)


def test_two_handles_over_one_module_do_not_see_each_others_patches() -> None:
    module = linear_model()
    base = snapshot(module)
    x = torch.randn(3, 4)
    with torch.no_grad():
        expected_base = module(x)
    manager = ModelManager(MemorySettings())
    plain = ModelHandle(module)
    lora_a, lora_b = plain.clone(), plain.clone()
    lora_a.add_patches({"0.weight": lambda w: w + 0.25}, source="a.safetensors")
    lora_b.add_patches({"1.bias": lambda w: w - 3.0}, source="b.safetensors")
    assert plain.patches == {} and set(lora_a.patches) == {"0.weight"} and set(lora_b.patches) == {"1.bias"}
    assert lora_a.is_clone_of(lora_b)

    with torch.no_grad():
        manager.load_models_for([lora_a])
        out_a = module(x)
        manager.load_models_for([lora_b])
        out_b = module(x)
        assert torch.equal(module[0].weight, base["0.weight"])          # a's patch is gone
        manager.load_models_for([plain])
        out_plain = module(x)
        manager.load_models_for([lora_a])
        out_a_again = module(x)

    assert torch.equal(out_plain, expected_base)
    assert not torch.allclose(out_a, expected_base) and not torch.allclose(out_b, expected_base)
    assert torch.equal(out_a, out_a_again)
    manager.free()
    assert_bit_identical(module, base)
    assert len(manager.report()["models"]) == 1                        # one record for the shared module


def test_streamed_layers_get_their_patches_on_the_fly() -> None:
    x = torch.randn(1, 4, 8, 8)
    sigma, context = torch.full((1,), 3.0), torch.randn(1, 4, 16)
    unet = make(ToyUNet, 0)
    base = snapshot(unet)
    patches = {"output_blocks.2.conv.weight": lambda w: w * 0.5, "input_blocks.0.to_q.weight": lambda w: -w}

    full_manager = ModelManager(MemorySettings())
    full = ModelHandle(unet).clone()
    full.add_patches(patches)
    with torch.no_grad():
        full_manager.load_models_for([full])
        expected = unet(x, sigma, context)
        full_manager.free()

    streamed_manager = ModelManager(MemorySettings(vram_mode=VramMode.NO, vram_budget_bytes=200_000))
    handle = ModelHandle(unet).clone()
    handle.add_patches(patches)
    with torch.no_grad():
        record = streamed_manager.load_models_for([handle])[0]
        assert record.resident_keys == set()                          # novram: everything streams
        got = unet(x, sigma, context)
    assert torch.equal(got, expected)
    streamed_manager.free()
    assert_bit_identical(unet, base)


def test_switching_patched_handles_on_a_partly_loaded_model() -> None:
    x = torch.randn(1, 4, 8, 8)
    sigma, context = torch.full((1,), 3.0), torch.randn(1, 4, 16)
    unet = make(ToyUNet, 0)
    base = snapshot(unet)
    plain = ModelHandle(unet)
    first, second = plain.clone(), plain.clone()
    first.add_patches({"conv_in.weight": lambda w: w * 2.0, "output_blocks.2.conv.weight": lambda w: w + 0.1})
    second.add_patches({"output_blocks.2.conv.weight": lambda w: w - 0.1}, strength=0.5)

    expected = {}
    full = ModelManager(MemorySettings())
    with torch.no_grad():
        for name, handle in (("plain", plain), ("first", first), ("second", second)):
            full.load_models_for([handle])
            expected[name] = unet(x, sigma, context)
    full.free()

    partial = ModelManager(MemorySettings(device="cpu", vram_budget_bytes=200_000))
    with torch.no_grad():
        for name, handle in (("first", first), ("second", second), ("plain", plain), ("first", first)):
            record = partial.load_models_for([handle])[0]
            assert record.placement.value == "partial"
            assert torch.equal(unet(x, sigma, context), expected[name]), name
    partial.free()
    assert_bit_identical(unet, base)


def test_a_second_manager_takes_the_module_back_from_the_first() -> None:
    module = linear_model()
    base = snapshot(module)
    with torch.no_grad():
        expected = module(torch.ones(1, 4))
    patched = ModelHandle(module).clone()
    patched.add_patches({"0.weight": lambda w: w + 1.0})
    first = ModelManager(MemorySettings(device="cpu", vram_budget_bytes=10**6))
    first.load_models_for([patched])                   # and then abandoned, as a test fixture would
    second = ModelManager(MemorySettings(vram_mode=VramMode.NO, device="cpu", vram_budget_bytes=10**6))
    second.load_models_for([ModelHandle(module)])
    assert first.ledger.bytes == 0 and first.record_of(patched).placement.value == "ram"
    with torch.no_grad():
        assert torch.equal(module(torch.ones(1, 4)), expected)      # streamed, and without the patch
    first.load_models_for([patched])
    assert second.record_of(patched).placement.value == "ram"
    assert torch.equal(module[0].weight, base["0.weight"] + 1.0)
    first.free()
    assert_bit_identical(module, base)
