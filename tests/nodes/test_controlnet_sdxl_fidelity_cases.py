"""bench/fidelity_cases/controlnet_sdxl.py's prompts (compared with ComfyUI at full size) are valid prompts for
the Engine: every node, input and file name checks out (the files are empty stand-ins: validation reads no
weights), and each case stacks the control files its name says."""
from __future__ import annotations

import importlib
import sys
from pathlib import Path

import pytest

from tests.nodes.engine_harness import Harness

BENCH = Path(__file__).resolve().parents[2] / "bench"


def cases_module():
    sys.path.insert(0, str(BENCH))
    try:
        return importlib.import_module("fidelity_cases.controlnet_sdxl")
    finally:
        sys.path.remove(str(BENCH))


@pytest.fixture(scope="module")
def harness(tmp_path_factory):
    module = cases_module()
    h = Harness(tmp_path_factory.mktemp("cn-xl-cases"))
    for model in module.FAMILY.models:
        folder = h.folders.paths(model.folder)[0]
        folder.mkdir(parents=True, exist_ok=True)
        (folder / model.name).write_bytes(b"")
    h.folders.input.mkdir(parents=True, exist_ok=True)
    for case in module.cases():
        for name, data in case.inputs.items():
            (h.folders.input / name).write_bytes(data)
    yield h
    h.close()


def test_controlnet_sdxl_cases_validate(harness):
    module = cases_module()
    cases = {case.name: case for case in module.cases()}
    assert len(cases) == 7
    for name, case in cases.items():
        checked = harness.engine.validate(case.prompt)
        assert checked.ok, (name, checked.error, checked.node_errors)
        loaders = [n["inputs"]["control_net_name"] for n in case.prompt.values()
                   if n["class_type"] == "ControlNetLoader"]
        assert len(loaders) == (2 if name.endswith("stacked") else 1)
        union = [n["inputs"]["type"] for n in case.prompt.values() if n["class_type"] == "SetUnionControlNetType"]
        assert union == ([name.rsplit("/", 1)[1]] if "/union/" in name else [])
