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
           "values", "cluster"}

# package -> allowed top-level imports beyond the stdlib (project packages as "pkg" or "pkg.sub")
ALLOWED: dict[str, set[str]] = {
    "execution": set(),
    "values": set(),
    "storage": {"yaml", "execution.errors"},
    "imaging": {"torch", "numpy", "PIL", "safetensors", "execution.errors"},
    "sampling": {"torch", "torchsde", "numpy", "scipy"},
    "models": {"torch", "safetensors", "einops", "transformers", "numpy", "tokenizers", "sampling",
               "execution.errors"},
    "model_management": {"torch", "psutil"},
    "diffusion": {"torch", "numpy", "models", "sampling", "model_management", "imaging", "execution.errors",
                  "execution.protocol"},
    "nodes": {"execution.protocol", "execution.errors", "storage", "imaging", "models", "sampling", "model_management",
              "diffusion", "values",
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


# ComfyUI's module names live in compat/comfy_faces (on sys.path only for plugins): Plexus never imports them.
FACE_MODULES = {"folder_paths", "server", "comfy", "comfy_api", "comfy_execution", "comfy_extras", "node_helpers",
                "latent_preview"}
FACES_DIR = ROOT / "compat" / "comfy_faces"


def plexus_sources() -> list[Path]:
    return [ROOT / "main.py", *(path for package in sorted(PROJECT) for path in sorted((ROOT / package).rglob("*.py")))]


def test_plexus_never_imports_the_comfy_faces() -> None:
    offenders = [f"{path.relative_to(ROOT)} imports {module}" for path in plexus_sources()
                 for module in imports_of(path) if module.split(".")[0] in FACE_MODULES]
    assert not offenders, "Plexus code imports a ComfyUI face:\n" + "\n".join(offenders)


def test_every_face_module_is_declared() -> None:
    """A new top-level face must be added to FACE_MODULES (so the rule above covers it)."""
    tops = {path.stem if path.is_file() else path.name for path in FACES_DIR.iterdir()
            if path.name != "__pycache__" and (path.suffix == ".py" or path.is_dir())}
    assert tops <= FACE_MODULES, sorted(tops - FACE_MODULES)


def test_import_execution_leaves_torch_out() -> None:
    code = "import sys, execution, execution.executor, execution.store, execution.workflow; " \
           "print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_the_rule_checker_catches_a_forbidden_import(tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text("import torch\nfrom nodes import x\n")
    assert [m for m in imports_of(bad) if not is_allowed("execution", m)] == ["torch", "nodes"]
