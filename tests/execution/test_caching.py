"""Cache policies and cache keys."""
from __future__ import annotations

import pytest

from execution import CachePolicy, Engine, EventBus, GraphBuilder, PromptRecord
from execution.caching import CacheEntry, OutputCache, canonical, estimate_bytes, is_changed_token
from tests.execution import executor_nodes as tn
from tests.execution.executor_nodes import make_registry, ran


@pytest.fixture(autouse=True)
def _clean():
    tn.reset()
    yield
    tn.reset()


def one(value: int, out_id: str = "o") -> dict:
    return {"c": {"class_type": "LoadModel", "inputs": {"name": str(value)}},
            out_id: {"class_type": "Output", "inputs": {"value": ["c", 0]}}}


def run(engine: Engine, prompt: dict) -> list[str]:
    tn.CALLS.clear()
    result = engine.execute(PromptRecord("p", 0, prompt, {}, None, []))
    assert result.status == "success", result.error
    return ran()


def test_keep_last_keeps_only_the_last_prompt():
    engine = Engine(make_registry(), EventBus())
    run(engine, one(1))
    run(engine, one(2))
    assert run(engine, one(1)) == ["o"]   # LoadModel "1" was dropped; Output re-ran as its input changed
    assert run(engine, one(1)) == []


def test_keep_last_keeps_entries_of_outputs_not_run_this_time():
    engine = Engine(make_registry(), EventBus())
    prompt = {**one(1), "c2": {"class_type": "Const", "inputs": {"value": 3}},
              "o2": {"class_type": "Output", "inputs": {"value": ["c2", 0]}}}
    run(engine, prompt)
    engine.execute(PromptRecord("p", 0, prompt, {}, None, ["o"]))
    tn.CALLS.clear()
    engine.execute(PromptRecord("p", 0, prompt, {}, None, ["o2"]))
    assert ran() == []


def test_lru_keeps_n_entries():
    engine = Engine(make_registry(), EventBus(), CachePolicy.lru(4))
    run(engine, one(1))
    run(engine, one(2))
    assert run(engine, one(1)) == []           # 4 entries: both prompts fit
    run(engine, one(3))
    run(engine, one(4))
    assert "o" in run(engine, one(1))          # evicted by now


def test_none_policy_caches_nothing_between_prompts():
    engine = Engine(make_registry(), EventBus(), CachePolicy.none())
    run(engine, one(1))
    assert run(engine, one(1)) == ["o"]
    assert len(engine.cache) == 0


class Blob:
    def __init__(self, nbytes: int):
        self.nbytes = nbytes


def test_ram_budget_evicts_least_recently_used_by_size():
    size = estimate_bytes([Blob(300)])
    cache = OutputCache(budget_bytes=3 * size + 10)
    for i in range(5):
        cache.put(bytes([i]), CacheEntry([[Blob(300)]], None))
    assert len(cache) == 3 and cache.total_bytes == 3 * size
    assert cache.get(bytes([0])) is None and cache.get(bytes([4])) is not None


def test_ram_policy_evicts_while_free_memory_is_low():
    free = {"bytes": 10}
    cache = CachePolicy.ram(min_free_bytes=100).make(lambda: free["bytes"])
    cache.put(b"a", CacheEntry([[1]], None))
    assert len(cache) == 0                      # the first store reads free RAM
    free["bytes"] = 1000
    cache.put(b"b", CacheEntry([[1]], None))
    cache.put(b"c", CacheEntry([[Blob(64 * 1024 * 1024)]], None))   # a big store reads it again
    assert len(cache) == 2
    free["bytes"] = 10
    cache.end_prompt(set())                     # and so does the end of every prompt
    assert len(cache) == 0


def test_policy_arguments_are_checked():
    with pytest.raises(ValueError):
        CachePolicy.lru(0)
    with pytest.raises(ValueError):
        CachePolicy.ram()


def test_estimate_bytes_reads_tensor_like_sizes():
    class TensorLike:
        def element_size(self):
            return 4

        def nelement(self):
            return 1000

    assert estimate_bytes(TensorLike()) == 4000
    assert estimate_bytes([Blob(10), Blob(20)]) >= 30


def test_canonical_text_tells_types_apart_and_refuses_objects():
    assert len({canonical(1), canonical(1.0), canonical(True), canonical("1")}) == 4
    assert canonical({"b": 1, "a": 2}) == canonical({"a": 2, "b": 1})
    assert canonical(object()) is None
    assert is_changed_token(float("nan")) is None
    assert is_changed_token("abc") == '"abc"'


class Opaque:
    """An unhashable, unserialisable constant (like a tensor passed by an expansion)."""
    __hash__ = None

    def __init__(self, value):
        self.value = value

    def __eq__(self, other):
        raise TypeError("ambiguous comparison")


class PassOpaque:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"thing": ("OPAQUE",)}}
    RETURN_TYPES = ("INT",)
    FUNCTION = "run"

    def run(self, thing):
        tn.called("PassOpaque", "")
        return (thing.value,)


class MakeOpaque:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"value": ("INT",)}}
    RETURN_TYPES = ("INT",)
    FUNCTION = "run"

    def run(self, value):
        g = GraphBuilder()
        inner = g.node("PassOpaque", thing=Opaque(value))
        return {"result": (inner.out(0),), "expand": g.finalize()}


def test_unserialisable_constants_never_give_a_false_hit():
    registry = make_registry()
    registry.register("PassOpaque", PassOpaque)
    registry.register("MakeOpaque", MakeOpaque)
    engine = Engine(registry, EventBus(), CachePolicy.lru(100))
    results = []
    for value in (1, 2, 1):
        tn.CALLS.clear()
        prompt = {"1": {"class_type": "MakeOpaque", "inputs": {"value": value}},
                  "2": {"class_type": "Output", "inputs": {"value": ["1", 0]}}}
        result = engine.execute(PromptRecord("p", 0, prompt, {}, None, []))
        results.append(result.outputs["2"]["values"])
    assert results == [[1], [2], [1]]


def test_unhashable_outputs_are_cached_fine():
    class DictOut:
        @classmethod
        def INPUT_TYPES(cls):
            return {"required": {"n": ("INT",)}}
        RETURN_TYPES = ("LATENT",)
        FUNCTION = "run"

        def run(self, n):
            tn.called("DictOut", "")
            return ({"samples": [n] * 3},)

    registry = make_registry()
    registry.register("DictOut", DictOut)
    engine = Engine(registry, EventBus())
    prompt = {"1": {"class_type": "DictOut", "inputs": {"n": 2}},
              "2": {"class_type": "Output", "inputs": {"value": ["1", 0]}}}
    run(engine, prompt)
    assert run(engine, prompt) == []


def test_inputs_edited_in_place_between_prompts_are_seen():
    engine = Engine(make_registry(), EventBus())
    prompt = {"1": {"class_type": "Const", "inputs": {"value": 1}},
              "2": {"class_type": "Const", "inputs": {"value": 2}},
              "3": {"class_type": "Add", "inputs": {"a": ["1", 0], "b": ["1", 0]}},
              "4": {"class_type": "Output", "inputs": {"value": ["3", 0]}}}
    run(engine, prompt)
    prompt["3"]["inputs"]["b"][0] = "2"        # the caller mutates its own dict
    assert sorted(run(engine, prompt)) == ["2", "3", "4"]


def test_a_resubmitted_prompt_is_compiled_and_keyed_only_where_it_changed(monkeypatch):
    import execution.compiled as compiled_module
    import execution.run as run_module

    counts = {"compile": 0, "digest": 0}
    real_compile, real_digest = run_module.compile_node, compiled_module.digest

    def counting_compile(*args, **kwargs):
        counts["compile"] += 1
        return real_compile(*args, **kwargs)

    def counting_digest(parts):
        counts["digest"] += 1
        return real_digest(parts)

    monkeypatch.setattr(run_module, "compile_node", counting_compile)
    monkeypatch.setattr(compiled_module, "digest", counting_digest)
    n = 200
    prompt = {"0": {"class_type": "LoadModel", "inputs": {"name": "m"}}}
    for i in range(1, n):
        prompt[str(i)] = {"class_type": "UseModel", "inputs": {"model": [str(i - 1), 0], "strength": 1.0}}
    prompt["out"] = {"class_type": "Output", "inputs": {"value": [str(n - 1), 0]}}
    engine = Engine(make_registry(), EventBus())
    run(engine, prompt)
    assert counts == {"compile": n + 1, "digest": n + 1}
    counts.update(compile=0, digest=0)
    edited = {k: {"class_type": v["class_type"], "inputs": dict(v["inputs"])} for k, v in prompt.items()}
    edited[str(n - 3)]["inputs"]["strength"] = 2.0
    assert run(engine, edited) == ["out"]
    assert counts == {"compile": 1, "digest": 4}   # the changed node, its two descendants and the output
