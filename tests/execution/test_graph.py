"""Graph helpers: strongly connected components, the dynamic prompt, list mapping."""
from __future__ import annotations

import pytest

from execution.errors import PlexusError
from execution.graph import DynamicPrompt, rename_expansion
from execution.lists import call_arguments, merge_outputs, merge_ui, slot_items
from execution.protocol import ExecutionBlocker
from execution.validation import strongly_connected


def test_strongly_connected_lists_dependencies_first_and_finds_cycles():
    edges = {"out": ["a"], "a": ["b", "c"], "b": ["c"], "c": [], "x": ["y"], "y": ["x"]}
    components = strongly_connected(["out"], edges.__getitem__)
    assert components == [["c"], ["b"], ["a"], ["out"]]
    cyclic = strongly_connected(["x"], edges.__getitem__)
    assert [sorted(c) for c in cyclic] == [["x", "y"]]


def test_strongly_connected_handles_a_deep_chain_without_recursion():
    n = 20_000
    components = strongly_connected([str(n)], lambda i: [str(int(i) - 1)] if int(i) > 0 else [])
    assert len(components) == n + 1 and components[0] == ["0"]


def test_dynamic_prompt_tracks_parents_and_display_ids():
    dynamic = DynamicPrompt({"1": {"class_type": "A", "inputs": {}}})
    dynamic.add_ephemeral_node("1.0.0.1", {"class_type": "B", "inputs": {}}, "1", "1")
    dynamic.add_ephemeral_node("1.0.0.1.0.0.1", {"class_type": "C", "inputs": {}}, "1.0.0.1", "1.0.0.1")
    assert dynamic.get_real_node_id("1.0.0.1.0.0.1") == "1"
    assert dynamic.get_parent_node_id("1.0.0.1.0.0.1") == "1.0.0.1"
    assert dynamic.get_display_node_id("1.0.0.1.0.0.1") == "1"
    assert dynamic.all_node_ids() == {"1", "1.0.0.1", "1.0.0.1.0.0.1"}
    assert dynamic.has_node("1.0.0.1") and not dynamic.has_node("2")
    with pytest.raises(PlexusError):
        dynamic.get_node("2")


def test_rename_expansion_rejects_bad_graphs():
    dynamic = DynamicPrompt({"5.0.a": {"class_type": "A", "inputs": {}}})
    with pytest.raises(PlexusError):
        rename_expansion("5", 0, ["not", "a", "dict"], (), dynamic)
    with pytest.raises(PlexusError):
        rename_expansion("5", 0, {"a": {"inputs": {}}}, (), dynamic)
    with pytest.raises(PlexusError, match="already exists"):
        rename_expansion("5", 0, {"a": {"class_type": "A", "inputs": {}}}, (), dynamic)


def test_call_arguments_follow_comfyui_list_mapping():
    assert call_arguments({"a": [1], "b": [2]}, False) == [{"a": 1, "b": 2}]
    assert call_arguments({"a": [1, 2, 3], "b": [10, 20]}, False) == [
        {"a": 1, "b": 10}, {"a": 2, "b": 20}, {"a": 3, "b": 20}]
    assert call_arguments({"a": [1, 2]}, True) == [{"a": [1, 2]}]
    assert call_arguments({}, False) == [{}]
    assert call_arguments({"a": [], "b": [1]}, False) == []


def test_merging_results_and_ui():
    assert merge_outputs([[[1]], [[2]]], 1) == [[1, 2]]
    assert slot_items([1, 2], True) == [1, 2] and slot_items([1, 2], False) == [[1, 2]]
    blocker = ExecutionBlocker(None)
    assert slot_items(blocker, True) == [blocker]
    assert merge_ui([{"images": [1]}, {"images": [2], "text": "x"}]) == {"images": [1, 2], "text": "x"}
    assert merge_ui([]) is None
