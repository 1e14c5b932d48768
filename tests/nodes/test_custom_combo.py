"""CustomCombo (newer ComfyUI, the editor's user-written dropdown): the saved workflow's widgets (choice, the
hidden index, the option texts) convert to the prompt the editor sends, and the node outputs the choice and
its index through the Engine, whatever text the choice is (the options live in the editor)."""
from __future__ import annotations

import pytest

from execution.workflow import workflow_to_prompt
from tests.execution.test_workflow import graph, i, n
from tests.nodes.engine_harness import Capture, Harness


@pytest.fixture
def harness(tmp_path):
    h = Harness(tmp_path)
    h.registry.register("TestCapture", Capture)
    Capture.seen = []
    yield h
    h.close()


def _saved(widgets) -> dict:
    """A CustomCombo as basic_image_color_adjustment saves it, its STRING and INDEX outputs captured."""
    combo = n(1, "CustomCombo", inputs=[i("choice", "COMBO", widget=True)], widgets=widgets)
    combo["outputs"] = [{"name": "STRING", "type": "STRING", "links": [1]}, {"name": "INDEX", "type": "INT",
                                                                              "links": [2]}]
    captures = [n(2, "TestCapture", inputs=[i("value", "*", 1)]), n(3, "TestCapture", inputs=[i("value", "*", 2)])]
    return graph(combo, *captures, links=[[1, 1, 0, 2, 0, "STRING"], [2, 1, 1, 3, 0, "INT"]])


def test_saved_widgets_convert_to_choice_and_index(harness) -> None:
    prompt = workflow_to_prompt(_saved(["screen", 1, "add", "screen", "soft", "overlay", "lighten", ""]),
                                harness.registry)
    assert prompt["1"]["inputs"] == {"choice": "screen", "index": 1}
    # an editor without the index widget saved only the options after the choice: no index, not "add"
    older = workflow_to_prompt(_saved(["screen", "add", "screen", ""]), harness.registry)
    assert older["1"]["inputs"] == {"choice": "screen"}


def test_custom_combo_outputs_the_choice_and_its_index(harness) -> None:
    prompt = workflow_to_prompt(_saved(["Latin Dance", 3, "Chinese Classic", "K-Pop", "Street", "Latin Dance", ""]),
                                harness.registry)
    result = harness.run(prompt)
    assert result.status == "success", result.error
    assert sorted(map(str, Capture.seen)) == ["3", "Latin Dance"]
    Capture.seen = []
    del prompt["1"]["inputs"]["index"]
    assert harness.run(prompt).status == "success" and sorted(map(str, Capture.seen)) == ["0", "Latin Dance"]


def test_object_info_has_an_empty_combo_and_the_two_outputs(harness) -> None:
    info = harness.registry.object_info("CustomCombo")
    assert info["input"]["required"]["choice"][0] == [] and info["output"] == ["STRING", "INT"]
    assert info["output_name"] == ["STRING", "INDEX"] and info["category"] == "utils"
    assert info["experimental"] is True
