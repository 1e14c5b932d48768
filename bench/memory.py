"""Memory benchmark: peak RSS (and peak device memory) of the real txt2img prompt in each VRAM mode, and
RSS while switching between two checkpoints ten times (it must not grow).

    .venv/bin/python bench/memory.py                  # all modes + the switch test, full-size SD1.5 layout
    .venv/bin/python bench/memory.py --modes normal lowvram --switches 0

The prompt is bench/txt2img.py's (CheckpointLoaderSimple -> CLIPTextEncode x2 -> EmptyLatentImage 256x256
-> KSampler euler 2 steps -> VAEDecode -> PreviewImage) on the random-weight fp16 SD1.5-layout checkpoint
(bench/results/sd15-random-fp16.safetensors, written by bench/txt2img.py when missing). Each mode runs in
a fresh subprocess (peak RSS only ever grows in a process) whose app is built the way main.py builds it:
`main.build_app(main.parse_args([*mode flags, "--base-directory", tmp]))`, with the checkpoint symlinked
into tmp/models/checkpoints. Modes: normal (no flag), `--lowvram --vram-budget 1`,
`--novram --vram-budget 1`, `--highvram`, `--novram --vram-budget 0.3 --force-fp32` (below the largest
block: layer streaming). Reported per mode:
- `peak_rss_mib`: VmHWM from /proc/self/status;
- `models_device_peak_mib`: the ModelManager's `models_device_peak_bytes` (on the CPU the simulated
  device ledger: the model bytes it counted as "on the device" at peak);
- `cuda_max_allocated_mib`: torch.cuda.max_memory_allocated() on a GPU (null on the CPU);
- `s_per_step`: median interval between the KSampler's progress events (first step from the node's start).

The switch test writes a second full-size checkpoint (another seed, so another file and another model)
into a temporary folder, then in one process runs the prompt on A, B, A, B, ... (`--switches` prompts,
default 10) and records RSS (VmRSS) after each; `growth_mib` = RSS after the last minus RSS after the
second (both checkpoints have been loaded once by then); it must be about 0 (exit status 1 above 64 MiB).
Results: a table on stdout and bench/results/memory.json.
"""
from __future__ import annotations

import argparse
import atexit
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
DEFAULT_CHECKPOINT = RESULTS / "sd15-random-fp16.safetensors"
MIB = 1024 ** 2
MODES = {
    "normal": [],
    "lowvram": ["--lowvram", "--vram-budget", "1"],
    "novram": ["--novram", "--vram-budget", "1"],
    "highvram": ["--highvram"],
    # issue 14: a budget below the largest UNet block (345 MiB in fp32): streams single layers
    "novram-0.3-fp32": ["--novram", "--vram-budget", "0.3", "--force-fp32"],
}
GROWTH_LIMIT_MIB = 64


def proc_status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def prompt_for(ckpt_name: str, seed: int, size: int = 256, steps: int = 2) -> dict:
    sys.path.insert(0, str(ROOT / "bench"))
    from txt2img import prompt_for as txt2img_prompt

    prompt = txt2img_prompt(size, steps, seed)
    prompt["1"]["inputs"]["ckpt_name"] = ckpt_name
    return prompt


class Runner:
    """The app main.py would build, with the checkpoints symlinked into a temporary base directory."""

    def __init__(self, flags: list[str], checkpoints: dict[str, Path]):
        sys.path.insert(0, str(ROOT))
        import main as plexus_main

        self.base = Path(tempfile.mkdtemp(prefix="plexus-membench-"))
        atexit.register(shutil.rmtree, self.base, ignore_errors=True)
        folder = self.base / "models" / "checkpoints"
        folder.mkdir(parents=True, exist_ok=True)
        for name, path in checkpoints.items():
            (folder / name).symlink_to(path.resolve())
        self.app = plexus_main.build_app(plexus_main.parse_args([*flags, "--base-directory", str(self.base)]))
        self.marks: list[tuple[str, float]] = []
        self.app.events.subscribe(self._on_event)

    def _on_event(self, e) -> None:
        if e.type == "progress" or (e.type == "executing" and (e.data or {}).get("node") == "5"):
            self.marks.append((e.type, time.perf_counter()))

    def run(self, ckpt_name: str, seed: int) -> dict:
        """The benchmark prompt on one checkpoint: its timings."""
        return self.execute(prompt_for(ckpt_name, seed))[1]

    def execute(self, prompt: dict) -> tuple:
        """Validate and run any prompt whose KSampler is node "5": (RunResult, timings); raises if it fails."""
        from execution.executor import PromptRecord

        self.marks.clear()
        checked = self.app.engine.validate(prompt)
        if not checked.ok:
            raise RuntimeError(f"invalid prompt: {checked.error} {checked.node_errors}")
        started = time.perf_counter()
        result = self.app.engine.execute(PromptRecord(prompt_id=str(uuid.uuid4()), prompt=prompt,
                                                      outputs_to_execute=checked.outputs_to_execute))
        total = time.perf_counter() - started
        if result.status != "success":
            raise RuntimeError(f"prompt {result.status}: {json.dumps(result.error)}")
        sampler_start = next(t for kind, t in self.marks if kind == "executing")
        steps_at = [t for kind, t in self.marks if kind == "progress"]
        intervals = [b - a for a, b in zip([sampler_start] + steps_at, steps_at)]
        return result, {"total_s": round(total, 2), "s_per_step": round(statistics.median(intervals), 3),
                        "node_timings_s": {k: round(v, 2) for k, v in result.node_timings_s.items()}}

    def manager_report(self) -> dict:
        from nodes import services
        return services.current().model_manager().report()


def child_mode(mode: str, checkpoint: Path) -> dict:
    import torch

    runner = Runner(MODES[mode], {"a.safetensors": checkpoint})
    is_cuda = torch.cuda.is_available()
    if is_cuda:
        torch.cuda.reset_peak_memory_stats()
    timing = runner.run("a.safetensors", seed=1)
    report = runner.manager_report()
    return {"mode": mode, "flags": " ".join(MODES[mode]), "device": report["device"]["name"],
            "peak_rss_mib": round(proc_status_kib("VmHWM") / 1024),
            "models_device_peak_mib": round(report["models_device_peak_bytes"] / MIB),
            "cuda_max_allocated_mib": round(torch.cuda.max_memory_allocated() / MIB) if is_cuda else None,
            **timing,
            "models": {m["name"]: f'{m["placement"]}: {m["why"]}' for m in report["models"]}}


def child_switch(checkpoints: list[Path], switches: int) -> dict:
    import gc

    runner = Runner([], {"a.safetensors": checkpoints[0], "b.safetensors": checkpoints[1]})
    rss, times, nodes = [], [], []
    for i in range(switches):
        name = ("a.safetensors", "b.safetensors")[i % 2]
        timing = runner.run(name, seed=i)
        times.append(timing["total_s"])
        nodes.append(timing["node_timings_s"])
        gc.collect()
        rss.append(round(proc_status_kib("VmRSS") / 1024, 1))
        print(f"switch {i + 1:2d}: {name}  RSS {rss[-1]:8.1f} MiB  ({times[-1]:.1f} s)", file=sys.stderr, flush=True)
    report = runner.manager_report()
    growth = rss[-1] - rss[1]
    return {"mode": "switch", "switches": switches, "rss_mib": rss, "prompt_s": times, "node_timings_s": nodes,
            "growth_mib": round(growth, 1), "is_growing": growth > GROWTH_LIMIT_MIB,
            "peak_rss_mib": round(proc_status_kib("VmHWM") / 1024),
            "models": {m["name"]: f'{m["placement"]}: {m["why"]}' for m in report["models"]}}


def write_second_checkpoint(path: Path) -> None:
    import torch

    sys.path.insert(0, str(ROOT))
    from models.testing import CheckpointSpec, sd15_unet_config, write_random_checkpoint
    from models.vae import VAEConfig

    partial = path.with_name(".partial-" + path.name)
    write_random_checkpoint(partial, CheckpointSpec("sd1", sd15_unet_config(), VAEConfig(), dtype=torch.float16,
                                                    seed=1))
    partial.replace(path)


def run_child(args: list[str]) -> dict:
    done = subprocess.run([sys.executable, __file__, *args], stdout=subprocess.PIPE, stderr=None, text=True,
                          cwd=ROOT, check=False)
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0 or not lines:
        return {"error": f"child exited with {done.returncode}"}
    return json.loads(lines[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", type=Path, default=DEFAULT_CHECKPOINT)
    parser.add_argument("--second-checkpoint", type=Path, default=None,
                        help="for the switch test; default: write one (another seed) into a temporary folder")
    parser.add_argument("--modes", nargs="*", default=list(MODES), choices=list(MODES))
    parser.add_argument("--switches", type=int, default=10, help="prompts in the switch test (0: skip it)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        try:
            if args.child == "switch":
                row = child_switch([args.checkpoint, args.second_checkpoint], args.switches)
            else:
                row = child_mode(args.child, args.checkpoint)
        except Exception as exc:  # noqa: BLE001 -- report the error verbatim, keep the other modes
            traceback.print_exc()
            row = {"mode": args.child, "error": f"{type(exc).__name__}: {exc}"}
        print(json.dumps(row))
        return 0
    if not args.checkpoint.is_file():
        sys.path.insert(0, str(ROOT / "bench"))
        from txt2img import write_checkpoint
        write_checkpoint(args.checkpoint)
    subprocess.run(["cat", str(args.checkpoint)], stdout=subprocess.DEVNULL, check=True)   # into the page cache
    rows = []
    print(f"{'mode':9} {'flags':28} {'peak RSS MiB':>12} {'device peak MiB':>15} {'cuda MiB':>9} "
          f"{'s/step':>7} {'total s':>8}", flush=True)
    for mode in args.modes:
        row = run_child(["--checkpoint", str(args.checkpoint), "--child", mode])
        row.setdefault("mode", mode)
        rows.append(row)
        if "error" in row:
            print(f"{mode:9} {' '.join(MODES[mode]):28} FAILED: {row['error']}", flush=True)
        else:
            print(f"{mode:9} {row['flags']:28} {row['peak_rss_mib']:12d} {row['models_device_peak_mib']:15d} "
                  f"{row['cuda_max_allocated_mib']!s:>9} {row['s_per_step']:7.2f} {row['total_s']:8.1f}",
                  flush=True)
    status = 0
    if args.switches:
        with tempfile.TemporaryDirectory(prefix="plexus-membench-ckpt-") as tmp:
            second = args.second_checkpoint
            if second is None:
                second = Path(tmp) / "sd15-random-fp16-b.safetensors"
                started = time.perf_counter()
                write_second_checkpoint(second)
                print(f"wrote the second checkpoint {second} in {time.perf_counter() - started:.0f} s", flush=True)
            row = run_child(["--checkpoint", str(args.checkpoint), "--second-checkpoint", str(second),
                             "--switches", str(args.switches), "--child", "switch"])
        row.setdefault("mode", "switch")
        rows.append(row)
        if "error" in row:
            print(f"switch test FAILED: {row['error']}", flush=True)
            status = 1
        else:
            print(f"switch test ({row['switches']} prompts A/B): RSS after each (MiB) {row['rss_mib']}", flush=True)
            print(f"growth (last - second) {row['growth_mib']:+.1f} MiB -> "
                  f"{'GROWING' if row['is_growing'] else 'not growing'} (limit {GROWTH_LIMIT_MIB} MiB); "
                  f"peak RSS {row['peak_rss_mib']} MiB", flush=True)
            status = 1 if row["is_growing"] else 0
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "memory.json").write_text(json.dumps(rows, indent=2))
    return status


if __name__ == "__main__":
    raise SystemExit(main())
