"""The published JSON Schemas (schemas/*.schema.json) accept the fixtures and what we produce from them."""
from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

jsonschema = pytest.importorskip("jsonschema")

from execution.workflow import workflow_to_prompt  # noqa: E402
from tests.execution.workflow_nodes import core_registry  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = sorted((ROOT / "tests" / "fixtures" / "workflows").glob("*.json"))


def validator(name: str):
    schema = json.loads((ROOT / "schemas" / name).read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


@pytest.fixture(scope="module")
def workflow_schema():
    return validator("workflow.schema.json")


@pytest.fixture(scope="module")
def api_schema():
    return validator("api_prompt.schema.json")


def errors(schema, data) -> list[str]:
    return [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in schema.iter_errors(data)]


def test_there_are_fixtures_of_both_versions():
    versions = {json.loads(path.read_text())["version"] for path in FIXTURES}
    assert versions == {0.4, 1}


@pytest.mark.parametrize("path", FIXTURES, ids=lambda p: p.name)
def test_fixture_matches_the_workflow_schema_and_converts_to_a_valid_api_prompt(path, workflow_schema,
                                                                                api_schema):
    workflow = json.loads(path.read_text())
    assert errors(workflow_schema, workflow) == []
    assert errors(api_schema, workflow_to_prompt(workflow, core_registry())) == []


def test_workflow_schema_rejects_broken_files(workflow_schema):
    v04 = json.loads((ROOT / "tests/fixtures/workflows/sd15_txt2img.json").read_text())
    short_link = copy.deepcopy(v04)
    short_link["links"][0] = [1, 4, 0]
    assert errors(workflow_schema, short_link)
    object_links_in_04 = copy.deepcopy(v04)
    object_links_in_04["links"] = [{"id": 1}]
    assert errors(workflow_schema, object_links_in_04)
    v1 = json.loads((ROOT / "tests/fixtures/workflows/sd15_txt2img_v1.json").read_text())
    del v1["state"]
    assert errors(workflow_schema, v1)
    no_type = copy.deepcopy(v04)
    del no_type["nodes"][0]["type"]
    assert errors(workflow_schema, no_type)


def test_api_schema_rejects_broken_prompts(api_schema):
    good = {"1": {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": "x",
                                                        "tags": {"__value__": ["a"]}},
                  "_meta": {"title": "Save"}}}
    assert errors(api_schema, good) == []
    assert errors(api_schema, {"1": {"inputs": {}}})                                # no class_type
    assert errors(api_schema, {"1": {"class_type": "X", "inputs": {"a": ["2", 0, 1]}}})  # not a link
    assert errors(api_schema, {"1": {"class_type": "X", "inputs": {"a": [2, 0]}}})     # ids are strings
    assert errors(api_schema, {})
