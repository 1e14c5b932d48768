"""The node-facing protocol, the registry's /object_info shape and the event bus."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from execution import ANY, Event, EventBus, GraphBuilder, NodeRegistry, current_context, types_compatible
from execution.graph import DynamicPrompt, rename_expansion
from execution.protocol import is_link
from tests.execution.executor_nodes import Add, Output, Scale


@pytest.mark.parametrize("out, inp, ok", [
    ("INT", "INT", True), ("INT", "FLOAT", False), (ANY, "MODEL", True), ("MODEL", ANY, True),
    ("IMAGE,MASK", "MASK", True), ("MASK", "IMAGE, MASK", True), ("LATENT", "IMAGE,MASK", False),
    ("COMBO", ["a", "b"], True), (["a"], ["a", "b"], True), ("STRING", ["a"], False), (["a"], "STRING", False),
])
def test_types_compatible(out, inp, ok):
    assert types_compatible(out, inp) is ok


def test_is_link():
    assert is_link(["1", 0]) and not is_link(["1", "0"]) and not is_link([1, 0]) and not is_link(("1", 0))
    assert not is_link(["1", True])


def test_graph_builder_ids_links_and_finalize():
    GraphBuilder.set_default_prefix("5", 2)
    g = GraphBuilder()
    a = g.node("Const", value=1)
    b = g.node("Add", a=a.out(0), b=2)
    assert a.id == "5.2.0.1" and b.out(0) == ["5.2.0.2", 0]
    assert g.lookup_node("1") is a and g.node("Const", id="1") is a
    b.set_override_display_id("9")
    g.replace_node_output("1", 0, 7)
    graph = g.finalize()
    assert graph["5.2.0.2"] == {"class_type": "Add", "inputs": {"a": 7, "b": 2}, "override_display_id": "9"}
    assert GraphBuilder().prefix == "5.2.1."
    GraphBuilder.set_default_prefix("", 0)


def test_rename_expansion_prefixes_foreign_ids_and_keeps_outside_links():
    dynamic = DynamicPrompt({"1": {"class_type": "Const", "inputs": {}}})
    graph = {"a": {"class_type": "Add", "inputs": {"a": ["1", 0], "b": ["b", 0]}},
             "b": {"class_type": "Const", "inputs": {"value": 1}},
             "7.0.0.1": {"class_type": "Const", "inputs": {"value": 2}}}
    new_graph, result = rename_expansion("7", 0, graph, (["a", 0], 3), dynamic)
    assert set(new_graph) == {"7.0.a", "7.0.b", "7.0.0.1"}
    assert new_graph["7.0.a"]["inputs"] == {"a": ["1", 0], "b": ["7.0.b", 0]}
    assert result == (["7.0.a", 0], 3)


def test_current_context_is_none_outside_nodes():
    assert current_context() is None


def test_object_info_has_comfyui_shape():
    registry = NodeRegistry()
    Scale.DESCRIPTION = "Scales."
    Scale.OUTPUT_TOOLTIPS = ("the result",)
    Scale.DEPRECATED = True
    try:
        registry.register("Scale", Scale, display_name="Scale It", python_module="custom_nodes.pack")
        info = registry.object_info("Scale")
    finally:
        del Scale.DESCRIPTION, Scale.OUTPUT_TOOLTIPS, Scale.DEPRECATED
    assert info["input"]["required"]["mode"] == [["double", "triple"], {"default": "double"}]
    assert info["input_order"] == {"required": ["x", "mode", "label", "enabled"]}
    assert info["output"] == ["FLOAT"] and info["output_is_list"] == [False] and info["output_name"] == ["FLOAT"]
    assert info["name"] == "Scale" and info["display_name"] == "Scale It"
    assert info["description"] == "Scales." and info["python_module"] == "custom_nodes.pack"
    assert info["category"] == "test" and info["output_node"] is False
    assert info["output_tooltips"] == ["the result"] and info["deprecated"] is True
    assert "experimental" not in info
    json.dumps(registry.object_info_all())


def test_registry_basics():
    registry = NodeRegistry()
    registry.register("Add", Add)
    registry.register("Output", Output)
    assert "Add" in registry and registry.get("Add") is Add and registry.get("Nope") is None
    assert registry.names() == ["Add", "Output"] and registry.display_name("Add") == "Add"
    assert registry.object_info("Add")["output_name"] == ["sum"]
    assert registry.object_info("Output")["output_node"] is True
    assert "INT" in registry.output_types()
    with pytest.raises(ValueError):
        registry.register("Bad", object)


def test_object_info_all_skips_a_broken_class():
    class Broken:
        RETURN_TYPES = ()
        FUNCTION = "f"

        @classmethod
        def INPUT_TYPES(cls):
            raise OSError("folder gone")

    registry = NodeRegistry()
    registry.register("Add", Add)
    registry.register("Broken", Broken)
    assert list(registry.object_info_all()) == ["Add"]


def test_event_bus_fan_out_unsubscribe_and_broken_subscribers():
    bus = EventBus()
    seen: list[Event] = []

    def broken(event):
        raise RuntimeError("subscriber bug")

    bus.subscribe(broken)
    stop = bus.subscribe(seen.append)
    bus.emit("status", {"x": 1}, "c1")
    stop()
    bus.emit("status", {"x": 2})
    assert seen == [Event("status", {"x": 1}, "c1")]


def test_import_execution_is_cheap_and_torch_free():
    code = ("import sys, execution, execution.executor, execution.protocol; "
            "print('torch' in sys.modules, 'execution.run' in sys.modules)")
    root = Path(__file__).resolve().parents[2]
    out = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "True"]
    lazy = subprocess.run([sys.executable, "-c", "import sys, execution; print('execution.run' in sys.modules)"],
                          cwd=root, capture_output=True, text=True, check=True)
    assert lazy.stdout.strip() == "False"
