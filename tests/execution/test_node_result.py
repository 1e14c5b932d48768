"""execution.protocol.read_result / node_result: the one reading of what a node's FUNCTION returned."""
from __future__ import annotations

from execution.protocol import ExecutionBlocker, NodeResult, node_result, read_result


def test_outputs_returned_directly() -> None:
    assert read_result((1, 2)) == NodeResult((1, 2), None, None)
    blocker = ExecutionBlocker("stop")
    assert read_result(blocker).result is blocker


def test_the_classic_dict_and_its_round_trip() -> None:
    returned = read_result({"ui": {"text": ["a"]}, "result": (3,), "expand": {"n": {}}})
    assert returned == NodeResult((3,), {"text": ["a"]}, {"n": {}})
    assert read_result({"ui": "not a dict"}) == NodeResult((), None, None)     # ignored, no outputs
    assert node_result((3,), ui={"text": ["a"]}) == {"result": (3,), "ui": {"text": ["a"]}}
    assert node_result(()) == {"result": ()}
    assert read_result(node_result((4,), expand={"g": {}})) == NodeResult((4,), None, {"g": {}})
