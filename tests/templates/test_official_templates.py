"""Every official template whose node types Plexus registers passes `main.py check` (with empty
placeholder files for the models it names and generated input images); the browser index marks the others
as unsupported. The end-to-end runs on tiny models are tests/templates/test_template_runs.py.

The templates come from the pinned ``comfyui-workflow-templates-json`` (requirements.txt). The same
walk, with counts and the docs/templates.md table, is ``scripts/templates_report.py``.
"""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "scripts"))
import templates_report  # noqa: E402

from web.template_catalog import UNSUPPORTED_TAG, assess, mark_index, workflow_node_types  # noqa: E402

FOLDER = templates_report.templates_dir()


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory: pytest.TempPathFactory) -> list[templates_report.Outcome]:
    return templates_report.survey(tmp_path_factory.mktemp("templates-base"))


def test_the_pinned_package_has_the_whole_index(outcomes) -> None:
    assert FOLDER is not None, "comfyui-workflow-templates-json (requirements.txt) is not installed"
    assert len(outcomes) > 600 and len({o.name for o in outcomes}) == len(outcomes)


def test_every_template_with_known_node_types_passes_check(outcomes) -> None:
    candidates = [o for o in outcomes if not o.missing_types]
    assert candidates, "no template uses only node types Plexus has"
    failing = {o.name: o.check_errors for o in candidates if not o.checked}
    # Known (input images are generated now, so only these remain): image_lens_t2i and image_lens_turbo_t2i
    # (CLIPLoader type 'lens'), image_boogu_image_0_1_turbo_t2i ('boogu'), image_kandinsky5_t2i
    # ('kandinsky5_image'), image_newbieimage_exp0_1-t2i ('newbie') and image_longcat_text_to_image
    # ('longcat_image') need text-encoder types of families Plexus lacks; image_pixeldit_t2i (its node types
    # are all present since EmptyChromaRadianceLatentImage) names VAELoader's built-in 'pixel_space' entry
    # of the pixel-space families (Chroma Radiance, PixelDiT), which Plexus does not load. (basic_datatype_conversion's
    # PreviewAny display widgets, utility_interpolation_image_upscale's saved ImageCompare slider,
    # image_omnigen2_image_edit's GetImageSize text preview and its ImageScaleToTotalPixels saved without
    # the trailing resolution_steps, and the lens templates' two-value ResolutionSelector are editor
    # behaviours the converter follows: tests/execution/test_workflow_editor_widgets.py.)
    known = {"image_lens_t2i",
             "image_lens_turbo_t2i", "image_boogu_image_0_1_turbo_t2i", "image_kandinsky5_t2i",
             "image_newbieimage_exp0_1-t2i", "image_longcat_text_to_image", "image_pixeldit_t2i"}
    for name in ("image_lens_t2i", "image_lens_turbo_t2i"):   # past the ResolutionSelector now
        assert "widget count mismatch" not in " ".join(failing.get(name, [])), failing.get(name)
    assert set(failing) == known, {name: errors for name, errors in failing.items() if name not in known}


def test_the_docs_table_lists_what_is_missing(outcomes) -> None:
    facts = templates_report.summary(outcomes)
    text = templates_report.markdown(outcomes, facts, "test")
    lacking = [o for o in outcomes if o.missing_types]
    assert all(f"| {o.name} |" in text for o in lacking)
    assert f"templates in the index: {len(outcomes)}" in text


def test_workflow_node_types_skip_subgraphs_notes_and_muted_nodes() -> None:
    workflow = {
        "nodes": [{"type": "KSampler"}, {"type": "MarkdownNote"}, {"type": "sub-1"}, {"type": "SaveVideo", "mode": 4},
                  {"type": "LoadVideo", "mode": 2}],
        "definitions": {"subgraphs": [{"id": "sub-1", "nodes": [{"type": "VAEDecode"}, {"type": "Reroute"}]}]},
    }
    assert workflow_node_types(workflow) == {"KSampler", "VAEDecode"}


def test_index_marks_unsupported_templates_without_hiding_them() -> None:
    index = [{"moduleName": "default", "title": "Image", "templates": [
        {"name": "ok", "title": "OK", "description": "d", "models": ["SD1.5"], "tags": []},
        {"name": "video", "title": "Video", "description": "d", "models": ["Wan"], "tags": ["Video"]},
        {"name": "nodes", "title": "Nodes", "description": "d", "models": [], "tags": []},
    ]}]
    workflows = {"ok": {"nodes": [{"type": "KSampler"}]}, "video": {"nodes": [{"type": "KSampler"}]},
                 "nodes": {"nodes": [{"type": "SaveVideo"}]}}
    marked = mark_index(index, workflows.get, {"KSampler"})
    ok, video, nodes = marked[0]["templates"]
    assert ok == index[0]["templates"][0]
    assert video["title"].endswith("(not supported by Plexus)") and "Wan" in video["description"]
    assert UNSUPPORTED_TAG in video["tags"] and "Video" in video["tags"]
    assert "missing nodes: SaveVideo" in nodes["description"]
    assert assess({"name": "gone"}, None, set()).reason() == "its workflow file is not installed"
    assert index[0]["templates"][1]["title"] == "Video"   # the input is not modified
