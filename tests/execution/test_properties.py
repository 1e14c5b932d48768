"""Property tests over random DAGs (hypothesis).

Executor: the order respects dependencies, results equal a naive recursive evaluation, and after
random edits no cached result is stale -- and exactly the nodes whose inputs changed re-run.
Validator: one mutation (dropped input, wrong type, cycle) gives exactly one issue of its type.
"""
from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from execution import CachePolicy, Engine, EventBus, NodeRegistry, PromptRecord

MOD = 1_000_003


class PConst:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"value": ("INT", {"min": -1000, "max": 1000})}}
    RETURN_TYPES = ("INT",)
    FUNCTION = "run"

    def run(self, value):
        return (value,)


class PAdd:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"a": ("INT", {"min": -1000, "max": 1000}), "b": ("INT", {"min": -1000, "max": 1000}),
                             "k": ("INT", {"min": -1000, "max": 1000})}}
    RETURN_TYPES = ("INT",)
    FUNCTION = "run"

    def run(self, a, b, k):
        return ((a * 3 + b + k) % MOD,)


class POut:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"value": ("INT",)}}
    RETURN_TYPES = ()
    FUNCTION = "run"
    OUTPUT_NODE = True

    def run(self, value):
        return {"ui": {"values": [value]}}


def registry() -> NodeRegistry:
    reg = NodeRegistry()
    for cls in (PConst, PAdd, POut):
        reg.register(cls.__name__, cls)
    return reg


small = st.integers(-20, 20)


@st.composite
def dags(draw) -> dict:
    count = draw(st.integers(2, 9))
    prompt: dict = {}
    ids = [f"n{i}" for i in range(count)]
    for i, node_id in enumerate(ids):
        if i == 0 or draw(st.integers(0, 3)) == 0:
            prompt[node_id] = {"class_type": "PConst", "inputs": {"value": draw(small)}}
            continue
        inputs = {"k": draw(small)}
        for name in ("a", "b"):
            inputs[name] = [ids[draw(st.integers(0, i - 1))], 0] if draw(st.booleans()) else draw(small)
        prompt[node_id] = {"class_type": "PAdd", "inputs": inputs}
    for j, source in enumerate(draw(st.lists(st.sampled_from(ids), min_size=1, max_size=3, unique=True))):
        prompt[f"out{j}"] = {"class_type": "POut", "inputs": {"value": [source, 0]}}
    order = draw(st.permutations(list(prompt)))   # node ids must not matter, nor their order
    return {node_id: prompt[node_id] for node_id in order}


def naive(prompt: dict) -> dict[str, int]:
    memo: dict[str, int] = {}

    def value(node_id: str) -> int:
        if node_id not in memo:
            node = prompt[node_id]
            args = {n: value(v[0]) if isinstance(v, list) else v for n, v in node["inputs"].items()}
            memo[node_id] = args["value"] if node["class_type"] == "PConst" else \
                (args["a"] * 3 + args["b"] + args["k"]) % MOD
        return memo[node_id]

    return {n: value(node["inputs"]["value"][0]) for n, node in prompt.items() if node["class_type"] == "POut"}


def signature(prompt: dict, node_id: str, memo: dict) -> tuple:
    if node_id not in memo:
        node = prompt[node_id]
        memo[node_id] = (node["class_type"],) + tuple(sorted(
            (n, signature(prompt, v[0], memo) if isinstance(v, list) else ("const", v))
            for n, v in node["inputs"].items()))
    return memo[node_id]


def expected_runs(prompt: dict, seen: set) -> set:
    """Signatures that must run: reachable from the outputs without passing a cached signature."""
    memo: dict = {}
    must: set = set()
    stack = [n for n, node in prompt.items() if node["class_type"] == "POut"]
    visited = set()
    while stack:
        node_id = stack.pop()
        sig = signature(prompt, node_id, memo)
        if node_id in visited or sig in seen:
            continue
        visited.add(node_id)
        must.add(sig)
        stack += [v[0] for v in prompt[node_id]["inputs"].values() if isinstance(v, list)]
    return must


class Recorder:
    def __init__(self, policy: CachePolicy):
        self.events = EventBus()
        self.executing: list[str] = []
        self.events.subscribe(lambda e: self.executing.append(e.data["node"])
                              if e.type == "executing" and e.data["node"] else None)
        self.engine = Engine(registry(), self.events, policy)

    def run(self, prompt: dict):
        self.executing.clear()
        result = self.engine.execute(PromptRecord("p", 0, prompt, {}, "c", []))
        assert result.status == "success", result.error
        return result


FAST = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FAST
@given(dags())
def test_order_respects_dependencies_and_results_match_naive_evaluation(prompt):
    recorder = Recorder(CachePolicy.keep_last())
    result = recorder.run(prompt)
    assert {n: ui["values"][0] for n, ui in result.outputs.items()} == naive(prompt)
    position = {node_id: i for i, node_id in enumerate(recorder.executing)}
    for node_id in recorder.executing:
        for value in prompt[node_id]["inputs"].values():
            if isinstance(value, list) and value[0] in position:
                assert position[value[0]] < position[node_id]


edits = st.lists(st.tuples(st.integers(0, 100), st.integers(0, 100), small), min_size=1, max_size=4)


def apply_edit(prompt: dict, edit: tuple) -> dict:
    """Change a constant, or point a link at another earlier-defined node (keeps it a DAG)."""
    pick, target, value = edit
    edited = {n: {"class_type": v["class_type"], "inputs": dict(v["inputs"])} for n, v in prompt.items()}
    inner = [n for n in edited if edited[n]["class_type"] != "POut"]
    ranks = {n: int(n[1:]) for n in inner}
    node_id = inner[pick % len(inner)]
    node = edited[node_id]
    if node["class_type"] == "PConst":
        node["inputs"]["value"] = value
        return edited
    name = ("a", "b", "k")[target % 3]
    earlier = [n for n in inner if ranks[n] < ranks[node_id]]
    if name != "k" and earlier and target % 2:
        node["inputs"][name] = [earlier[value % len(earlier)], 0]
    else:
        node["inputs"][name] = value
    return edited


@FAST
@given(dags(), st.lists(edits, min_size=1, max_size=3))
def test_after_random_edits_no_cached_result_is_stale_and_only_changes_rerun(prompt, rounds):
    recorder = Recorder(CachePolicy.lru(10_000))   # keeps everything: the expected re-runs are exact
    seen: set = set()
    current = prompt
    for round_edits in [[]] + rounds:
        for edit in round_edits:
            current = apply_edit(current, edit)
        must = expected_runs(current, seen)
        result = recorder.run(current)
        assert {n: ui["values"][0] for n, ui in result.outputs.items()} == naive(current)
        memo: dict = {}
        ran = [signature(current, n, memo) for n in recorder.executing]
        assert len(ran) == len(set(ran))            # nothing ran twice
        assert set(ran) == must                     # exactly the changed part ran
        seen |= set(ran)


@FAST
@given(dags(), st.lists(edits, min_size=1, max_size=3))
def test_keep_last_policy_is_never_stale(prompt, rounds):
    recorder = Recorder(CachePolicy.keep_last())
    current = prompt
    for round_edits in [[]] + rounds:
        for edit in round_edits:
            current = apply_edit(current, edit)
        result = recorder.run(current)
        assert {n: ui["values"][0] for n, ui in result.outputs.items()} == naive(current)


# -- validator ---------------------------------------------------------------------------------------

def ancestors(prompt: dict) -> list[str]:
    """Nodes some output depends on (the validator checks only those), in prompt order."""
    found, stack = set(), [n for n, v in prompt.items() if v["class_type"] == "POut"]
    while stack:
        node_id = stack.pop()
        for value in prompt[node_id]["inputs"].values():
            if isinstance(value, list) and value[0] not in found:
                found.add(value[0])
                stack.append(value[0])
    return [n for n in prompt if n in found]


def issues(result) -> list[str]:
    return [e["type"] for entry in result.node_errors.values() for e in entry["errors"]]


def validator() -> Engine:
    return Engine(registry(), EventBus())


@FAST
@given(dags(), st.integers(0, 100))
def test_one_dropped_input_gives_one_required_input_missing(prompt, pick):
    assert validator().validate(prompt).node_errors == {}
    candidates = [n for n in ancestors(prompt) if prompt[n]["inputs"]]
    node_id = candidates[pick % len(candidates)]
    name = sorted(prompt[node_id]["inputs"])[pick % len(prompt[node_id]["inputs"])]
    del prompt[node_id]["inputs"][name]
    assert issues(validator().validate(prompt)) == ["required_input_missing"]


@FAST
@given(dags(), st.integers(0, 100), st.sampled_from(["abc", None, float("nan"), [1, 2, 3], {"a": 1}]))
def test_one_wrong_type_gives_one_issue_of_its_type(prompt, pick, bad):
    candidates = [(n, name) for n in ancestors(prompt) for name, v in prompt[n]["inputs"].items()
                  if not isinstance(v, list)]
    node_id, name = candidates[pick % len(candidates)]
    prompt[node_id]["inputs"][name] = bad
    expected = "bad_linked_input" if isinstance(bad, list) else "invalid_input_type"
    assert issues(validator().validate(prompt)) == [expected]


@FAST
@given(dags(), st.integers(0, 100), st.integers(0, 100))
def test_one_back_link_gives_one_dependency_cycle(prompt, pick, pick_target):
    inner = [n for n in ancestors(prompt) if prompt[n]["class_type"] == "PAdd"]
    if not inner:
        return
    node_id = inner[pick % len(inner)]
    # nodes that depend on node_id (including itself) and can feed it: a link to one closes a cycle
    dependents = {node_id}
    changed = True
    while changed:
        changed = False
        for other, node in prompt.items():
            if other not in dependents and node["class_type"] == "PAdd" and any(
                    isinstance(v, list) and v[0] in dependents for v in node["inputs"].values()):
                dependents.add(other)
                changed = True
    target = sorted(dependents)[pick_target % len(dependents)]
    prompt[node_id]["inputs"]["k"] = [target, 0]
    assert issues(validator().validate(prompt)) == ["dependency_cycle"]


# -- robustness --------------------------------------------------------------------------------------

json_values = st.recursive(st.none() | st.booleans() | st.integers(-5, 5) | st.floats(allow_nan=True) | st.text(max_size=3),
                           lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=2), inner,
                                                                                       max_size=2), max_leaves=5)
node_ids = st.sampled_from(["n0", "n1", "n2", "n3"])
garbage_inputs = st.dictionaries(st.sampled_from(["value", "a", "b", "k", "x"]),
                                 json_values | st.tuples(node_ids, st.integers(-1, 2)).map(list), max_size=4)
garbage_nodes = st.fixed_dictionaries({"class_type": st.sampled_from(["PConst", "PAdd", "POut", "Nope"]),
                                       "inputs": garbage_inputs})
garbage_prompts = st.dictionaries(node_ids, garbage_nodes | json_values, max_size=4) | json_values


@FAST
@given(garbage_prompts)
def test_garbage_never_raises_from_validate_or_execute(prompt):
    engine = validator()
    result = engine.validate(prompt)
    assert isinstance(result.ok, bool)
    run = engine.execute(PromptRecord("g", 0, prompt, {}, None, ["n0", "n1"]))
    assert run.status in ("success", "error")
