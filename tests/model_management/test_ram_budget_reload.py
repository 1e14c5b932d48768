"""A checkpoint whose parts together exceed the RAM budget still runs: a part dropped by the budget (its
converted weights released) is rebuilt from its file when it is needed again, bit for bit, so the image
equals the one made without a budget. Before, the UNet was dropped while the text encoder registered and
KSampler failed with "dropped from RAM by the RAM budget and cannot be reloaded" (SDXL, --force-fp32)."""
from __future__ import annotations

import json
from pathlib import Path

import torch

import main
from models.testing import CheckpointSpec, tiny_unet_config, tiny_vae_config, write_random_checkpoint
from tests.web.test_real_txt2img import demo_prompt

CHECKPOINT = "plexus-demo-sd15-random.safetensors"


def _run(base: Path, workflow: Path, extra: list[str], capsys) -> tuple[bytes, str]:
    folder = base / "models" / "checkpoints"
    folder.mkdir(parents=True)
    write_random_checkpoint(folder / CHECKPOINT, CheckpointSpec("sd1", tiny_unet_config("sd1"), tiny_vae_config(),
                                                               dtype=torch.float16))
    code = main.main(["--base-directory", str(base), "--cpu", "--force-fp32", *extra, "run", str(workflow),
                      "--no-progress"])
    captured = capsys.readouterr()
    assert code == 0, captured.err + captured.out
    [written] = [Path(line) for line in captured.out.split()]
    return written.read_bytes(), captured.err


def test_parts_dropped_by_the_ram_budget_are_rebuilt_from_the_file(tmp_path, capsys, caplog) -> None:
    workflow = tmp_path / "wf.json"
    workflow.write_text(json.dumps(demo_prompt()))
    expected, _ = _run(tmp_path / "free", workflow, [], capsys)
    with caplog.at_level("INFO"):
        png, _ = _run(tmp_path / "tight", workflow, ["--ram-budget", "0.00001"], capsys)   # ~10 KiB: every part over it
    assert png == expected
    dropped = [r.getMessage() for r in caplog.records if "dropped from RAM (least recently used" in r.getMessage()]
    assert any("(UNet)" in m for m in dropped), dropped          # the UNet was dropped and came back
