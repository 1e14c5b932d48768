"""Plexus's core nodes have ComfyUI's interface: same inputs, widgets, combos, outputs and category.

The reference is ``tests/data/comfyui_core_specs.json`` (ComfyUI's ``/object_info``, structure only;
see ``tests/compat/core_specs.py`` for how it is made and compared). Wording (tooltips,
descriptions) is ours and is not compared; a combo backed by a file list only has to be a list.

Explicit lists keep this test green while work is in flight, and each fails when it goes stale:
``NOT_YET_IMPLEMENTED`` (a node listed there that gets registered fails the test until it is
removed from the set), ``KNOWN_MISMATCHES`` (bugs; a listed field that starts to match fails the
test until it is removed) and ``DELIBERATE_DIFFERENCES`` (the same check, for differences we keep).
Anything not listed fails at once.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from execution.registry import NodeRegistry
from tests.compat.core_specs import CORE_NODES, canonical, differences, load_fixture

FIXTURE = load_fixture()
FIXTURE_NODES: dict = FIXTURE["nodes"]

# Fixture nodes no built-in module registers yet. Remove a name when its node lands (the test
# fails until you do), never add one to silence a regression.
NOT_YET_IMPLEMENTED: frozenset[str] = frozenset()

# Fields (paths as produced by core_specs.differences) where a registered node still differs from
# ComfyUI 0.8.0, as found when this test was written. Each is a bug to fix in the node module named;
# remove the entry in the same change.
KNOWN_MISMATCHES: dict[str, frozenset[str]] = {}

# Differences kept on purpose (checked like KNOWN_MISMATCHES: listed fields must still differ).
DELIBERATE_DIFFERENCES: dict[str, frozenset[str]] = {
    # ComfyUI 0.8.0 moved this node to a v3 module without a display name and sends null (its
    # editor's locale files supply "Scale Image to Total Pixels"); we send that name ourselves.
    "ImageScaleToTotalPixels": frozenset({"display_name"}),
}


def _allowed(class_type: str) -> frozenset[str]:
    return KNOWN_MISMATCHES.get(class_type, frozenset()) | DELIBERATE_DIFFERENCES.get(class_type, frozenset())


def test_fixture_is_structure_only_and_complete() -> None:
    source = FIXTURE["_source"]
    assert source["project"] == "ComfyUI" and source["version"]
    assert list(FIXTURE_NODES) == list(CORE_NODES)
    text = json.dumps(FIXTURE_NODES)
    for free_text in ('"tooltip"', '"description"', '"placeholder"', '"output_tooltips"'):
        assert free_text not in text


def test_bookkeeping_names_are_fixture_nodes() -> None:
    assert NOT_YET_IMPLEMENTED <= FIXTURE_NODES.keys()
    assert KNOWN_MISMATCHES.keys() | DELIBERATE_DIFFERENCES.keys() <= FIXTURE_NODES.keys()
    assert not NOT_YET_IMPLEMENTED & (KNOWN_MISMATCHES.keys() | DELIBERATE_DIFFERENCES.keys())


def _describe(found: dict, paths) -> str:
    return "\n".join(f"  {path}: ComfyUI {found[path][0]!r}, Plexus {found[path][1]!r}"
                     for path in sorted(paths))


@pytest.mark.parametrize("class_type", list(FIXTURE_NODES))
def test_node_matches_comfyui(registry: NodeRegistry, class_type: str) -> None:
    if class_type in NOT_YET_IMPLEMENTED:
        assert class_type not in registry, (
            f"{class_type} is registered now: remove it from NOT_YET_IMPLEMENTED in {Path(__file__).name}")
        return
    assert class_type in registry, (
        f"{class_type} is not registered by any built-in module; it was (or it belongs in "
        f"NOT_YET_IMPLEMENTED with a comment saying who is writing it)")
    found = differences(canonical(FIXTURE_NODES[class_type]), canonical(registry.object_info(class_type)))
    known = _allowed(class_type)
    unexpected = found.keys() - known
    assert not unexpected, f"{class_type} differs from ComfyUI {FIXTURE['_source']['version']}:\n" + \
        _describe(found, unexpected)
    fixed = known - found.keys()
    assert not fixed, (f"{class_type} now matches ComfyUI on {sorted(fixed)}: "
                       f"remove them from KNOWN_MISMATCHES / DELIBERATE_DIFFERENCES")


def test_sampler_and_scheduler_lists_agree_across_nodes(registry: NodeRegistry) -> None:
    """Every node that offers samplers (schedulers) offers the same list, in the same order."""
    def choices(class_type: str, name: str) -> list:
        return canonical(registry.object_info(class_type))["input"]["required"][name]["choices"]

    samplers = [choices(ct, "sampler_name") for ct in ("KSampler", "KSamplerAdvanced", "KSamplerSelect")
                if ct in registry]
    schedulers = [choices(ct, "scheduler") for ct in ("KSampler", "KSamplerAdvanced", "BasicScheduler")
                  if ct in registry]
    assert all(s == samplers[0] for s in samplers)
    assert all(s == schedulers[0] for s in schedulers)
