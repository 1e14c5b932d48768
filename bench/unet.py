"""Seconds per UNet forward for the full-size SD1.5 architecture on CPU, against diffusers on the same
weights.

    .venv/bin/python bench/unet.py                      # everything (tens of minutes on 2 cores)
    .venv/bin/python bench/unet.py --quick              # 32x32, auto, contiguous, fp32 + bf16, 2 rounds
    .venv/bin/python bench/unet.py --sizes 32 64 --dtypes bf16 --attention sdpa sliced subquad \
        --channels-last on
    .venv/bin/python bench/unet.py --no-speed --load    # only checkpoint load -> first forward

Batch 2 (a classifier-free-guidance pair), random weights, context [2, 77, 768]. For each dtype (fp32; bf16
stored as bf16, not autocast) and latent size, every memory format x attention backend of Plexus and each
memory format of diffusers' UNet2DConditionModel (test-only dependency; weights converted by diffusers' own
single-file converter; its default SDPA processor) run interleaved: one discarded warm-up forward each, then
rounds of one forward per side (the model is switched to the side's format and backend untimed), so that
other processes' load on the shared machine falls on all sides alike. Before the first configuration the
process runs `--global-warmup` discarded forwards (oneDNN primitive creation, allocator growth and
first-touch page faults otherwise land on whatever is measured first). Reported per row: median and min
seconds, and `peak_delta_mib`, the peak RSS of one forward above the RSS before it (activation memory, which
the sliced / sub-quadratic backends exist to cut; a lower bound, since memory an earlier forward freed but
the allocator kept is reused without showing). "Default" below means what Plexus's sampler runs unless told: convolution
weights prepacked once (`--prepack on`: the warm-up forwards pack them, as the first step of a sampling run
does; models/prepack.py), attention "auto" (sliced for bf16 on the CPU, sdpa otherwise), channels-last off. The summary also sets Plexus's bf16
default against diffusers' fp32 forward of the same run (issue 4's "at least 1.8x faster with bf16").

`--load` times, in a fresh subprocess per dtype, `models.checkpoint.load_checkpoint` of a full-size SD1.5
.safetensors (the whole file: UNet, VAE, text encoder) to the end of the first UNet forward (`--load-size`,
contiguous, attention auto), and that subprocess's peak RSS. The checkpoint is bench/txt2img.py's random-weight fp16
file (bench/results/sd15-random-fp16.safetensors, written once when missing) unless `--checkpoint` names one;
it is read once beforehand so every run starts from the page cache (a cold disk is not measured).
Results: a table on stdout and JSON in bench/results/unet.json (`--json` to put it elsewhere).
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

PROCESS_START = time.perf_counter()

import torch
from _unet_fixture import (
    DTYPES,
    RESULTS,
    ROOT,
    Side,
    build_plexus,
    environment,
    peak_rss_mib,
    random_sd15_unet_state,
    set_memory_format,
    time_interleaved,
    unet_inputs,
    write_report,
)

from models.attention import ATTENTION_BACKENDS, DEFAULT_ATTENTION, set_attention_backend
from models.prepack import prepacked_convolutions
from models.testing import sd15_unet_config
from models.unet import UNetConfig

BACKEND_ALIASES = {"subquad": "sub_quadratic", "sub-quadratic": "sub_quadratic", "slicing": "sliced"}
RESULT_PREFIX = "RESULT "


def backend_name(name: str) -> str:
    name = BACKEND_ALIASES.get(name, name)
    if name not in ATTENTION_BACKENDS:
        raise argparse.ArgumentTypeError(f"unknown attention backend {name!r}; choose from "
                                         f"{sorted([*ATTENTION_BACKENDS, *BACKEND_ALIASES])}")
    return name


def build_diffusers(state: dict[str, torch.Tensor], dtype: torch.dtype):
    import diffusers
    from diffusers.loaders.single_file_utils import convert_ldm_unet_checkpoint
    c: UNetConfig = sd15_unet_config()
    config = {"in_channels": 4, "out_channels": 4,
              "block_out_channels": [c.model_channels * m for m in c.channel_mult],
                  "down_block_types": ["CrossAttnDownBlock2D"] * 3 + ["DownBlock2D"],
                  "up_block_types": ["UpBlock2D"] + ["CrossAttnUpBlock2D"] * 3, "layers_per_block": 2,
                  "cross_attention_dim": 768, "attention_head_dim": 8}
    ldm_state = {"model.diffusion_model." + k: v for k, v in state.items()}
    converted = convert_ldm_unet_checkpoint(ldm_state, config)
    with torch.device("meta"):
        model = diffusers.UNet2DConditionModel(**config)
    model.load_state_dict({k: v.to(dtype) for k, v in converted.items()}, assign=True, strict=True)
    return model.eval().requires_grad_(False)


def plexus_side(model, backend: str, is_channels_last: bool | None, inputs) -> Side:
    """`is_channels_last` None: leave the memory format alone (a model inside a prepacked block)."""
    def enter() -> None:
        if is_channels_last is not None:
            set_memory_format(model, is_channels_last)
        set_attention_backend(model, backend)
    return Side(run=lambda: model(*inputs), enter=enter)


def diffusers_side(model, is_channels_last: bool, inputs) -> Side:
    x, t, context = inputs
    return Side(run=lambda: model(x, t, encoder_hidden_states=context).sample,
                enter=lambda: set_memory_format(model, is_channels_last))


def run_speed(args) -> list[dict]:
    """Per dtype and size: every (memory format, backend) of Plexus and diffusers, interleaved by round."""
    torch.manual_seed(0)
    state = random_sd15_unet_state()
    rows: list[dict] = []
    is_warm = False
    for dtype_name in args.dtypes:
        dtype = DTYPES[dtype_name]
        ours = build_plexus(state, dtype) if "off" in args.prepack else None
        packed = build_plexus(state, dtype) if "on" in args.prepack else None
        theirs = None if args.skip_diffusers else build_diffusers(state, dtype)
        block = contextlib.ExitStack()
        if packed is not None:       # packed once, as in a sampling run; the warm-up forwards pack
            block.enter_context(prepacked_convolutions(packed))
        for size in args.sizes:
            sides: dict[str, Side] = {}
            for cl in args.channels_last:                 # one format's sides adjacent: fewer conversions
                inputs = unet_inputs(size, dtype, cl == "on")
                for backend in args.attention:
                    if ours is not None:
                        sides[f"plexus {backend} {cl}"] = plexus_side(ours, backend, cl == "on", inputs)
                    if packed is not None and cl == "off":
                        sides[f"plexus+prepack {backend} {cl}"] = plexus_side(packed, backend, None, inputs)
                if theirs is not None:
                    sides[f"diffusers sdpa {cl}"] = diffusers_side(theirs, cl == "on", inputs)
            if not is_warm:
                global_warmup(next(iter(sides.values())), args.global_warmup)
                is_warm = True
            measured = time_interleaved(sides, args.iters, args.warmup)
            for name, side in measured.items():
                impl, backend, cl = name.split()
                row = {"impl": impl, "backend": backend, "dtype": dtype_name, "size": size,
                       "channels_last": cl, "s": round(side.median_s, 4),
                       "min_s": round(min(side.times_s), 4),
                       "times_s": [round(s, 4) for s in side.times_s],
                       "peak_delta_mib": round(side.peak_delta_mib), "peak_mib": round(side.peak_mib)}
                rows.append(row)
                print(f"{impl:14} {dtype_name:4} {size:3}x{size:<3} channels_last={cl:3} {backend:13} "
                      f"median {row['s']:7.3f} s  min {row['min_s']:7.3f} s  "
                      f"forward peak +{row['peak_delta_mib']:5d} MiB", flush=True)
        block.close()
        del ours, packed, theirs
    return rows


def global_warmup(side: Side, count: int) -> None:
    side.enter()
    with torch.inference_mode():
        for i in range(count):
            started = time.perf_counter()
            side.run()
            elapsed = time.perf_counter() - started
            print(f"(global warm-up forward {i + 1}: {elapsed:.3f} s, discarded)", flush=True)
    side.leave()


def plexus_default(rows: list[dict]) -> dict | None:
    """The row of what the sampler runs unless told: prepacked if measured, attention auto, contiguous."""
    for impl in ("plexus+prepack", "plexus"):
        for r in rows:
            if r["impl"] == impl and r["backend"] == DEFAULT_ATTENTION and r["channels_last"] == "off":
                return r
    return None


def summarise(rows: list[dict]) -> list[dict]:
    """Per dtype and size: Plexus's best and default against diffusers' best; and per size Plexus's bf16
    default against diffusers' fp32."""
    summary = []
    print("\nPlexus vs diffusers (same dtype and size; ratio > 1 means Plexus is faster):")
    for dtype_name in sorted({r["dtype"] for r in rows}):
        for size in sorted({r["size"] for r in rows}):
            sel = [r for r in rows if r["dtype"] == dtype_name and r["size"] == size]
            ours = [r for r in sel if r["impl"].startswith("plexus")]
            theirs = [r for r in sel if r["impl"] == "diffusers"]
            if not ours or not theirs:
                continue
            best, ref = min(ours, key=lambda r: r["s"]), min(theirs, key=lambda r: r["s"])
            default = plexus_default(ours) or best
            summary.append({"dtype": dtype_name, "size": size, "plexus_best": best, "plexus_default": default,
                            "diffusers_best": ref, "speedup_best": round(ref["s"] / best["s"], 3),
                            "speedup_default": round(ref["s"] / default["s"], 3)})
            print(f"  {dtype_name:4} {size:3}x{size:<3}: plexus best {best['s']:.3f} s ({best['impl']}, "
                  f"{best['backend']}, channels_last={best['channels_last']}), default ({default['impl']}, "
                  f"{default['backend']}) {default['s']:.3f} s; diffusers {ref['s']:.3f} s "
                  f"(cl {ref['channels_last']}) -> x{ref['s'] / best['s']:.2f} (default x{ref['s'] / default['s']:.2f})")
    for size in sorted({r["size"] for r in rows}):
        low = plexus_default([r for r in rows if r["dtype"] == "bf16" and r["size"] == size])
        full = [r for r in rows if r["impl"] == "diffusers" and r["dtype"] == "fp32" and r["size"] == size]
        if low and full:
            ref = min(full, key=lambda r: r["s"])
            summary.append({"size": size, "plexus_bf16_default": low, "diffusers_fp32_best": ref,
                            "speedup_bf16_over_diffusers_fp32": round(ref["s"] / low["s"], 3)})
            print(f"  bf16 (Plexus default) vs fp32 (diffusers) {size:3}x{size:<3}: {low['s']:.3f} s vs "
                  f"{ref['s']:.3f} s -> x{ref['s'] / low['s']:.2f}")
    return summary


def ensure_checkpoint(path: Path) -> Path:
    if not path.is_file():
        sys.path.insert(0, str(ROOT / "bench"))
        from txt2img import write_checkpoint  # the same file bench/txt2img.py and memory.py use
        write_checkpoint(path)
    with open(path, "rb") as f:                           # into the page cache, so each child reads it warm
        while f.read(64 * 1024 * 1024):
            pass
    return path


def run_load(args) -> list[dict]:
    """Checkpoint load -> first forward, in a fresh process per dtype (peak RSS only ever grows)."""
    path = ensure_checkpoint(Path(args.checkpoint).resolve())
    results = []
    for dtype_name in args.load_dtypes:
        command = [sys.executable, __file__, "--load-child", str(path), "--load-dtype", dtype_name,
                   "--load-size", str(args.load_size)]
        done = subprocess.run(command, capture_output=True, text=True, cwd=ROOT, env=dict(os.environ),
                              check=False)
        lines = [ln for ln in done.stdout.splitlines() if ln.startswith(RESULT_PREFIX)]
        if done.returncode != 0 or not lines:
            print(f"load as {dtype_name} failed (exit {done.returncode}):\n{done.stderr[-4000:]}",
                  file=sys.stderr)
            results.append({"dtype": dtype_name, "error": done.stderr[-2000:] or f"exit {done.returncode}"})
            continue
        result = json.loads(lines[-1][len(RESULT_PREFIX):])
        results.append(result)
        print(f"load {path.name} ({path.stat().st_size / 1e9:.2f} GB) as {dtype_name}: "
              f"import {result['import_s']:.2f} s, "
              f"load {result['load_s']:.2f} s, first forward ({args.load_size}x{args.load_size}, batch 2) "
              f"{result['first_forward_s']:.2f} s (second {result['second_forward_s']:.2f} s), "
              f"load -> end of first forward {result['load_to_first_forward_s']:.2f} s, "
              f"peak RSS {result['peak_rss_mib']:.0f} MiB", flush=True)
    return results


def load_child(path: str, dtype_name: str, size: int) -> None:
    imported = time.perf_counter()
    from models.checkpoint import load_checkpoint
    dtype = DTYPES[dtype_name]
    x, t, context = unet_inputs(size, dtype, False)
    started = time.perf_counter()
    ckpt = load_checkpoint(path, dtype=dtype)
    unet = ckpt.unet
    loaded = time.perf_counter()
    with torch.inference_mode():
        unet(x, t, context)
        first = time.perf_counter()
        unet(x, t, context)
        second = time.perf_counter()
    print(RESULT_PREFIX + json.dumps({
        "dtype": dtype_name, "size": size, "import_s": round(imported - PROCESS_START, 3),
        "load_s": round(loaded - started, 3), "first_forward_s": round(first - loaded, 3),
        "second_forward_s": round(second - first, 3),
        "load_to_first_forward_s": round(first - started, 3), "peak_rss_mib": round(peak_rss_mib()),
    }), flush=True)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", type=int, nargs="+", default=[32, 64], help="latent sizes (image size / 8)")
    p.add_argument("--dtypes", nargs="+", default=["fp32", "bf16"], choices=list(DTYPES))
    p.add_argument("--attention", "--backends", dest="attention", nargs="+", type=backend_name,
                   default=list(ATTENTION_BACKENDS), help="auto, sdpa, sliced, subquad (= sub_quadratic)")
    p.add_argument("--channels-last", nargs="+", default=["on", "off"], choices=["on", "off"])
    p.add_argument("--prepack", nargs="+", default=["on", "off"], choices=["on", "off"],
                   help="convolution weights packed once (what the sampler does on a CPU; contiguous inputs "
                        "only) and/or plain")
    p.add_argument("--warmup", type=int, default=1, help="discarded forwards per configuration")
    p.add_argument("--global-warmup", type=int, default=2,
                   help="discarded forwards before the first configuration")
    p.add_argument("--iters", type=int, default=3, help="timed rounds (one forward per configuration each)")
    p.add_argument("--skip-diffusers", action="store_true")
    p.add_argument("--load", action="store_true", help="also measure checkpoint load -> first forward")
    p.add_argument("--no-speed", action="store_true", help="skip the per-forward timings")
    p.add_argument("--load-dtypes", nargs="+", default=["fp32", "bf16"], choices=list(DTYPES))
    p.add_argument("--load-size", type=int, default=64, help="latent size of the first forward after loading")
    p.add_argument("--checkpoint", default=str(RESULTS / "sd15-random-fp16.safetensors"),
                   help="SD1.5 .safetensors for --load (written with random weights when missing)")
    p.add_argument("--json", type=Path, default=RESULTS / "unet.json", help="where to write the results")
    p.add_argument("--quick", action="store_true", help="32x32, auto, contiguous, 2 rounds")
    p.add_argument("--load-child", help=argparse.SUPPRESS)
    p.add_argument("--load-dtype", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.quick:
        args.sizes, args.attention, args.channels_last, args.iters = [32], [DEFAULT_ATTENTION], ["off"], 2
    return args


def main() -> None:
    args = parse_args()
    if args.load_child:
        return load_child(args.load_child, args.load_dtype, args.load_size)
    env = environment()
    print(f"torch {env['torch']}, {env['threads']} threads, CPU capability {env['cpu_capability']}, "
          f"load average {env['load_average'][0]:.2f}", flush=True)
    report: dict = {"environment": env, "args": {k: v for k, v in vars(args).items() if k not in ("json",)
                                                 and not k.startswith("load_child")}}
    if not args.no_speed:
        report["rows"] = run_speed(args)
        report["summary"] = summarise(report["rows"])
        report["timing_process_peak_rss_mib"] = max(r["peak_mib"] for r in report["rows"])
    if args.load:
        report["load"] = run_load(args)
    write_report(args.json, report)


if __name__ == "__main__":
    main()
