"""The registry's decisions on a simulated device (CPU + --vram-budget) and with a RAM budget."""
from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from model_management import MemorySettings, ModelDroppedError, ModelHandle, ModelManager, Placement, VramMode
from model_management.weights import ModuleWeights

KIB = 1024


def blob(kib: int, seed: int = 0) -> nn.Module:
    """A module of exactly `kib` KiB of fp32 weights, in 4 equal layers."""
    torch.manual_seed(seed)
    n = kib * KIB // 4 // 4                       # values per layer
    return nn.Sequential(*(nn.Linear(n, 1, bias=False) for _ in range(4)))


def manager(budget_kib: int | None = None, mode: VramMode = VramMode.NORMAL,
            ram_kib: int | None = None) -> ModelManager:
    return ModelManager(MemorySettings(vram_mode=mode, device="cpu",
                                       vram_budget_bytes=None if budget_kib is None else budget_kib * KIB,
                                       ram_budget_bytes=None if ram_kib is None else ram_kib * KIB))


def placements(m: ModelManager, *handles: ModelHandle) -> list[str]:
    return [m.record_of(h).placement.value for h in handles]


def test_least_recently_used_model_is_unloaded_first() -> None:
    m = manager(budget_kib=100)
    a, b, c = (ModelHandle(blob(40, i), name=n) for i, n in enumerate("abc"))
    m.load_models_for([a])
    m.load_models_for([b])
    m.load_models_for([a])                     # a is now more recent than b
    m.load_models_for([c])
    assert placements(m, a, b, c) == ["full", "ram", "full"]
    assert m.ledger.bytes == 80 * KIB and m.ledger.peak_bytes <= 100 * KIB
    assert "least recently used" in m.record_of(b).why


def test_a_model_the_running_graph_needs_is_never_unloaded() -> None:
    m = manager(budget_kib=100)
    a, b, c = (ModelHandle(blob(40, i), name=n) for i, n in enumerate("abc"))
    with m.graph_needs([a]):
        m.load_models_for([a])
        m.load_models_for([b])
        m.load_models_for([c])                 # a is the LRU but the graph still needs it
        assert placements(m, a, b, c) == ["full", "ram", "full"]
        m.load_models_for([b], keep=[c])       # neither a (graph) nor c (kept): b loads partially
        assert placements(m, a, b, c) == ["full", "partial", "full"]
    m.load_models_for([b])                     # graph done: a can go now
    assert placements(m, a, b, c)[1] == "full"
    assert m.ledger.peak_bytes <= 100 * KIB


def test_working_memory_counts_against_the_budget() -> None:
    m = manager(budget_kib=100)
    a = ModelHandle(blob(40))
    m.load_models_for([a], working_memory_bytes=50 * KIB)
    assert placements(m, a) == ["full"]
    m.load_models_for([a], working_memory_bytes=75 * KIB)            # 25 KiB left for 40 KiB of weights
    record = m.record_of(a)
    assert record.placement is Placement.PARTIAL and record.resident_bytes <= 15 * KIB
    assert "partial" in record.why and "working memory" in record.why


def test_modes_highvram_lowvram_novram() -> None:
    high = manager(budget_kib=30, mode=VramMode.HIGH)
    with pytest.raises(torch.OutOfMemoryError, match="full load"):
        high.load_models_for([ModelHandle(blob(40))])

    low = manager(budget_kib=1000, mode=VramMode.LOW)
    a, b = ModelHandle(blob(40, 1)), ModelHandle(blob(40, 2))
    low.load_models_for([a])
    low.load_models_for([b])                                          # fits, but lowvram evicts a anyway
    assert placements(low, a, b) == ["ram", "full"]

    no = manager(budget_kib=1000, mode=VramMode.NO)
    no.load_models_for([a])
    assert placements(no, a) == ["partial"] and no.ledger.bytes == 0


def test_too_small_a_budget_is_an_out_of_memory_error() -> None:
    m = manager(budget_kib=12)                                          # one layer is 10 KiB
    with pytest.raises(torch.OutOfMemoryError, match="streaming needs"):
        m.load_models_for([ModelHandle(blob(40))], working_memory_bytes=4 * KIB)


def test_a_cpu_full_load_uses_the_loaded_tensors_without_a_copy() -> None:
    module = blob(8)
    ptrs = [p.data_ptr() for p in module.parameters()]
    m = ModelManager(MemorySettings(device="cpu"))
    m.load_models_for([ModelHandle(module)])
    assert [p.data_ptr() for p in module.parameters()] == ptrs    # memory-mapped weights stay mapped
    assert m.vram_mode is VramMode.CPU


def test_a_dtype_on_the_device_is_cast_on_load_and_the_base_kept() -> None:
    module = blob(8)
    m = manager(budget_kib=100)
    m.register(ModelHandle(module), dtype=torch.bfloat16)
    m.load_models_for([ModelHandle(module)])
    assert {p.dtype for p in module.parameters()} == {torch.bfloat16}
    assert m.ledger.bytes == 4 * KIB
    m.free()
    assert {p.dtype for p in module.parameters()} == {torch.float32} and m.ledger.bytes == 0


def test_ram_budget_keeps_two_checkpoints_and_drops_the_third() -> None:
    m = manager(budget_kib=1000, ram_kib=90)
    modules = [blob(40, i) for i in range(3)]
    originals = [ModuleWeights(mod).home.copy() for mod in modules]
    handles = [ModelHandle(mod, name=f"ckpt{i}", source_key=f"ckpt{i}.safetensors")
               for i, mod in enumerate(modules)]
    reloads = []
    for i, handle in enumerate(handles):            # as a checkpoint loader would: read, register, use
        m.register(handle, reload=lambda i=i: reloads.append(i) or originals[i])
        m.load_models_for([handle])
    assert placements(m, *handles) == ["dropped", "full", "full"]
    assert m.ram_used_bytes() == 80 * KIB
    assert all(p.untyped_storage().nbytes() <= 4 for p in modules[0].parameters())   # its memory is released
    assert [r["source_key"] for r in m.resident()] == ["ckpt1.safetensors", "ckpt2.safetensors"]

    assert m.find("ckpt2.safetensors").module is modules[2] and m.find("other.safetensors") is None
    m.load_models_for([m.find("ckpt0.safetensors")])   # back from disk; now ckpt1 is the LRU
    assert reloads == [0]
    assert placements(m, *handles) == ["full", "dropped", "full"]
    assert torch.equal(modules[0][0].weight, originals[0]["0.weight"])


def test_a_dropped_model_without_reload_says_so() -> None:
    m = manager(ram_kib=50)
    first, second = ModelHandle(blob(40, 1), name="first"), ModelHandle(blob(40, 2))
    m.load_models_for([first])
    m.load_models_for([second])
    with pytest.raises(ModelDroppedError, match="first"):
        m.load_models_for([first])


def test_free_and_report() -> None:
    m = manager(budget_kib=100)
    a, b = ModelHandle(blob(40, 1), name="a"), ModelHandle(blob(40, 2), name="b")
    m.load_models_for([a])
    m.load_models_for([b], working_memory_bytes=50 * KIB, keep=[a])    # 10 KiB left: b streams
    report = m.report()
    json.dumps(report)                                                  # served as /system_stats
    assert report["vram_mode"] == "normalvram" and report["vram_budget_bytes"] == 100 * KIB
    assert report["device"]["vram_total"] == 100 * KIB
    assert [(x["name"], x["placement"]) for x in report["models"]] == [("b", "partial"), ("a", "full")]
    assert set(report["dtypes"]) == {"diffusion_model", "text_encoder", "vae"}
    assert all(model["why"] for model in report["models"])
    assert m.free(keep=[b]) == 40 * KIB and placements(m, a, b) == ["ram", "partial"]
    assert m.free() == 0 and m.ledger.bytes == 0 and placements(m, a, b) == ["ram", "ram"]
    assert any("ram budget" in line for line in m.startup_lines())


def test_several_new_models_in_one_call_do_not_drop_each_other_from_ram() -> None:
    m = manager(ram_kib=50)
    a, b = ModelHandle(blob(40, 1)), ModelHandle(blob(40, 2))
    m.load_models_for([a, b])                       # over the RAM budget, but both are needed now
    assert placements(m, a, b) == ["full", "full"]


def test_an_oom_half_way_through_a_load_leaves_nothing_loaded() -> None:
    module = blob(40)
    base = {k: v.clone() for k, v in module.state_dict().items()}
    m = manager(budget_kib=100)
    handle = ModelHandle(module).clone()

    def no_room(weight: torch.Tensor) -> torch.Tensor:
        raise torch.OutOfMemoryError("CUDA out of memory (simulated)")

    handle.add_patches({"2.weight": no_room})
    with pytest.raises(torch.OutOfMemoryError):
        m.load_models_for([handle])
    assert m.ledger.bytes == 0 and placements(m, handle) == ["ram"]
    assert "load failed" in m.record_of(handle).why
    assert all(torch.equal(module.state_dict()[k], v) for k, v in base.items())
