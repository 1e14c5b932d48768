"""Every core node Plexus registers beyond CORE_NODES has the interface of ComfyUI 0.3.64's.

``tests/data/comfyui_core_specs_0364.json`` holds the stripped ``/object_info`` of all 364 core
nodes of ComfyUI 0.3.64 (its ``nodes`` and ``comfy_extras`` modules; see ``core_specs.py`` for how it
is made). ``test_core_node_specs.py`` keeps checking the CORE_NODES against the newer 0.8.0 fixture;
this test takes every other registered node that the 0.3.64 set has and compares it field by field.
A node added to Plexus that ComfyUI 0.3.64 has is thereby checked the moment it is registered.

Nodes newer than 0.3.64 (the 2026 logic and primitive nodes) are not in this fixture; their own tests
state where their specs come from. ``DELIBERATE_DIFFERENCES`` lists fields kept different on purpose,
with the reason; a listed field that starts to match fails the test until it is removed.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from execution.registry import NodeRegistry
from nodes import services
from nodes.registry import register_builtins
from storage.folders import Folders
from tests.compat.core_specs import ALL_CORE_FIXTURE, CORE_NODES, canonical, differences, load_fixture

ALL = load_fixture(ALL_CORE_FIXTURE)
ALL_NODES: dict = ALL["nodes"]

# {class_type: {field path: reason}}: differences from 0.3.64 kept on purpose.
_PREVIEW_ANY = ("Plexus's PreviewAny follows the newer ComfyUI node (display name 'Preview as Text', "
                "a STRING output, category 'utilities'); kept so graphs wired to that output keep working")
_CFG_NORM = ("newer ComfyUI adds the optional 'pre_cfg' widget (norm-rescaled CFG combination); the official "
             "templates (image_longcat_text_to_image, the Qwen edit and Lens ones) save it, so 0.3.64's two "
             "widgets would not map their widgets_values")
DELIBERATE_DIFFERENCES: dict[str, dict[str, str]] = {
    "CFGNorm": {"input.optional.pre_cfg": _CFG_NORM, "input_order": _CFG_NORM},
    "PreviewAny": {field: _PREVIEW_ANY for field in
                   ("category", "display_name", "output", "output_is_list", "output_name")},
    "LoadImageOutput": {"input.required.image.options.remote": (
        "ComfyUI 0.3.64 sends this 'remote' option too (its live /object_info has it); the fixture "
        "replaced the remote combo by a file-list marker and dropped it. The editor needs it for the "
        "refresh button (/internal/files/output)")},
}


def _registered_names() -> list[str]:
    folders_root = Path(__file__).resolve().parent  # only read: no node writes at registration
    registry = NodeRegistry()
    services.install(services.NodeServices(Folders(folders_root)))
    try:
        register_builtins(registry)
    finally:
        services.install(None)
    return sorted(name for name in ALL_NODES if name in registry and name not in CORE_NODES)


def test_fixture_is_the_whole_core_set_and_structure_only() -> None:
    source = ALL["_source"]
    assert source["project"] == "ComfyUI" and source["version"] == "0.3.64"
    assert len(ALL_NODES) > 300
    assert {"KSampler", "CLIPTextEncodeSDXL", "ModelMergeSimple", "FreeU", "ImageBlend"} <= ALL_NODES.keys()
    text = json.dumps(ALL_NODES)
    for free_text in ('"tooltip"', '"description"', '"placeholder"', '"output_tooltips"'):
        assert free_text not in text


def test_deliberate_differences_name_registered_fixture_nodes(registry: NodeRegistry) -> None:
    for class_type in DELIBERATE_DIFFERENCES:
        assert class_type in ALL_NODES and class_type in registry, class_type


@pytest.mark.parametrize("class_type", _registered_names())
def test_registered_node_matches_comfyui_0364(registry: NodeRegistry, class_type: str) -> None:
    found = differences(canonical(ALL_NODES[class_type]), canonical(registry.object_info(class_type)))
    kept = DELIBERATE_DIFFERENCES.get(class_type, {})
    unexpected = found.keys() - kept.keys()
    assert not unexpected, f"{class_type} differs from ComfyUI 0.3.64:\n" + "\n".join(
        f"  {path}: ComfyUI {found[path][0]!r}, Plexus {found[path][1]!r}" for path in sorted(unexpected))
    fixed = kept.keys() - found.keys()
    assert not fixed, f"{class_type} now matches on {sorted(fixed)}: remove them from DELIBERATE_DIFFERENCES"


def test_every_model_file_list_reads_the_folder_comfyui_lists() -> None:
    """A loader input whose choices ComfyUI fills from a model folder declares that same folder
    (``services.file_list``), and no other input declares one: the fixture's spec comparison accepts
    any list for a file list, so a loader reading the wrong folder would pass it unnoticed."""
    from nodes.spec import file_inputs

    registry = NodeRegistry()
    register_builtins(registry)
    checked = 0
    for name in registry:
        declared = file_inputs(registry.get(name))
        entry = ALL_NODES.get(name)
        if entry is None:
            continue
        expected = {}
        for inputs in canonical(entry)["input"].values():
            for key, spec in inputs.items():
                choices = spec["choices"]
                if isinstance(choices, dict) and choices.get("$file_list") not in (None, "input", "output", "input/<subfolders>"):
                    expected[key] = choices["$file_list"]
        assert declared == expected, name
        checked += bool(expected)
    assert checked >= 12
