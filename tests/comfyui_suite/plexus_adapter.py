"""pytest plugin: run ComfyUI's own execution suite (``tests/execution`` of a ComfyUI checkout, with its
``testing_nodes`` pack) against a Plexus server instead of ComfyUI's.

Only the server start changes; the test bodies run as ComfyUI ships them. Each test class starts its
server with ``subprocess.Popen(['python', 'main.py', '--output-directory', ..., '--listen', ..., '--port',
..., '--extra-model-paths-config', 'tests/execution/extra_model_paths.yaml', '--cpu', ...])``; this plugin
swaps that command for Plexus's ``main.py`` with the same flags (Plexus takes ComfyUI's names) plus a fresh
``--base-directory`` per server whose ``custom_nodes/`` holds a copy of the testing pack (so every server
starts with an empty history, as a fresh ComfyUI does, and nothing is written into the checkout) and an
in-memory queue. Any other Popen call is left alone.

Run it from the ComfyUI checkout (``scripts/comfyui_execution_suite.sh`` does this)::

    cd /path/to/ComfyUI
    PYTHONDONTWRITEBYTECODE=1 PYTHONPATH=/path/to/plexus/tests/comfyui_suite \\
        /path/to/plexus/.venv/bin/python -m pytest tests/execution -p plexus_adapter -p no:cacheprovider \\
        --port 8405 --output_dir /tmp/suite-out

``PLEXUS_SUITE_LOG_DIR`` (optional) keeps each server's output in ``<dir>/server-<n>.log``.
"""
from __future__ import annotations

import itertools
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

PLEXUS = Path(__file__).resolve().parents[2]
_ORIGINAL_POPEN = subprocess.Popen
_SERVERS = itertools.count(1)
_BASES: list[Path] = []     # every base directory made, removed when the session ends


def is_comfyui_server_command(args: object) -> bool:
    return (isinstance(args, (list, tuple)) and len(args) >= 2 and Path(str(args[0])).name.startswith("python")
            and str(args[1]) == "main.py")


def plexus_command(comfy_args: list[str], base_directory: Path) -> list[str]:
    """ComfyUI's ``main.py`` flags as a Plexus command line: the same flags except the extra model paths
    file (its only entry is the testing pack, which goes into the base directory instead)."""
    flags = list(comfy_args[2:])
    if "--extra-model-paths-config" in flags:
        at = flags.index("--extra-model-paths-config")
        del flags[at:at + 2]
    return [sys.executable, str(PLEXUS / "main.py"), *flags, "--base-directory", str(base_directory),
            "--queue-db", "memory"]


def fresh_base_directory(comfyui_root: Path) -> Path:
    """A new base directory whose custom_nodes/ holds the suite's testing pack."""
    base = Path(tempfile.mkdtemp(prefix="plexus-comfyui-suite-"))
    testing_nodes = comfyui_root / "tests" / "execution" / "testing_nodes"
    shutil.copytree(testing_nodes, base / "custom_nodes", ignore=shutil.ignore_patterns("__pycache__"))
    for earlier in _BASES:   # the demo checkpoint the first server wrote: linked, not written again
        for checkpoint in (earlier / "models" / "checkpoints").glob("*.safetensors"):
            (base / "models" / "checkpoints").mkdir(parents=True, exist_ok=True)
            os.link(checkpoint, base / "models" / "checkpoints" / checkpoint.name)
            break
        else:
            continue
        break
    _BASES.append(base)
    return base


class PlexusPopen(_ORIGINAL_POPEN):
    """``subprocess.Popen`` that starts Plexus where the suite starts ComfyUI's server."""

    def __init__(self, args, *rest, **kwargs):
        if is_comfyui_server_command(args):
            number = next(_SERVERS)
            args = plexus_command([str(a) for a in args], fresh_base_directory(Path.cwd()))
            log_dir = os.environ.get("PLEXUS_SUITE_LOG_DIR")
            if log_dir and "stdout" not in kwargs:
                Path(log_dir).mkdir(parents=True, exist_ok=True)
                log = open(Path(log_dir) / f"server-{number}.log", "wb")  # noqa: SIM115 - lives with the process
                kwargs["stdout"], kwargs["stderr"] = log, subprocess.STDOUT
        super().__init__(args, *rest, **kwargs)


def pytest_configure(config) -> None:
    subprocess.Popen = PlexusPopen


def pytest_unconfigure(config) -> None:
    subprocess.Popen = _ORIGINAL_POPEN
    for base in _BASES:
        shutil.rmtree(base, ignore_errors=True)
