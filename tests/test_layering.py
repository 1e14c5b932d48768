"""The import rules of docs/architecture.md: each package imports only what its layer allows."""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
STDLIB = set(sys.stdlib_module_names) | {"__future__"}
PROJECT = {"execution", "storage", "imaging", "sampling", "models", "model_management", "diffusion", "nodes", "web",
           "cluster"}

# package -> allowed top-level imports beyond the stdlib (project packages as "pkg" or "pkg.sub")
ALLOWED: dict[str, set[str]] = {
    "execution": set(),
    "storage": {"yaml", "execution.errors"},
    "imaging": {"torch", "numpy", "PIL", "safetensors", "execution.errors"},
    "sampling": {"torch", "torchsde", "numpy", "scipy"},
    "models": {"torch", "safetensors", "einops", "transformers", "numpy", "tokenizers", "sampling",
               "execution.errors"},
    "model_management": {"torch", "psutil"},
    "diffusion": {"torch", "numpy", "models", "sampling", "model_management", "imaging", "execution.errors",
                  "execution.protocol"},
    "nodes": {"execution.protocol", "execution.errors", "storage", "imaging", "models", "sampling", "model_management",
              "diffusion",
              "torch", "numpy", "PIL", "safetensors", "einops", "spandrel", "tqdm"},
    "web": {"execution", "storage", "aiohttp", "yarl", "multidict", "PIL", "psutil"},
    # cluster/: the optional Ray engine; only cluster/ray_pool.py imports ray, and never at import time
    "cluster": {"execution", "ray"},
}


def imports_of(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append(node.module)
    return found


def is_allowed(package: str, module: str) -> bool:
    top = module.split(".")[0]
    if top in STDLIB or top == package:
        return True
    for rule in ALLOWED[package]:
        if module == rule or module.startswith(rule + ".") or (top == rule):
            return True
    return False


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_package_imports_follow_the_layer_rules(package: str) -> None:
    offenders = []
    for path in sorted((ROOT / package).rglob("*.py")):
        for module in imports_of(path):
            if not is_allowed(package, module):
                offenders.append(f"{path.relative_to(ROOT)} imports {module}")
    assert not offenders, "layer rule broken:\n" + "\n".join(offenders)


def test_import_execution_leaves_torch_out() -> None:
    code = "import sys, execution, execution.executor, execution.store, execution.workflow; " \
           "print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_the_rule_checker_catches_a_forbidden_import(tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text("import torch\nfrom nodes import x\n")
    assert [m for m in imports_of(bad) if not is_allowed("execution", m)] == ["torch", "nodes"]
