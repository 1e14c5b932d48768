"""pyproject.toml declares what `pip install -e .` needs: the same pins as the requirements files, every
Plexus package, and a `plexus` command that is main.py's `main`."""
from __future__ import annotations

import re
import tomllib
from pathlib import Path

import main

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))


def requirement_lines(name: str) -> list[str]:
    lines = []
    for line in (ROOT / name).read_text(encoding="utf-8").splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            lines.append(re.sub(r"\s+", "", line))
    return lines


def test_dependencies_are_the_requirements_files_pins() -> None:
    project = PYPROJECT["project"]
    assert project["dependencies"] == requirement_lines("requirements.txt")
    assert project["optional-dependencies"]["test"] == requirement_lines("requirements-test.txt")
    assert project["optional-dependencies"]["ray"] == requirement_lines("requirements-ray.txt")


def test_every_plexus_package_is_included() -> None:
    patterns = PYPROJECT["tool"]["setuptools"]["packages"]["find"]["include"]
    top_level = {p.rstrip("*") for p in patterns}
    packages = {d.name for d in ROOT.iterdir() if (d / "__init__.py").is_file() and d.name != "tests"}
    assert packages == top_level
    assert PYPROJECT["tool"]["setuptools"]["py-modules"] == ["main"]


def test_plexus_command_is_main() -> None:
    assert PYPROJECT["project"]["scripts"] == {"plexus": "main:main"}
    assert callable(main.main)
