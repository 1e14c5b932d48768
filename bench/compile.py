"""Does `--compile-unet` pay for itself? Eager vs torch.compile (inductor) on the full-size SD1.5 UNet, CPU.

    .venv/bin/python bench/compile.py                         # bf16, 32x32 latent (256 px), cold compile cache
    .venv/bin/python bench/compile.py --sizes 32 64 --dtype fp32 --rounds 5
    .venv/bin/python bench/compile.py --cache-dir /tmp/ind    # run twice: the second run shows a warm cache

Batch 2 (a classifier-free-guidance pair: one sampler step is one forward), random weights, context
[2, 77, 768], contiguous memory format, sdpa attention: the forward run_sampling makes, through
diffusion.compile.CompiledForward (what `--compile-unet` uses), under `torch.inference_mode`. Per size:

- `first_s`: the first compiled call (dynamo tracing + inductor code generation + one forward);
- `eager_s` / `compiled_s`: median of `--rounds` forwards each after one discarded warm-up, interleaved
  (eager, compiled, eager, ...) so that other processes' load on the shared machine falls on both alike;
  `eager_cpu_s` / `compiled_cpu_s`: the process's CPU seconds per forward (median), which a busy machine
  inflates less than wall time (OpenMP threads that spin while descheduled still inflate it);
- `break_even_steps`: the forwards after which compiling has paid for itself:
  N * eager = first + (N - 1) * compiled, so N = (first - compiled) / (eager - compiled); none if the
  compiled forward is not faster.

`--freezing` turns on inductor's freezing (weights folded in as constants, convolutions and linears
prepacked for oneDNN) for comparison only: `--compile-unet` cannot use it, since a frozen graph would
keep computing with the weights of its first call after a LoRA patch or a reload (diffusion/compile.py).

Inductor keeps compiled code in an on-disk cache (`TORCHINDUCTOR_CACHE_DIR`); a later process with the same
cache compiles much faster. By default the cache is a fresh temporary folder (a cold start, the worst
case); `--cache-dir` keeps one, so a second run measures the warm start. Each new latent size (and batch
size) compiles again: the first call of the second size is the recompile cost. Results: a table on
stdout and JSON in bench/results/compile.json (`--json` elsewhere).

Measured on the shared 2-core AVX-512-BF16 machine at load average 4-7 (rough), bf16, 32x32: cold compile
(first call) 285 s, warm cache 15-24 s; compiled / eager 0.82-1.11x over four runs, i.e. no gain beyond
the noise. With `--freezing`: cold first call 231 s, 1.48x (wall and CPU seconds alike), break-even 38 steps.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", type=int, nargs="+", default=[32], help="latent sizes (32 = 256 px, 64 = 512 px)")
    p.add_argument("--dtype", choices=["bf16", "fp32"], default="bf16")
    p.add_argument("--rounds", type=int, default=3, help="timed forwards per side (median reported)")
    p.add_argument("--dynamic", action="store_true", help="torch.compile(dynamic=True) instead of False")
    p.add_argument("--freezing", action="store_true",
                   help="inductor freezing (weights as constants): for comparison, --compile-unet cannot use it")
    p.add_argument("--cache-dir", type=Path, default=None,
                   help="inductor's on-disk cache (default: a fresh temporary folder, i.e. a cold compile)")
    p.add_argument("--json", type=Path, default=ROOT / "bench" / "results" / "compile.json")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    cache_dir = args.cache_dir or Path(tempfile.mkdtemp(prefix="plexus-inductor-"))
    is_cold = not (cache_dir.exists() and any(cache_dir.iterdir()))
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(cache_dir)      # before inductor reads its configuration

    import torch
    import torch._inductor.config as inductor_config

    from diffusion.compile import CompiledForward
    from models.testing import module_layout, random_tensor, sd15_unet_config
    from models.unet import UNetModel

    dtype = {"bf16": torch.bfloat16, "fp32": torch.float32}[args.dtype]
    inductor_config.freezing = args.freezing
    started = time.perf_counter()
    with torch.device("meta"):
        unet = UNetModel(sd15_unet_config())
    shapes = module_layout(UNetModel, sd15_unet_config(), "")
    unet.load_state_dict({k: random_tensor(k, s, torch.float32, 0).to(dtype) for k, s in shapes.items()},
                         assign=True)
    unet.eval().requires_grad_(False)
    forward = CompiledForward(unet, backend="inductor", dynamic=args.dynamic)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, load average "
          f"{os.getloadavg()[0]:.1f}; SD1.5 UNet {args.dtype} built in {time.perf_counter() - started:.1f} s; "
          f"inductor cache {cache_dir} ({'cold' if is_cold else 'warm'}), dynamic={args.dynamic}, "
          f"freezing={args.freezing}", flush=True)

    rows = []
    with torch.inference_mode():
        for size in args.sizes:
            g = torch.Generator().manual_seed(1)
            x = torch.randn(2, 4, size, size, generator=g).to(dtype)             # [2, 4, h, w]
            t = torch.tensor([999.0, 999.0])
            context = torch.randn(2, 77, 768, generator=g).to(dtype)             # [2, 77, 768]
            compiles_before = forward.compiles
            t0 = time.perf_counter()
            forward(x, t, context)
            first_s = time.perf_counter() - t0
            if forward.is_failed:
                raise SystemExit(f"compile failed: {forward.error}")
            unet(x, t, context)                                                   # eager warm-up
            times: dict[str, list[float]] = {"eager": [], "compiled": []}
            cpu_times: dict[str, list[float]] = {"eager": [], "compiled": []}
            for _ in range(args.rounds):
                for name, fn in (("eager", unet), ("compiled", forward)):
                    t0, cpu0 = time.perf_counter(), time.process_time()
                    fn(x, t, context)
                    times[name].append(time.perf_counter() - t0)
                    cpu_times[name].append(time.process_time() - cpu0)
            eager_s, compiled_s = statistics.median(times["eager"]), statistics.median(times["compiled"])
            eager_cpu_s, compiled_cpu_s = (statistics.median(cpu_times[k]) for k in ("eager", "compiled"))
            gain_s = eager_s - compiled_s
            row = {"dtype": args.dtype, "size": size, "dynamic": args.dynamic, "freezing": args.freezing,
                   "cache": "cold" if is_cold else "warm",
                   "compiled_now": forward.compiles > compiles_before, "first_s": first_s, "eager_s": eager_s,
                   "compiled_s": compiled_s, "speedup": eager_s / compiled_s,
                   "break_even_steps": (first_s - compiled_s) / gain_s if gain_s > 0 else None,
                   "eager_cpu_s": eager_cpu_s, "compiled_cpu_s": compiled_cpu_s,
                   "eager_times_s": times["eager"], "compiled_times_s": times["compiled"],
                   "load_average": os.getloadavg()[0]}
            rows.append(row)
            even = f"{row['break_even_steps']:.0f}" if row["break_even_steps"] is not None else "never"
            print(f"{args.dtype} {size}x{size}: first compiled call {first_s:.1f} s "
                  f"({'compiled' if row['compiled_now'] else 'no new compile'}), eager {eager_s:.3f} s, "
                  f"compiled {compiled_s:.3f} s per forward ({row['speedup']:.2f}x), break-even after {even} "
                  f"steps; CPU s per forward eager {eager_cpu_s:.2f}, compiled {compiled_cpu_s:.2f} "
                  f"({eager_cpu_s / compiled_cpu_s:.2f}x) (load average {row['load_average']:.1f})", flush=True)

    result = {"torch": torch.__version__, "threads": torch.get_num_threads(), "cpus": os.cpu_count(),
              "rounds": args.rounds, "rows": rows}
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=1))
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
