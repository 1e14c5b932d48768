"""nodes.plugins / nodes.registry: custom_nodes loading as ComfyUI does it, with a report."""
from __future__ import annotations

import sys
import textwrap
from pathlib import Path

import pytest

from execution.registry import NodeRegistry
from nodes.plugins import load_plugins, module_name_for
from nodes.registry import build_registry

REPO = Path(__file__).resolve().parents[2]

GOOD_NODE = """
class {cls}:
    @classmethod
    def INPUT_TYPES(cls):
        return {{"required": {{"text": ("STRING", {{"default": "hi"}})}}}}
    RETURN_TYPES = ("STRING",)
    FUNCTION = "go"
    CATEGORY = "test"
    def go(self, text):
        return (text + "{suffix}",)
"""


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))
    return path


def package(root: Path, name: str, nodes: dict[str, str], web: str | None = None, extra: str = "") -> Path:
    body = "".join(GOOD_NODE.format(cls=cls, suffix=suffix) for cls, suffix in nodes.items())
    write(root / name / "impl.py", body)
    mappings = ", ".join(f"{cls!r}: {cls}" for cls in nodes)
    displays = ", ".join(f"{cls!r}: '{cls} display'" for cls in nodes)
    init = (f"from .impl import {', '.join(nodes)}\n"
            f"NODE_CLASS_MAPPINGS = {{{mappings}}}\nNODE_DISPLAY_NAME_MAPPINGS = {{{displays}}}\n")
    if web is not None:
        init += f"WEB_DIRECTORY = {web!r}\n"
    write(root / name / "__init__.py", init + extra)
    return root / name


@pytest.fixture
def custom_nodes(tmp_path: Path):
    folder = tmp_path / "custom_nodes"
    folder.mkdir()
    before = set(sys.modules)
    yield folder
    for name in set(sys.modules) - before:
        if name.startswith(str(tmp_path)):
            del sys.modules[name]


def test_broken_plugin_is_reported_and_good_one_loads(custom_nodes: Path) -> None:
    package(custom_nodes, "good_pack", {"GoodNode": "!"})
    write(custom_nodes / "broken_pack" / "__init__.py", "import not_a_real_module_xyz\n")
    scan = load_plugins([custom_nodes])
    by_name = {p.name: p for p in scan.plugins}
    assert by_name["good_pack"].is_ok and by_name["good_pack"].node_names == ["GoodNode"]
    broken = by_name["broken_pack"]
    assert not broken.is_ok and broken.path == custom_nodes / "broken_pack"
    assert "ModuleNotFoundError" in broken.error and "not_a_real_module_xyz" in broken.error
    assert "Traceback" in broken.traceback
    assert module_name_for(broken.path) not in sys.modules
    text = scan.import_times_text()
    assert "Import times for custom nodes:" in text
    assert f"(IMPORT FAILED): {custom_nodes / 'broken_pack'}" in text
    assert f"seconds: {custom_nodes / 'good_pack'}" in text


def test_plugin_without_mappings_fails(custom_nodes: Path) -> None:
    write(custom_nodes / "empty_pack" / "__init__.py", "X = 1\n")
    write(custom_nodes / "no_init" / "readme.txt", "not a package")
    scan = load_plugins([custom_nodes])
    errors = {p.name: p.error for p in scan.plugins}
    assert "NODE_CLASS_MAPPINGS" in errors["empty_pack"]
    assert "no __init__.py" in errors["no_init"]


def test_skipped_entries(custom_nodes: Path) -> None:
    package(custom_nodes, "off_pack.disabled", {"OffNode": ""})
    write(custom_nodes / "single.py.disabled", "raise SystemExit('must not run')\n")
    write(custom_nodes / "notes.txt", "x")
    (custom_nodes / "__pycache__").mkdir()
    write(custom_nodes / ".hidden" / "__init__.py", "raise RuntimeError('must not run')\n")
    scan = load_plugins([custom_nodes])
    assert scan.plugins == []
    assert sorted(path.name for path, _ in scan.skipped) == ["off_pack.disabled", "single.py.disabled"]


def test_single_file_module_plugin(custom_nodes: Path) -> None:
    write(custom_nodes / "one_file.py", GOOD_NODE.format(cls="OneFileNode", suffix="?")
          + "NODE_CLASS_MAPPINGS = {'OneFileNode': OneFileNode}\nWEB_DIRECTORY = 'one_file_web'\n")
    write(custom_nodes / "one_file_web" / "x.js", "// js")
    scan = load_plugins([custom_nodes])
    [plugin] = [p for p in scan.plugins if p.name == "one_file"]
    assert plugin.is_ok and plugin.node_names == ["OneFileNode"] and plugin.python_module == "custom_nodes.one_file"
    assert plugin.web_directory == custom_nodes / "one_file_web"   # relative to the file's folder
    assert sys.modules[str(custom_nodes / "one_file")].NODE_CLASS_MAPPINGS
    assert plugin.classes["OneFileNode"]().go("a") == ("a?",)


def test_disable_all_and_whitelist(custom_nodes: Path) -> None:
    package(custom_nodes, "pack_a", {"NodeA": ""})
    package(custom_nodes, "pack_b", {"NodeB": ""})
    write(custom_nodes / "mod_c.py", GOOD_NODE.format(cls="NodeC", suffix="") + "NODE_CLASS_MAPPINGS = {'NodeC': NodeC}\n")
    assert load_plugins([custom_nodes], disable_all=True).plugins == []
    scan = load_plugins([custom_nodes], disable_all=True, whitelist=["pack_b", "mod_c.py"])
    assert [p.name for p in scan.plugins] == ["mod_c", "pack_b"]
    assert [path.name for path, _ in scan.skipped] == ["pack_a"]
    # a whitelist alone does nothing (as in ComfyUI)
    assert len(load_plugins([custom_nodes], whitelist=["pack_b"]).plugins) == 3


def test_web_directory_discovery(custom_nodes: Path) -> None:
    pack = package(custom_nodes, "webpack", {"WebNode": ""}, web="./js")
    write(pack / "js" / "main.js", "// main")
    write(pack / "js" / "sub" / "helper.js", "// helper")
    write(pack / "js" / "style.css", "body{}")
    package(custom_nodes, "badweb", {"BadWebNode": ""}, web="./missing")
    scan = load_plugins([custom_nodes])
    plugins = {p.name: p for p in scan.plugins}
    assert plugins["webpack"].web_directory == pack / "js"
    assert plugins["webpack"].web_files() == ["/extensions/webpack/main.js", "/extensions/webpack/sub/helper.js"]
    assert plugins["badweb"].web_directory is None and "not a directory" in plugins["badweb"].warnings[0]
    assert scan.web_directories() == {"webpack": pack / "js"}


def test_builtin_names_are_protected_and_later_plugins_win(custom_nodes: Path) -> None:
    package(custom_nodes, "a_first", {"Shared": "-first", "PrimitiveInt": ""})
    package(custom_nodes, "b_second", {"Shared": "-second"})
    registry = NodeRegistry()
    report = build_registry(registry, custom_node_dirs=[custom_nodes])
    assert registry.python_module("PrimitiveInt") == "nodes"
    assert registry.get("Shared")().go("x") == ("x-second",)
    assert registry.python_module("Shared") == "custom_nodes.b_second"
    assert registry.get("Shared").RELATIVE_PYTHON_MODULE == "custom_nodes.b_second"
    warnings = {p.name: p.warnings for p in report.plugins.plugins}
    assert any("built-in" in w for w in warnings["a_first"])
    assert any("replaces the one from plugin 'a_first'" in w for w in warnings["b_second"])
    assert registry.display_name("Shared") == "Shared display"
    info = registry.object_info("Shared")
    assert info["python_module"] == "custom_nodes.b_second" and info["input"]["required"]["text"] == ["STRING", {"default": "hi"}]


def test_invalid_mapping_entries_are_skipped(custom_nodes: Path) -> None:
    package(custom_nodes, "odd_pack", {"Fine": ""},
            extra="NODE_CLASS_MAPPINGS['NotAClass'] = 3\nclass Half: pass\nNODE_CLASS_MAPPINGS['Half'] = Half\n")
    registry = NodeRegistry()
    report = build_registry(registry, custom_node_dirs=[custom_nodes])
    assert "Fine" in registry and "NotAClass" not in registry and "Half" not in registry
    assert len(report.plugins.plugins[0].warnings) == 2


def test_example_plugin_loads(tmp_path: Path) -> None:
    registry = NodeRegistry()
    report = build_registry(registry, custom_node_dirs=[REPO / "custom_nodes"])
    example = {p.name: p for p in report.plugins.plugins}["example_plexus_plugin"]
    assert example.is_ok, example.traceback
    assert {"ExampleRepeatText", "ExampleCountSteps", "ExampleSaveText"} <= set(registry.names())
    assert registry.display_name("ExampleSaveText") == "Save Text (example)"
    assert example.web_files() == ["/extensions/example_plexus_plugin/example.js"]
    assert report.builtin_failures == [] and "PrimitiveInt" in report.builtin_names


def test_failing_builtin_module_is_reported(tmp_path: Path) -> None:
    registry = NodeRegistry()
    report = build_registry(registry, builtin_modules=["nodes.builtin.utility", "nodes.builtin.no_such_module"])
    assert "PrimitiveInt" in registry
    assert [f.module for f in report.builtin_failures] == ["nodes.builtin.no_such_module"]
    assert any("no_such_module" in line for line in report.lines())


def test_plugin_nodes_run_through_the_engine(custom_nodes: Path, tmp_path: Path) -> None:
    from execution.events import EventBus
    from execution.executor import Engine, PromptRecord
    from nodes import services
    from storage.folders import Folders

    package(custom_nodes, "engine_pack", {"EngineNode": "!"})
    registry = NodeRegistry()
    build_registry(registry, custom_node_dirs=[custom_nodes, REPO / "custom_nodes"])
    events = EventBus()
    seen: list[str] = []
    events.subscribe(lambda event: seen.append(event.type))
    services.install(services.NodeServices(Folders(tmp_path / "base")))
    try:
        engine = Engine(registry, events)
        prompt = {"1": {"class_type": "PrimitiveString", "inputs": {"value": "a"}},
                  "2": {"class_type": "EngineNode", "inputs": {"text": ["1", 0]}},
                  "3": {"class_type": "ExampleRepeatText", "inputs": {"text": ["2", 0], "times": 2}},
                  "4": {"class_type": "ExampleCountSteps", "inputs": {"steps": 3}},
                  "5": {"class_type": "ExampleSaveText", "inputs": {"text": ["3", 0], "filename_prefix": "e"}},
                  "6": {"class_type": "PreviewAny", "inputs": {"source": ["4", 0]}}}
        validation = engine.validate(prompt)
        assert validation.ok and not validation.node_errors, validation.to_response()
        result = engine.execute(PromptRecord(prompt_id="p1", prompt=prompt,
                                             outputs_to_execute=validation.outputs_to_execute))
    finally:
        services.install(None)
    assert result.status == "success", result.error
    assert (tmp_path / "base" / "output" / "e_00001_.txt").read_text() == "a! a!"
    assert result.outputs["5"]["files"] == [{"filename": "e_00001_.txt", "subfolder": "", "type": "output"}]
    assert result.outputs["6"]["text"] == ["3"]
    assert seen.count("progress") == 3 and "execution_success" in seen


def test_services_feed_model_lists(tmp_path: Path) -> None:
    from nodes import services
    from nodes.spec import Combo, node
    from storage.folders import Folders

    @node("ListsCheckpoints", category="loaders")
    class ListsCheckpoints:
        ckpt_name = Combo(services.file_list("checkpoints"))
        RETURNS = ("MODEL",)

        def run(self, ckpt_name):
            return (services.folders().find("checkpoints", ckpt_name),)

    assert ListsCheckpoints.INPUT_TYPES()["required"]["ckpt_name"] == ([],)   # nothing installed yet
    folders = Folders(tmp_path)
    (tmp_path / "models" / "checkpoints").mkdir(parents=True)
    (tmp_path / "models" / "checkpoints" / "a.safetensors").write_bytes(b"")
    services.install(services.NodeServices(folders))
    try:
        assert ListsCheckpoints.INPUT_TYPES()["required"]["ckpt_name"] == (["a.safetensors"],)
        assert ListsCheckpoints().run("a.safetensors")[0].name == "a.safetensors"
    finally:
        services.install(None)
    with pytest.raises(LookupError, match="install"):
        services.folders()
