"""Widgets the newer editor draws beyond a node's INT/FLOAT/STRING/BOOLEAN/combo inputs, in saved workflows.

Two kinds (execution/workflow.py, EDITOR_WIDGET_TYPES and EDITOR_ADDED_WIDGETS): inputs of a type the
editor has its own widget for (ImageCompare's IMAGECOMPARE slider), and display widgets an editor
extension appends to a core node (PreviewAny's preview_markdown, preview_text, previewMode). Editor
versions save either kind as nothing, nulls or a value; none may shift the real widgets' values.
"""
from __future__ import annotations

import pytest

from execution.errors import PlexusError
from execution.registry import NodeRegistry
from execution.workflow import workflow_to_prompt
from tests.execution.test_workflow import graph, i, n


class PreviewAny:  # ComfyUI's spec: one "*" socket, no widgets
    RETURN_TYPES = ("STRING",)
    FUNCTION = "run"
    OUTPUT_NODE = True

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"source": ("*", {})}}


class ImageCompare:  # the newer ComfyUI node: two optional images and the editor's compare_view slider
    RETURN_TYPES = ()
    FUNCTION = "run"
    OUTPUT_NODE = True

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"compare_view": ("IMAGECOMPARE", {})},
                "optional": {"image_a": ("IMAGE", {}), "image_b": ("IMAGE", {})}}


class Tint:  # an editor-drawn widget (COLOR) between two classic ones
    RETURN_TYPES = ("IMAGE",)
    FUNCTION = "run"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"strength": ("FLOAT", {"default": 0.5}), "color": ("COLOR", {"default": "#ffffff"}),
                             "mode": (["add", "multiply"],)}}


class GetImageSize:  # ComfyUI's spec: one IMAGE socket, no widgets; it sends its size as progress text
    RETURN_TYPES = ("INT", "INT", "INT")
    FUNCTION = "run"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"image": ("IMAGE", {})}}


class Resolution:  # a node that gained a trailing widget after some workflows were saved
    RETURN_TYPES = ("INT", "INT")
    FUNCTION = "run"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"aspect_ratio": (["1:1 (Square)", "16:9"], {}),
                             "megapixels": ("FLOAT", {"default": 1.0}),
                             "multiple": ("INT", {"default": 16})}}


@pytest.fixture(scope="module")
def registry() -> NodeRegistry:
    registry = NodeRegistry()
    for cls in (PreviewAny, ImageCompare, Tint, GetImageSize, Resolution):
        registry.register(cls.__name__, cls)
    return registry


def _inputs(registry, node_type: str, widgets, inputs=()) -> dict:
    return workflow_to_prompt(graph(n(3, node_type, inputs=inputs, widgets=widgets)), registry)["3"]["inputs"]


@pytest.mark.parametrize("widgets", [None, [], [None], [None, None], [None, None, None], [None, None, False],
                                     [None, None, True], ["", "", False]])
def test_preview_any_display_widgets_are_never_inputs(registry, widgets) -> None:
    # [None, None, False]: the frontend's previewAny.ts persists only the previewMode toggle
    # (basic_datatype_conversion); ["", "", False]: an editor that persisted the two text widgets too
    assert _inputs(registry, "PreviewAny", widgets, inputs=[i("source", "*")]) == {}


def test_preview_any_with_more_values_than_its_editor_widgets_is_still_a_mismatch(registry) -> None:
    with pytest.raises(PlexusError, match=r"PreviewAny #3: widget count mismatch: 4 widgets_values"):
        _inputs(registry, "PreviewAny", [None, None, False, 7])


def test_image_compare_slider_value_is_sent_and_an_unsaved_one_left_out(registry) -> None:
    sockets = [i("image_a", "IMAGE"), i("image_b", "IMAGE")]
    view = {"before": "/api/view?filename=a.png&type=temp", "after": "/api/view?filename=b.png&type=temp"}
    # utility_interpolation_image_upscale saved the slider's state; the editor sends it as the input
    assert _inputs(registry, "ImageCompare", [view], sockets) == {"compare_view": view}
    # the newest editor does not persist the widget (saves [] or a null), older ones had no widget at all
    for widgets in (None, [], [None]):
        assert _inputs(registry, "ImageCompare", widgets, sockets) == {}


def test_an_editor_widget_between_classic_ones_is_optional_and_keeps_the_others_in_place(registry) -> None:
    assert _inputs(registry, "Tint", [0.25, "#102030", "multiply"]) == {
        "strength": 0.25, "color": "#102030", "mode": "multiply"}
    assert _inputs(registry, "Tint", [0.25, "multiply"]) == {"strength": 0.25, "mode": "multiply"}
    assert _inputs(registry, "Tint", [0.25, None, "multiply"]) == {"strength": 0.25, "mode": "multiply"}
    assert _inputs(registry, "Tint", None) == {"strength": 0.5, "color": "#ffffff", "mode": "add"}
    with pytest.raises(PlexusError, match=r"widget count mismatch"):
        _inputs(registry, "Tint", [0.25, "#102030", "multiply", "extra"])


def test_get_image_size_progress_text_widget_is_display_only(registry) -> None:
    # image_omnigen2_image_edit (saved by an editor of ComfyUI 0.3.42) kept the "$$node-text-preview" text
    sockets = [i("image", "IMAGE")]
    for widgets in (None, [], ["width: 1365, height: 768\n batch size: 1"]):
        assert _inputs(registry, "GetImageSize", widgets, sockets) == {}
    with pytest.raises(PlexusError, match=r"GetImageSize #3: widget count mismatch"):
        _inputs(registry, "GetImageSize", ["width: 1, height: 1", "extra"], sockets)
    with pytest.raises(PlexusError, match=r"GetImageSize #3: widget count mismatch"):
        _inputs(registry, "GetImageSize", [7], sockets)       # not a text: not the preview's value


def test_missing_trailing_widgets_take_their_defaults_and_a_surplus_is_refused(registry) -> None:
    # image_lens_t2i saved ResolutionSelector as ["1:1 (Square)", 2]: the editor leaves `multiple` at 16
    assert _inputs(registry, "Resolution", ["1:1 (Square)", 2]) == {
        "aspect_ratio": "1:1 (Square)", "megapixels": 2, "multiple": 16}
    assert _inputs(registry, "Resolution", ["16:9"]) == {"aspect_ratio": "16:9", "megapixels": 1.0, "multiple": 16}
    assert _inputs(registry, "Resolution", ["16:9", 2, 8]) == {"aspect_ratio": "16:9", "megapixels": 2, "multiple": 8}
    with pytest.raises(PlexusError, match=r"Resolution #3: widget count mismatch: 4 widgets_values"):
        _inputs(registry, "Resolution", ["16:9", 2, 8, 1])
