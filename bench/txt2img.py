"""End-to-end txt2img through the real Engine with a full-size SD1.5-layout checkpoint (random weights).

    .venv/bin/python bench/txt2img.py                      # 256x256 x 8 steps and 512x512 x 4 steps
    .venv/bin/python bench/txt2img.py --sizes 256 --steps 8 --checkpoint /path/to/sd15.safetensors

The checkpoint (fp16, 2.1 GB, streamed tensor by tensor) is written once to bench/results/ unless given.
Each size runs in a fresh subprocess (CheckpointLoaderSimple -> CLIPTextEncode x2 -> EmptyLatentImage ->
KSampler (euler, cfg 7) -> VAEDecode -> PreviewImage):
- cold: the first prompt, including loading the checkpoint and encoding the text. `start_to_first_step_s`
  is from process start (before `import torch`) to the start of the first UNet step (its progress event
  minus one warm step); `start_to_sampler_node_s` to the moment the KSampler node starts (the UNet is
  then cast to its compute dtype inside it);
- warm: the same prompt with another seed: the loader and text encoders are cached by the executor, so
  only sampling and decoding run;
- `s_per_step`: median interval between progress events (the first step is measured from the KSampler's
  start); `unet_forward_s`: the bare UNet forward on the same [2, 4, h, w] batch and dtype (as bench/unet.py
  measures it), and their ratio (target: within 5%);
- `peak_rss_mib`: the subprocess's peak resident set size.
Results are printed and written as JSON to bench/results/txt2img.json.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PROCESS_START = time.perf_counter()
ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
DEFAULT_CHECKPOINT = RESULTS / "sd15-random-fp16.safetensors"


def write_checkpoint(path: Path) -> None:
    import torch

    sys.path.insert(0, str(ROOT))
    from models.testing import CheckpointSpec, sd15_unet_config, write_random_checkpoint
    from models.vae import VAEConfig

    path.parent.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    partial = path.with_name(".partial-" + path.name)
    write_random_checkpoint(partial, CheckpointSpec("sd1", sd15_unet_config(), VAEConfig(), dtype=torch.float16))
    partial.replace(path)
    print(f"wrote {path} ({path.stat().st_size / 1e9:.2f} GB) in {time.perf_counter() - started:.0f} s", flush=True)


def prompt_for(size: int, steps: int, seed: int) -> dict:
    return {
        "1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "bench.safetensors"}},
        "2": {"class_type": "CLIPTextEncode", "inputs": {"text": "a lighthouse on a cliff, oil painting",
                                                         "clip": ["1", 1]}},
        "3": {"class_type": "CLIPTextEncode", "inputs": {"text": "blurry", "clip": ["1", 1]}},
        "4": {"class_type": "EmptyLatentImage", "inputs": {"width": size, "height": size, "batch_size": 1}},
        "5": {"class_type": "KSampler", "inputs": {"seed": seed, "steps": steps, "cfg": 7.0, "sampler_name": "euler",
                                                   "scheduler": "normal", "denoise": 1.0, "model": ["1", 0],
                                                   "positive": ["2", 0], "negative": ["3", 0],
                                                   "latent_image": ["4", 0]}},
        "6": {"class_type": "VAEDecode", "inputs": {"samples": ["5", 0], "vae": ["1", 2]}},
        "7": {"class_type": "PreviewImage", "inputs": {"images": ["6", 0]}},
    }


def child(checkpoint: Path, size: int, steps: int) -> dict:
    """One cold and one warm run in this (fresh) process."""
    sys.path.insert(0, str(ROOT))
    import uuid

    from execution.events import EventBus
    from execution.executor import Engine, PromptRecord
    from execution.registry import NodeRegistry
    from nodes import services
    from nodes.registry import register_builtins
    from storage.folders import Folders

    base = Path(tempfile.mkdtemp(prefix="plexus-bench-"))
    folders = Folders(base)
    folders.ensure_dirs()
    (folders.paths("checkpoints")[0] / "bench.safetensors").symlink_to(checkpoint)
    services.install(services.NodeServices(folders))
    registry = NodeRegistry()
    register_builtins(registry)
    events = EventBus()
    marks: list[tuple[str, float]] = []
    events.subscribe(lambda e: marks.append((e.type, time.perf_counter()))
                     if e.type == "progress" or (e.type == "executing" and (e.data or {}).get("node") == "5")
                     else None)
    engine = Engine(registry, events)

    def run(seed: int) -> dict:
        marks.clear()
        prompt = prompt_for(size, steps, seed)
        checked = engine.validate(prompt)
        assert checked.ok, checked.node_errors
        started = time.perf_counter()
        result = engine.execute(PromptRecord(prompt_id=str(uuid.uuid4()), prompt=prompt,
                                             outputs_to_execute=checked.outputs_to_execute))
        assert result.status == "success", result.error
        total = time.perf_counter() - started
        sampler_start = next(t for kind, t in marks if kind == "executing")
        steps_at = [t for kind, t in marks if kind == "progress"]
        intervals = [b - a for a, b in zip([sampler_start] + steps_at, steps_at)]
        return {"total_s": round(total, 3), "sampler_start_at_s": sampler_start, "first_step_at_s": steps_at[0],
                "s_per_step": statistics.median(intervals),
                "step_intervals_s": [round(i, 3) for i in intervals],
                "node_timings_s": {k: round(v, 3) for k, v in result.node_timings_s.items()}}

    cold = run(1)
    warm = run(2)
    # the first step starts one (warm) step before its progress event
    cold["start_to_first_step_s"] = round(cold.pop("first_step_at_s") - warm["s_per_step"] - PROCESS_START, 3)
    cold["start_to_sampler_node_s"] = round(cold.pop("sampler_start_at_s") - PROCESS_START, 3)
    warm.pop("first_step_at_s")
    warm.pop("sampler_start_at_s")
    unet_s, dtype = bare_unet_forward(size)
    return {"size": size, "steps": steps, "cold": cold, "warm": warm, "unet_forward_s": round(unet_s, 3),
            "dtype": dtype, "warm_step_over_forward": round(warm["s_per_step"] / unet_s, 3),
            "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)}


def bare_unet_forward(size: int) -> tuple[float, str]:
    """The loaded UNet alone, [2, 4, h, w] (the CFG pair), in the dtype the manager computes in."""
    import torch

    from diffusion.loading import load_checkpoint_file
    from nodes import services

    manager = services.current().model_manager()
    model, _, _ = load_checkpoint_file(services.folders().find("checkpoints", "bench.safetensors"), manager)
    manager.load_models_for([model])
    unet = model.module
    dtype = unet.out[2].weight.dtype
    g = torch.Generator().manual_seed(0)
    x, t = torch.randn(2, 4, size // 8, size // 8, generator=g), torch.tensor([500.0, 500.0])
    context = torch.randn(2, 77, 768, generator=g)
    times = []
    with torch.inference_mode():
        unet(x, t, context)
        for _ in range(3):
            started = time.perf_counter()
            unet(x, t, context)
            times.append(time.perf_counter() - started)
    return statistics.median(times), str(dtype).removeprefix("torch.")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", type=Path, default=DEFAULT_CHECKPOINT)
    parser.add_argument("--sizes", type=int, nargs="+", default=[256, 512])
    parser.add_argument("--steps", type=int, nargs="+", default=[8, 4], help="one per size")
    parser.add_argument("--child", nargs=2, type=int, metavar=("SIZE", "STEPS"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.checkpoint.resolve(), *args.child)))
        return
    if not args.checkpoint.is_file():
        write_checkpoint(args.checkpoint)
    subprocess.run(["cat", str(args.checkpoint)], stdout=subprocess.DEVNULL, check=True)   # into the page cache
    rows = []
    for size, steps in zip(args.sizes, args.steps):
        done = subprocess.run([sys.executable, __file__, "--checkpoint", str(args.checkpoint), "--child", str(size),
                               str(steps)], capture_output=True, text=True, cwd=ROOT, env=dict(os.environ), check=False)
        if done.returncode != 0:
            print(done.stderr[-4000:], file=sys.stderr)
            raise SystemExit(f"{size}x{size} run failed")
        row = json.loads(done.stdout.strip().splitlines()[-1])
        rows.append(row)
        c, w = row["cold"], row["warm"]
        print(f"{size}x{size} {steps} steps ({row['dtype']}): cold {c['total_s']:.1f} s (first step "
              f"{c['start_to_first_step_s']:.1f} s after process start), warm {w['total_s']:.1f} s, "
              f"{w['s_per_step']:.2f} s/step vs bare UNet forward {row['unet_forward_s']:.2f} s "
              f"(x{row['warm_step_over_forward']:.3f}), peak RSS {row['peak_rss_mib']} MiB", flush=True)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "txt2img.json").write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
