"""The registry of every built-in node, shared by the spec tests (a module-scoped fixture)."""
from __future__ import annotations

from pathlib import Path

import pytest

from execution.registry import NodeRegistry
from nodes import services
from nodes.registry import register_builtins
from storage.folders import Folders


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> NodeRegistry:
    folders = Folders(Path(tmp_path_factory.mktemp("compat-base")))
    folders.ensure_dirs()
    services.install(services.NodeServices(folders))
    try:
        registry = NodeRegistry()
        report = register_builtins(registry)
        assert not report.builtin_failures, "\n".join(report.lines())
        yield registry
    finally:
        services.install(None)
