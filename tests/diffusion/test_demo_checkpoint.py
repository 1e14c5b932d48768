"""First start: main.py writes the random-weight demo checkpoint, and examples/txt2img_api.json runs on it."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from PIL import Image

from diffusion.demo import DEMO_CHECKPOINT_NAME, write_demo_checkpoint
from models.checkpoint import load_checkpoint

ROOT = Path(__file__).resolve().parents[2]


def test_demo_checkpoint_is_a_small_sd15_layout_file(tmp_path):
    path = write_demo_checkpoint(tmp_path / "checkpoints")
    assert path.name == DEMO_CHECKPOINT_NAME and path.stat().st_size < 32 * 1024 ** 2
    assert [p.name for p in path.parent.iterdir()] == [DEMO_CHECKPOINT_NAME]
    loaded = load_checkpoint(path)
    assert loaded.config.family == "sd1" and loaded.config.latent_downscale == 8 and loaded.text_encoders


def test_first_run_writes_the_demo_checkpoint_and_runs_the_example(tmp_path):
    done = subprocess.run([sys.executable, "main.py", "run", "examples/txt2img_api.json", "--base-directory",
                           str(tmp_path), "--no-progress"], cwd=ROOT, capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    assert (tmp_path / "models" / "checkpoints" / DEMO_CHECKPOINT_NAME).is_file()
    [written] = [Path(line) for line in done.stdout.splitlines() if line.endswith(".png")]
    assert Image.open(written).size == (256, 256)
    assert "demo checkpoint" in done.stderr
