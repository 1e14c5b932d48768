"""Partial loading: units, plans, and a whole toy txt2img under a simulated device budget."""
from __future__ import annotations

import pytest
import torch

from model_management import MemorySettings, ModelHandle, ModelManager, VramMode, estimate_working_memory
from model_management.streaming import BudgetTooSmall, offload_units, plan_load
from model_management.weights import ModuleWeights
from tests.model_management.toys import TOY_MEMORY_FACTOR, ToyTextEncoder, ToyUNet, ToyVAEDecoder, make, txt2img


def test_offload_units_follow_offload_blocks_and_cover_every_weight_once() -> None:
    unet = make(ToyUNet, 0)
    weights = ModuleWeights(unet)
    units = offload_units(unet, weights, ToyUNet.OFFLOAD_BLOCKS)
    names = [u.name for u in units]
    assert names[:4] == ["", "conv_in", "time_embed.0", "time_embed.2"]   # "" owns out_scale
    assert "input_blocks.0" in names and "output_blocks.2" in names
    assert "middle_block.norm" in names                 # not an offload block: one unit per weight owner
    keys = [k for u in units for k in u.keys]
    assert sorted(keys) == sorted(weights.slots)
    assert sum(u.nbytes for u in units) == weights.total_bytes()
    bf16 = offload_units(unet, weights, ToyUNet.OFFLOAD_BLOCKS, torch.bfloat16)
    assert sum(u.nbytes for u in bf16) == weights.total_bytes() // 2


def test_plan_keeps_room_for_the_units_in_flight() -> None:
    unet = make(ToyUNet, 0)
    units = offload_units(unet, ModuleWeights(unet), ToyUNet.OFFLOAD_BLOCKS)
    assert [u.name for u in units if u.is_container] == [""]          # the root holds class_embed
    leaf = max(u.nbytes for u in units if not u.is_container)
    container = sum(u.nbytes for u in units if u.is_container)
    total = sum(u.nbytes for u in units)
    assert plan_load(units, total).is_full and plan_load(units, None).is_full
    for prefetch in (False, True):
        minimum = container + leaf * (2 if prefetch else 1)
        for budget in (minimum, (minimum + total) // 2, total - 1):
            plan = plan_load(units, budget, prefetch=prefetch)
            assert not plan.is_full and plan.peak_bytes <= budget
        with pytest.raises(BudgetTooSmall):
            plan_load(units, minimum - 1, prefetch=prefetch)
    assert plan_load(units, total, max_resident_bytes=0).resident == ()
    assert issubclass(BudgetTooSmall, torch.OutOfMemoryError)


def models(dtype: torch.dtype | None = None) -> tuple[ModelHandle, ModelHandle, ModelHandle]:
    return (ModelHandle(make(ToyUNet, 0), name="unet"), ModelHandle(make(ToyTextEncoder, 1), name="clip"),
            ModelHandle(make(ToyVAEDecoder, 2), name="vae"))


def reference_image(dtype: torch.dtype | None = None) -> torch.Tensor:
    unet, text, vae = models()
    manager = ModelManager(MemorySettings(device="cpu"))
    if dtype is not None:
        manager.register(unet, dtype=dtype)
    return txt2img(manager, unet, text, vae)


@pytest.mark.parametrize("mode", [VramMode.NORMAL, VramMode.LOW, VramMode.NO])
@pytest.mark.parametrize("dtype", [None, torch.bfloat16])
def test_txt2img_under_a_budget_stays_under_it_and_is_bit_identical(mode: VramMode, dtype) -> None:
    budget = 200_000                                   # the toy UNet is 332 kB in fp32
    manager = ModelManager(MemorySettings(vram_mode=mode, device="cpu", vram_budget_bytes=budget))
    unet, text, vae = models()
    if dtype is not None:
        manager.register(unet, dtype=dtype)
    samples: list[int] = []
    manager.ledger.watch(samples.append)               # called at every stream-in / stream-out
    image = txt2img(manager, unet, text, vae)

    assert torch.equal(image, reference_image(dtype))
    assert samples and max(samples) <= budget
    record = manager.record_of(unet)
    if mode is VramMode.NO:
        assert record.resident_keys == set()
    if dtype is None or mode is not VramMode.NORMAL:
        # streaming really happened: many more ledger changes than the handful of whole-model loads
        assert len(samples) > 50 and manager.ledger.peak_bytes <= budget
    manager.free()
    assert manager.ledger.bytes == 0
    if dtype is None:                                  # and the base weights are untouched
        assert torch.equal(txt2img(ModelManager(MemorySettings(device="cpu")), unet, text, vae), image)


def test_a_streamed_weight_used_outside_its_hooks_shows_up_as_nan() -> None:
    unet = make(ToyUNet, 0)
    manager = ModelManager(MemorySettings(vram_mode=VramMode.NO, device="cpu", vram_budget_bytes=10**6))
    manager.load_models_for([ModelHandle(unet)])
    assert torch.isnan(unet.input_blocks[0].conv.weight).all()        # placeholder: right shape, no storage
    assert unet.input_blocks[0].conv.weight.shape == (32, 32, 3, 3)
    assert unet.input_blocks[0].conv.weight.untyped_storage().nbytes() == 4


def test_blocks_larger_than_the_limit_are_cut_into_their_layers() -> None:
    unet = make(ToyUNet, 0)
    weights = ModuleWeights(unet)
    blocks = offload_units(unet, weights, ToyUNet.OFFLOAD_BLOCKS)
    block = next(u for u in blocks if u.name == "input_blocks.0")
    layers = offload_units(unet, weights, ToyUNet.OFFLOAD_BLOCKS, max_unit_bytes=block.nbytes - 1)
    names = [u.name for u in layers]
    assert "input_blocks.0" not in names and "output_blocks.2" not in names
    assert {"input_blocks.0.norm", "input_blocks.0.conv", "input_blocks.0.to_q", "input_blocks.0.to_kv"} <= set(names)
    assert sorted(k for u in layers for k in u.keys) == sorted(weights.slots)
    assert max(u.nbytes for u in layers if not u.is_container) < block.nbytes
    kept = offload_units(unet, weights, ToyUNet.OFFLOAD_BLOCKS, max_unit_bytes=block.nbytes)
    assert [u.name for u in kept] == [u.name for u in blocks]          # a block that fits stays whole


@pytest.mark.parametrize("mode", [VramMode.NORMAL, VramMode.NO])
def test_a_budget_below_the_largest_block_streams_layers_bit_identically(mode: VramMode) -> None:
    unet, text, vae = models()
    weights = ModuleWeights(unet.module)
    units = offload_units(unet.module, weights, ToyUNet.OFFLOAD_BLOCKS)
    largest_block = max(u.nbytes for u in units if u.name.startswith(("input_blocks.", "output_blocks.")))
    containers = sum(u.nbytes for u in units if u.is_container)
    work = estimate_working_memory((2, 4, 8, 8), torch.float32, memory_factor=TOY_MEMORY_FACTOR,
                                   attention_backend="naive")
    budget = work + containers + largest_block - 1                   # the block-level plan cannot fit
    with pytest.raises(BudgetTooSmall):
        plan_load(units, budget - work)
    manager = ModelManager(MemorySettings(vram_mode=mode, device="cpu", vram_budget_bytes=budget))
    samples: list[int] = []
    manager.ledger.watch(samples.append)
    image = txt2img(manager, unet, text, vae)
    assert torch.equal(image, reference_image())
    assert max(samples) <= budget - work
    record = manager.load_models_for([unet], work)[0]               # (the VAE load evicted it)
    streamed_names = {u.name for u in record.streamer.units}
    assert "input_blocks.0.conv" in streamed_names or "input_blocks.0.to_kv" in streamed_names
    manager.free()


def test_layer_streaming_only_for_models_that_declare_it() -> None:
    class Opaque(ToyUNet):            # e.g. a parent that reads a child layer's weight itself (T5)
        OFFLOAD_LAYERS = False

    torch.manual_seed(0)
    module = Opaque().eval()
    units = offload_units(module, ModuleWeights(module), ToyUNet.OFFLOAD_BLOCKS)
    largest_block = max(u.nbytes for u in units if u.name.startswith(("input_blocks.", "output_blocks.")))
    containers = sum(u.nbytes for u in units if u.is_container)
    manager = ModelManager(MemorySettings(vram_mode=VramMode.NO, device="cpu",
                                          vram_budget_bytes=containers + largest_block - 1))
    with pytest.raises(BudgetTooSmall):
        manager.load_models_for([ModelHandle(module)])
