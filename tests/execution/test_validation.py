"""Validation before anything runs: each ComfyUI error type, all at once, with helpful messages."""
from __future__ import annotations

import json
from typing import ClassVar

import pytest

from execution import Engine, EventBus
from tests.execution.executor_nodes import make_registry


@pytest.fixture
def engine() -> Engine:
    return Engine(make_registry(), EventBus())


def out(source: str, index: int = 0) -> dict:
    return {"class_type": "Output", "inputs": {"value": [source, index]}}


def node_error_types(result) -> dict[str, list[str]]:
    return {node_id: [e["type"] for e in entry["errors"]] for node_id, entry in result.node_errors.items()}


def only_issue(result) -> tuple[str, dict]:
    """The single node error of a result (asserting there is exactly one)."""
    pairs = [(node_id, e) for node_id, entry in result.node_errors.items() for e in entry["errors"]]
    assert len(pairs) == 1, result.node_errors
    return pairs[0]


def test_a_valid_prompt_passes_and_names_its_outputs(engine):
    result = engine.validate({"1": {"class_type": "Const", "inputs": {"value": "3"}}, "2": out("1")})
    assert result.ok and result.error is None and result.node_errors == {}
    assert result.outputs_to_execute == ["2"]


@pytest.mark.parametrize("prompt", ["{not json", "[1, 2]", '"text"', 42, {"1": "x"},
                                    {"1": {"class_type": "Const", "inputs": [1]}}])
def test_malformed_or_misshapen_prompts_are_invalid_prompt(engine, prompt):
    result = engine.validate(prompt)
    assert not result.ok and result.error["type"] == "invalid_prompt"
    assert set(result.error) == {"type", "message", "details", "extra_info"}


def test_a_json_text_prompt_is_accepted(engine):
    assert engine.validate(json.dumps({"1": {"class_type": "Const", "inputs": {"value": 1}}, "2": out("1")})).ok


def test_unknown_class_is_comfyuis_invalid_prompt_naming_node_and_class(engine):
    result = engine.validate({"1": {"class_type": "Cnst", "inputs": {"value": 1}}, "2": out("1"),
                              "3": {"inputs": {}}})
    assert not result.ok and result.node_errors == {}
    assert result.error == {"type": "invalid_prompt",
                            "message": "Cannot execute because node Cnst does not exist.",
                            "details": "Node ID '#1'",
                            "extra_info": {"node_id": "1", "class_type": "Cnst", "did_you_mean": "Const"}}


def test_missing_class_type_is_comfyuis_invalid_prompt_naming_the_node(engine):
    result = engine.validate({"1": {"class_type": "Const", "inputs": {"value": 1}}, "2": out("1"),
                              "3": {"inputs": {}}, "4": {"class_type": "Nope", "inputs": {}}})
    assert not result.ok and result.node_errors == {}
    assert result.error["type"] == "invalid_prompt"
    assert result.error["message"] == "Cannot execute because a node is missing the class_type property."
    assert result.error["details"] == "Node ID '#3'"


def test_a_class_type_that_is_not_a_string_is_an_unknown_class(engine):
    result = engine.validate({"1": {"class_type": 7, "inputs": {}}})
    assert result.error["message"] == "Cannot execute because node 7 does not exist."
    assert "did_you_mean" not in result.error["extra_info"]


@pytest.mark.parametrize("prompt", [{}, {"1": {"class_type": "Const", "inputs": {"value": 1}}}])
def test_an_empty_prompt_or_one_without_output_nodes_has_no_outputs(engine, prompt):
    result = engine.validate(prompt)
    assert not result.ok and result.node_errors == {}
    assert result.error["type"] == "prompt_no_outputs" and result.error["message"] == "Prompt has no outputs"
    assert "OUTPUT_NODE" in result.error["details"]


def test_required_input_missing(engine):
    result = engine.validate({"1": {"class_type": "Add", "inputs": {"a": 1}}, "2": out("1")})
    assert not result.ok and result.error["type"] == "prompt_outputs_failed_validation"
    node_id, error = only_issue(result)
    assert node_id == "1" and error["type"] == "required_input_missing"
    assert error["details"] == "b" and error["extra_info"]["input_name"] == "b"
    assert "Add #1" in error["message"] and "'b'" in error["message"]
    assert result.node_errors["1"]["dependent_outputs"] == ["2"]
    assert result.node_errors["1"]["class_type"] == "Add"


@pytest.mark.parametrize("link, reason", [(["9", 0], "not in the prompt"), (["1", 3], "output"),
                                          (["1", 0, 1], "bad link")])
def test_bad_links(engine, link, reason):
    result = engine.validate({"1": {"class_type": "Const", "inputs": {"value": 1}},
                              "2": {"class_type": "Add", "inputs": {"a": link, "b": 1}}, "3": out("2")})
    node_id, error = only_issue(result)
    assert node_id == "2" and error["type"] == "bad_linked_input" and reason in error["message"]


def test_type_mismatch_between_linked_output_and_input(engine):
    result = engine.validate({"1": {"class_type": "Const", "inputs": {"value": 1}},
                              "2": {"class_type": "UseModel", "inputs": {"model": ["1", 0], "strength": 1}},
                              "3": out("2")})
    _, error = only_issue(result)
    assert error["type"] == "return_type_mismatch"
    assert error["details"] == "model, received_type(INT) mismatch input_type(MODEL)"
    assert "Const #1" in error["message"]


def test_union_and_any_types_match(engine):
    result = engine.validate({"1": {"class_type": "LoadModel", "inputs": {"name": "m"}},
                              "2": {"class_type": "UseModel", "inputs": {"model": ["1", 0], "strength": 1}},
                              "3": {"class_type": "UseModel", "inputs": {"model": ["2", 0], "strength": 1}},
                              "4": out("3")})
    assert result.ok, result.node_errors


def test_literal_where_only_a_link_fits(engine):
    result = engine.validate({"1": {"class_type": "UseModel", "inputs": {"model": "sd15", "strength": 1}},
                              "2": out("1")})
    _, error = only_issue(result)
    assert error["type"] == "invalid_input_type" and "from a link" in error["message"]


@pytest.mark.parametrize("value", ["abc", None, float("nan"), float("inf"), {"x": 1}])
def test_value_of_the_wrong_type_or_nan(engine, value):
    result = engine.validate({"1": {"class_type": "Const", "inputs": {"value": value}}, "2": out("1")})
    _, error = only_issue(result)
    assert error["type"] == "invalid_input_type" and error["extra_info"]["input_name"] == "value"


def test_float_nan_is_rejected(engine):
    result = engine.validate({"1": {"class_type": "Scale", "inputs": {"x": "nan", "mode": "double", "label": "",
                                                                      "enabled": True}}, "2": out("1")})
    assert only_issue(result)[1]["type"] == "invalid_input_type"


@pytest.mark.parametrize("x, kind", [(-1, "value_smaller_than_min"), (11, "value_bigger_than_max")])
def test_out_of_range(engine, x, kind):
    result = engine.validate({"1": {"class_type": "Scale", "inputs": {"x": x, "mode": "double", "label": "",
                                                                      "enabled": True}}, "2": out("1")})
    _, error = only_issue(result)
    assert error["type"] == kind and error["details"] == "x"


def test_value_not_in_combo_list_in_both_spellings(engine):
    result = engine.validate({
        "1": {"class_type": "Scale", "inputs": {"x": 1, "mode": "tripple", "label": "", "enabled": True}},
        "2": out("1"),
        "3": {"class_type": "Pick", "inputs": {"sampler": "euler_anc"}}, "4": out("3")})
    assert node_error_types(result) == {"1": ["value_not_in_list"], "3": ["value_not_in_list"]}
    assert "did you mean 'triple'?" in result.node_errors["1"]["errors"][0]["message"]
    pick = result.node_errors["3"]["errors"][0]
    assert "did you mean 'euler_ancestral'?" in pick["message"]
    assert pick["details"] == "sampler: 'euler_anc' not in ['euler', 'euler_ancestral', 'dpmpp_2m']"


def test_validate_inputs_failure_and_it_replaces_the_builtin_range_check(engine):
    failing = engine.validate({"1": {"class_type": "Checked", "inputs": {"value": 7}}, "2": out("1")})
    _, error = only_issue(failing)
    assert error["type"] == "custom_validation_failed" and "seven is not allowed" in error["message"]
    # 'value' is declared by VALIDATE_INPUTS, so max=10 is not checked by the engine
    assert engine.validate({"1": {"class_type": "Checked", "inputs": {"value": 50}}, "2": out("1")}).ok


def test_validate_inputs_input_types_skips_link_type_checks():
    class Flexible:
        @classmethod
        def INPUT_TYPES(cls):
            return {"required": {"thing": ("MODEL",)}}
        RETURN_TYPES = ("INT",)
        FUNCTION = "run"
        seen: ClassVar[dict] = {}

        @classmethod
        def VALIDATE_INPUTS(cls, input_types):
            cls.seen = input_types
            return True

        def run(self, thing):
            return (thing,)

    registry = make_registry()
    registry.register("Flexible", Flexible)
    engine = Engine(registry, EventBus())
    result = engine.validate({"1": {"class_type": "Const", "inputs": {"value": 1}},
                              "2": {"class_type": "Flexible", "inputs": {"thing": ["1", 0]}}, "3": out("2")})
    assert result.ok and Flexible.seen == {"thing": "INT"}


def test_exception_during_validation():
    class Broken:
        @classmethod
        def INPUT_TYPES(cls):
            return {"required": {"x": ("INT",)}}
        RETURN_TYPES = ("INT",)
        FUNCTION = "run"

        @classmethod
        def VALIDATE_INPUTS(cls, x):
            raise RuntimeError("cannot look")

    registry = make_registry()
    registry.register("Broken", Broken)
    result = Engine(registry, EventBus()).validate({"1": {"class_type": "Broken", "inputs": {"x": 1}},
                                                    "2": out("1")})
    _, error = only_issue(result)
    assert error["type"] == "exception_during_validation" and "cannot look" in error["message"]


def test_cycles_are_one_issue_each(engine):
    result = engine.validate({"1": {"class_type": "Add", "inputs": {"a": ["3", 0], "b": 1}},
                              "2": {"class_type": "Add", "inputs": {"a": ["1", 0], "b": 1}},
                              "3": {"class_type": "Add", "inputs": {"a": ["2", 0], "b": 1}},
                              "4": out("3")})
    node_id, error = only_issue(result)
    assert error["type"] == "dependency_cycle" and node_id == "1"
    assert "#1 needs #3 needs #2 needs #1" in error["message"]


def test_self_loop_is_a_cycle(engine):
    result = engine.validate({"1": {"class_type": "Add", "inputs": {"a": ["1", 0], "b": 1}}, "2": out("1")})
    assert only_issue(result)[1]["type"] == "dependency_cycle"


def test_a_valid_output_still_runs_when_another_is_invalid(engine):
    result = engine.validate({"1": {"class_type": "Const", "inputs": {"value": 1}}, "2": out("1"),
                              "3": {"class_type": "Add", "inputs": {"a": ["1", 0]}}, "4": out("3")})
    assert result.ok and result.outputs_to_execute == ["2"]
    assert result.node_errors["3"]["dependent_outputs"] == ["4"]


def test_all_errors_are_reported_at_once(engine):
    result = engine.validate({"1": {"class_type": "Const", "inputs": {"value": "x"}},
                              "2": {"class_type": "Add", "inputs": {"a": ["1", 0]}},
                              "3": out("2"),
                              "4": {"class_type": "Pick", "inputs": {"sampler": "nope"}}, "5": out("4")})
    assert not result.ok
    assert node_error_types(result) == {"1": ["invalid_input_type"], "2": ["required_input_missing"],
                                        "4": ["value_not_in_list"]}
    assert result.error["details"].count("\n") == 2


def test_shared_upstream_error_lists_every_dependent_output(engine):
    result = engine.validate({"1": {"class_type": "Const", "inputs": {"value": "x"}}, "2": out("1"), "3": out("1")})
    assert sorted(result.node_errors["1"]["dependent_outputs"]) == ["2", "3"]
    assert set(result.node_errors) == {"1"}   # downstream nodes are invalid but carry no errors


def test_partial_execution_targets(engine):
    prompt = {"1": {"class_type": "Const", "inputs": {"value": 1}}, "2": out("1"), "3": out("1")}
    assert engine.validate(prompt, ["3"]).outputs_to_execute == ["3"]
    assert engine.validate(prompt, ["1"]).error["type"] == "prompt_no_outputs"


def test_to_response_is_comfyui_shaped(engine):
    result = engine.validate({"1": {"class_type": "Const", "inputs": {}}, "2": out("1")})
    body = result.to_response()
    assert set(body) == {"error", "node_errors"}
    assert set(body["node_errors"]["1"]) == {"errors", "dependent_outputs", "class_type"}
    json.dumps(body)
