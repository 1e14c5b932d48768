"""Memory benchmark: peak RSS (and peak device memory on a GPU) of txt2img in each VRAM mode, and
RSS while switching between two checkpoints ten times (it must not grow).

    .venv/bin/python bench/memory.py                       # toy models, CPU, simulated budget
    .venv/bin/python bench/memory.py --vram-budget 2 --modes normalvram lowvram novram

Each mode runs in a fresh subprocess, because peak RSS (ru_maxrss) only ever grows in a process.

SKELETON: until the full txt2img path exists (checkpoint loader -> CLIP encode -> KSampler -> VAE
decode through `nodes/`), the pipeline is the toy one from tests/model_management/toys.py, with toy
checkpoints written as .safetensors into a temporary folder. Swap `run_txt2img` and
`load_checkpoint` for the real calls when they land; the measuring around them stays.
"""
from __future__ import annotations

import argparse
import gc
import json
import os
import resource
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import psutil  # noqa: E402
import torch  # noqa: E402

from model_management import GIB, MemorySettings, ModelHandle, ModelManager, VramMode  # noqa: E402

MODES = [m.value for m in (VramMode.HIGH, VramMode.NORMAL, VramMode.LOW, VramMode.NO)]
MIB = 1024 ** 2


def rss_bytes() -> int:
    return psutil.Process().memory_info().rss


def peak_rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024      # Linux reports KiB


# --- the pipeline (toy until the real txt2img path exists) -----------------------------------------

def write_toy_checkpoint(folder: Path, seed: int) -> Path:
    from safetensors.torch import save_file

    from tests.model_management.toys import ToyUNet, make
    path = folder / f"toy_{seed}.safetensors"
    state = make(ToyUNet, seed, channels=64).state_dict()
    save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    return path


def load_checkpoint(path: Path) -> ModelHandle:
    """Memory-mapped load of a toy UNet checkpoint (the real one: models.files + detection + convert)."""
    from safetensors import safe_open

    from tests.model_management.toys import ToyUNet
    with torch.device("meta"):
        unet = ToyUNet(channels=64)
    with safe_open(str(path), framework="pt") as f:
        unet.load_state_dict({k: f.get_tensor(k) for k in f.keys()}, assign=True)
    return ModelHandle(unet.eval(), name=path.stem, source_key=str(path))


def run_txt2img(manager: ModelManager, unet: ModelHandle) -> torch.Tensor:
    from tests.model_management.toys import ToyTextEncoder, ToyVAEDecoder, make, txt2img
    return txt2img(manager, unet, ModelHandle(make(ToyTextEncoder, 1)), ModelHandle(make(ToyVAEDecoder, 2)),
                   size=32, steps=4)


# --- measurements -------------------------------------------------------------------------------------

def settings_for(mode: str, vram_budget_gb: float | None) -> MemorySettings:
    budget = None if vram_budget_gb is None else int(vram_budget_gb * GIB)
    return MemorySettings(vram_mode=VramMode(mode), vram_budget_bytes=budget)


def measure_mode(mode: str, vram_budget_gb: float | None, folder: Path) -> dict:
    manager = ModelManager(settings_for(mode, vram_budget_gb))
    is_cuda = manager.device.type == "cuda"
    if is_cuda:
        torch.cuda.reset_peak_memory_stats()
    unet = load_checkpoint(write_toy_checkpoint(folder, 0))
    with torch.no_grad():
        run_txt2img(manager, unet)
    return {"mode": mode, "device": str(manager.device), "peak_rss_mib": peak_rss_bytes() / MIB,
            "peak_device_mib": torch.cuda.max_memory_allocated() / MIB if is_cuda else None,
            "peak_model_bytes_on_device_mib": manager.ledger.peak_bytes / MIB,
            "models": {m["name"]: m["why"] for m in manager.report()["models"]}}


def measure_switching(vram_budget_gb: float | None, folder: Path, switches: int = 10) -> dict:
    manager = ModelManager(settings_for("normalvram", vram_budget_gb))
    paths = [write_toy_checkpoint(folder, seed) for seed in (0, 1)]
    handles = [manager.register(load_checkpoint(p), reload=None) for p in paths]
    samples = []
    with torch.no_grad():
        for i in range(switches):
            run_txt2img(manager, handles[i % 2])
            gc.collect()
            samples.append(rss_bytes())
    growth = samples[-1] - samples[1]            # after both checkpoints have been used once
    return {"rss_mib": [round(s / MIB, 1) for s in samples], "growth_mib": growth / MIB,
            "is_growing": growth > 16 * MIB}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--modes", nargs="*", default=MODES, choices=MODES)
    parser.add_argument("--vram-budget", type=float, default=0.003,
                        help="GB; simulates a card on the CPU (default sized for the toy pipeline)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    torch.set_num_threads(max(1, min(4, os.cpu_count() or 1)))
    with tempfile.TemporaryDirectory() as tmp:
        if args.child == "switch":
            print(json.dumps(measure_switching(args.vram_budget, Path(tmp))))
            return 0
        if args.child:
            try:
                print(json.dumps(measure_mode(args.child, args.vram_budget, Path(tmp))))
            except torch.OutOfMemoryError as exc:          # highvram on a budget too small for it
                print(json.dumps({"mode": args.child, "error": str(exc)}))
            return 0
    budget = ["--vram-budget", str(args.vram_budget)] if args.vram_budget is not None else []
    results = []
    for child in [*args.modes, "switch"]:
        out = subprocess.run([sys.executable, __file__, "--child", child, *budget], capture_output=True,
                             text=True)
        if out.returncode != 0:
            raise SystemExit(f"bench child {child!r} failed:\n{out.stderr}")
        results.append(json.loads(out.stdout.strip().splitlines()[-1]))
        print(json.dumps(results[-1]))
    return 1 if results[-1].get("is_growing") else 0


if __name__ == "__main__":
    raise SystemExit(main())
