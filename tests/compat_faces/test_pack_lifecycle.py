"""Pack life cycle as ComfyUI runs it: prestartup_script.py before any pack loads, requirements.txt
reported (never installed), pyproject [tool.comfy] web folders, interrupt_current_processing."""
from __future__ import annotations

import sys

import pytest

from .harness import FaceHarness


@pytest.fixture
def harness(tmp_path):
    h = FaceHarness(tmp_path)
    yield h
    h.close()


def test_prestartup_runs_first_and_failures_are_reported(harness) -> None:
    harness.pack("a_pack", {"__init__.py": "import builtins\nassert builtins.PRESTARTED == ['z_pack']\n"
                                           "NODE_CLASS_MAPPINGS = {}\n"})
    harness.pack("z_pack", {"__init__.py": "NODE_CLASS_MAPPINGS = {}\n",
                            "prestartup_script.py": "import builtins, folder_paths\n"
                                                    "builtins.PRESTARTED = ['z_pack']\n"})
    harness.pack("broken_pre", {"__init__.py": "NODE_CLASS_MAPPINGS = {}\n",
                                "prestartup_script.py": "raise RuntimeError('no network')\n"})
    try:
        harness.load()
        assert harness.plugin("a_pack").is_ok, harness.report.lines()
        assert harness.plugin("z_pack").prestartup_s is not None and harness.plugin("z_pack").prestartup_error is None
        assert harness.plugin("broken_pre").is_ok and "no network" in harness.plugin("broken_pre").prestartup_error
        assert any("Failed to execute startup-script" in line for line in harness.report.lines())
    finally:
        import builtins
        builtins.__dict__.pop("PRESTARTED", None)


def test_missing_requirements_are_named_in_the_load_error(harness) -> None:
    harness.pack("needs_pkgs", {"__init__.py": "import plexus_no_such_dist_xyz\nNODE_CLASS_MAPPINGS = {}\n",
                                "requirements.txt": "torch\nplexus-no-such-dist-xyz>=1.0  # comment\n"
                                                    "pywin32; sys_platform == 'win32'\n"})
    harness.pack("ok_pkgs", {"__init__.py": "NODE_CLASS_MAPPINGS = {}\n",
                             "requirements.txt": "another-missing-dist-xyz\n"})
    harness.load()
    failed = harness.plugin("needs_pkgs")
    assert not failed.is_ok and failed.missing_requirements == ["plexus-no-such-dist-xyz>=1.0"]
    assert "ModuleNotFoundError" in failed.error and "plexus-no-such-dist-xyz>=1.0" in failed.error
    assert "pip install -r" in failed.error
    ok = harness.plugin("ok_pkgs")
    assert ok.is_ok and any("another-missing-dist-xyz" in w for w in ok.warnings)


def test_pyproject_web_folder_is_served_without_web_directory(harness) -> None:
    harness.pack("web_pack", {"__init__.py": "NODE_CLASS_MAPPINGS = {}\n",
                              "pyproject.toml": "[project]\nname = 'web-pack'\n[tool.comfy]\nweb = 'js'\n",
                              "js/widget.js": "export const x = 1;\n"})
    harness.load()
    assert harness.plugin("web_pack").web_files() == ["/extensions/web_pack/widget.js"]


def test_interrupt_current_processing_stops_the_prompt(harness) -> None:
    harness.pack("stopper", {"__init__.py": """
        import comfy.model_management as mm

        class StopHere:
            @classmethod
            def INPUT_TYPES(s):
                return {"required": {}}
            RETURN_TYPES = ("INT",)
            FUNCTION = "doit"
            CATEGORY = "test"
            OUTPUT_NODE = True

            def doit(self):
                mm.interrupt_current_processing()
                mm.throw_exception_if_processing_interrupted()
                return (1,)

        NODE_CLASS_MAPPINGS = {"StopHere": StopHere}
    """})
    harness.load()
    harness.services.interrupt = harness.engine.interrupt     # main.py wires the same
    result = harness.run({"1": {"class_type": "StopHere", "inputs": {}}})
    assert result.status == "interrupted"
