"""EasyCache / LazyCache / PlexusDeepCache against the uncached run: KSampler seconds, steps skipped, and the image distance.

    .venv/bin/python bench/step_cache.py --checkpoint /path/to/sd15.safetensors
    .venv/bin/python bench/step_cache.py --size 256 --steps 20 --thresholds 0.1 0.2 --samplers euler dpmpp_2m

bench/txt2img.py's prompt (CheckpointLoaderSimple -> CLIPTextEncode x2 -> EmptyLatentImage -> KSampler (cfg 7)
-> VAEDecode -> PreviewImage) with an EasyCache or LazyCache node between the loader and KSampler (start 0.15,
end 0.95, ComfyUI's defaults), in the default precision, in one app (bench/memory.py's `Runner`: the
checkpoint loads once; the first, discarded prompt warms it). Per sampler and cache setting: the KSampler
node's seconds, the steps the cache skipped (from its log line), and the pixel distance of the saved PNG from
the uncached run's (bench/quality.py's max / mean absolute difference and PSNR on the 0..255 scale).

With random weights (the default checkpoint is bench/txt2img.py's random full-size SD1.5 file) the UNet's
predictions do not follow a real model's smooth trajectory, so skip counts and distances here are not what
a trained checkpoint gives; the speed-up per skipped step is. Results: a table on stdout and
bench/results/step_cache.json.

`--kinds PlexusDeepCache --thresholds 2 3` runs the DeepCache node (cache_depth 1, whole schedule) with those
cache intervals; its "skipped" column counts the UNet calls that ran only the shallow blocks.
"""
from __future__ import annotations

import argparse
import json
import logging
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from memory import Runner  # bench scripts import each other by file name
from quality import pixel_distance, read_preview
from txt2img import DEFAULT_CHECKPOINT, RESULTS, prompt_for, write_checkpoint

SUMMARY = re.compile(r"(EasyCache|LazyCache) - skipped (\d+)/(\d+) steps|(DeepCache) - (\d+) cached calls over (\d+)")
DEEP_CACHE = "PlexusDeepCache"           # --kinds PlexusDeepCache: the threshold list is its cache_interval


class _Summaries(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        if SUMMARY.search(record.getMessage()):
            self.lines.append(record.getMessage())


def cached_prompt(size: int, steps: int, seed: int, sampler: str, kind: str | None, threshold: float) -> dict:
    prompt = prompt_for(size, steps, seed)
    prompt["5"]["inputs"]["sampler_name"] = sampler
    if kind == DEEP_CACHE:
        prompt["9"] = {"class_type": kind, "inputs": {"model": ["1", 0], "cache_interval": int(threshold),
                                                     "cache_depth": 1, "start_percent": 0.0, "end_percent": 1.0}}
        prompt["5"]["inputs"]["model"] = ["9", 0]
    elif kind is not None:
        prompt["9"] = {"class_type": kind, "inputs": {"model": ["1", 0], "reuse_threshold": threshold,
                                                     "start_percent": 0.15, "end_percent": 0.95, "verbose": False}}
        prompt["5"]["inputs"]["model"] = ["9", 0]
    return prompt


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--checkpoint", type=Path, default=DEFAULT_CHECKPOINT)
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--samplers", nargs="+", default=["euler"])
    p.add_argument("--kinds", nargs="+", default=["EasyCache", "LazyCache"])
    p.add_argument("--thresholds", nargs="+", type=float, default=[0.2],
                   help="reuse thresholds; for PlexusDeepCache the cache intervals (cached calls count as skipped)")
    p.add_argument("--json", type=Path, default=RESULTS / "step_cache.json")
    args = p.parse_args()
    if not args.checkpoint.exists():
        write_checkpoint(args.checkpoint)
    summaries = _Summaries()
    logging.getLogger("plexus.diffusion").addHandler(summaries)
    logging.getLogger("plexus.diffusion").setLevel(logging.INFO)
    runner = Runner([], {"bench.safetensors": args.checkpoint})
    runner.execute(cached_prompt(args.size, 2, args.seed, "euler", None, 0.0))          # load + warm up
    rows = []
    for sampler in args.samplers:
        result, timing = runner.execute(cached_prompt(args.size, args.steps, args.seed, sampler, None, 0.0))
        reference = read_preview(runner, result)
        base_s = timing["node_timings_s"]["5"]
        rows.append({"sampler": sampler, "cache": "none", "threshold": None, "ksampler_s": base_s,
                     "skipped": 0, "speedup": 1.0, "max_abs": 0, "mean_abs": 0.0, "psnr_db": None})
        for kind in args.kinds:
            for threshold in args.thresholds:
                summaries.lines.clear()
                result, timing = runner.execute(cached_prompt(args.size, args.steps, args.seed, sampler, kind,
                                                              threshold))
                found = SUMMARY.search(summaries.lines[-1]) if summaries.lines else None
                distance = pixel_distance(read_preview(runner, result), reference)
                seconds = timing["node_timings_s"]["5"]
                rows.append({"sampler": sampler, "cache": kind, "threshold": threshold, "ksampler_s": seconds,
                             "skipped": int(found.group(2) or found.group(5)) if found else None, "speedup": round(base_s / seconds, 2),
                             "max_abs": distance.max_abs, "mean_abs": round(distance.mean_abs, 2),
                             "psnr_db": None if distance.psnr_db is None else round(distance.psnr_db, 1)})
                print(rows[-1], flush=True)
    print("| sampler | cache | threshold | KSampler s | skipped | speed-up | max abs | mean abs | PSNR dB |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['sampler']} | {r['cache']} | {r['threshold']} | {r['ksampler_s']} | {r['skipped']}/{args.steps} | "
              f"{r['speedup']} | {r['max_abs']} | {r['mean_abs']} | {r['psnr_db']} |")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({"size": args.size, "steps": args.steps, "checkpoint": str(args.checkpoint),
                                     "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
