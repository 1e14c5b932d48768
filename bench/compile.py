"""Does `--compile-unet` pay for itself? Eager vs torch.compile (inductor) on the full-size SD1.5 UNet, CPU.

    .venv/bin/python bench/compile.py                         # bf16, 32x32 latent (256 px), cold compile cache
    .venv/bin/python bench/compile.py --sizes 32 64 --dtype fp32 --rounds 5
    .venv/bin/python bench/compile.py --cache-dir /tmp/ind    # run twice: the second run shows a warm cache
    .venv/bin/python bench/compile.py --sizes 64 --first-prompt 6 --cache-dir /tmp/ind \
        --checkpoint /work/peer/bench-models/checkpoints/fidelity_sd15_random_fp16_s0.safetensors

Batch 2 (a classifier-free-guidance pair: one sampler step is one forward), context [2, 77, 768],
contiguous memory format, sdpa attention: the forward run_sampling makes, through
diffusion.compile.CompiledForward (what `--compile-unet` uses), under `torch.inference_mode`. The UNet's
weights are random (models.testing) or, with `--checkpoint`, a single-file SD1.5 checkpoint's (cast to
`--dtype`). Per size:

- with `--first-prompt N`, three "first prompts" of N forwards each, in this order, timed per forward:
  `none` (eager, convolutions prepacked: the default path without --compile-unet), `background` (a fresh
  CompiledForward in the background mode: its forwards run eager while the worker compiles; the row also
  has `ready_s`, first call to compiled forward ready, i.e. the compile time, cold when the cache folder
  was empty) and `blocking` (after `torch._dynamo.reset()`, a fresh CompiledForward in the blocking mode:
  the first forward compiles, from the on-disk cache that the background compile has just filled);
- `first_s`: the first compiled call (dynamo tracing + inductor code generation + one forward; with
  `--first-prompt`, the background compile's `ready_s`);
- `eager_s` / `compiled_s`: median of `--rounds` forwards each after one discarded warm-up, interleaved
  (eager, compiled, eager, ...) so that other processes' load on the shared machine falls on both alike;
  eager here is the plain module (the weights the compiled graph reads); `prepacked_s`: median of as many
  eager forwards with prepacked convolutions (the default path), timed in a block of their own (packing
  gives the plain weights up while it lasts); `eager_cpu_s` / `compiled_cpu_s`: the process's CPU seconds
  per forward (median), which a busy machine inflates less than wall time;
- `break_even_steps`: the forwards after which compiling has paid for itself:
  N * eager = first + (N - 1) * compiled, so N = (first - compiled) / (eager - compiled); none if the
  compiled forward is not faster.

`--freezing` turns on inductor's freezing (weights folded in as constants, convolutions and linears
prepacked for oneDNN) for comparison only: `--compile-unet` cannot use it, since a frozen graph would
keep computing with the weights of its first call after a LoRA patch or a reload (diffusion/compile.py).

Inductor keeps compiled code in an on-disk cache (`TORCHINDUCTOR_CACHE_DIR`; `--compile-unet` points it at
`<base directory>/cache/compile`); a later process with the same cache compiles much faster. By default the
cache here is a fresh temporary folder (a cold start, the worst case); `--cache-dir` keeps one, so a second
run measures the warm start. Each new latent size (and batch size) compiles again. Results: a table on
stdout and JSON in bench/results/compile.json (`--json` elsewhere). Measured numbers: docs/performance.md.
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
    p.add_argument("--first-prompt", type=int, default=0, metavar="N",
                   help="also time first prompts of N forwards: no compile, background, blocking")
    p.add_argument("--checkpoint", type=Path, default=None, help="SD1.5 single-file checkpoint (default random)")
    p.add_argument("--dynamic", action="store_true", help="torch.compile(dynamic=True) instead of False")
    p.add_argument("--freezing", action="store_true",
                   help="inductor freezing (weights as constants): for comparison, --compile-unet cannot use it")
    p.add_argument("--cache-dir", type=Path, default=None,
                   help="inductor's on-disk cache (default: a fresh temporary folder, i.e. a cold compile)")
    p.add_argument("--json", type=Path, default=ROOT / "bench" / "results" / "compile.json")
    return p.parse_args(argv)


def build_unet(args: argparse.Namespace, dtype):
    import torch

    from models.testing import module_layout, random_tensor, sd15_unet_config
    from models.unet import UNetModel

    with torch.device("meta"):
        unet = UNetModel(sd15_unet_config())
    if args.checkpoint is None:
        shapes = module_layout(UNetModel, sd15_unet_config(), "")
        state = {k: random_tensor(k, s, torch.float32, 0).to(dtype) for k, s in shapes.items()}
    else:
        from safetensors import safe_open

        prefix = "model.diffusion_model."
        with safe_open(str(args.checkpoint), "pt") as f:
            state = {k[len(prefix):]: f.get_tensor(k).to(dtype) for k in f.keys() if k.startswith(prefix)}
    unet.load_state_dict(state, assign=True)
    return unet.eval().requires_grad_(False)


def timed(fn, *inputs) -> tuple[float, float]:
    import time as _t
    t0, cpu0 = _t.perf_counter(), _t.process_time()
    fn(*inputs)
    return _t.perf_counter() - t0, _t.process_time() - cpu0


def first_prompts(unet, inputs, steps: int, dynamic: bool) -> dict:
    """The three first prompts (none, background, blocking) of `steps` forwards each, per-forward times."""
    import torch
    import torch._dynamo

    from diffusion.compile import CompiledForward
    from models.prepack import prepacked_convolutions

    out: dict = {}
    with prepacked_convolutions(unet):
        out["none"] = [timed(unet, *inputs)[0] for _ in range(steps)]
    forward = CompiledForward(unet, backend="inductor", dynamic=dynamic, background=True)
    started = time.perf_counter()
    out["background"] = [timed(forward, *inputs)[0] for _ in range(steps)]
    out["background_compiled_calls"] = forward.compiled_calls
    if not forward.wait(3600) or forward.is_failed:
        raise SystemExit(f"background compile failed: {forward.error}")
    out["ready_s"] = time.perf_counter() - started
    out["background_compile_s"] = forward.compile_s
    torch._dynamo.reset()
    blocking = CompiledForward(unet, backend="inductor", dynamic=dynamic, background=False)
    out["blocking"] = [timed(blocking, *inputs)[0] for _ in range(steps)]
    out["blocking_compile_s"] = blocking.compile_s
    for mode in ("none", "background", "blocking"):
        out[f"{mode}_total_s"] = sum(out[mode])
    return out, blocking


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    cache_dir = args.cache_dir or Path(tempfile.mkdtemp(prefix="plexus-inductor-"))
    is_cold = not (cache_dir.exists() and any(cache_dir.iterdir()))
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(cache_dir)      # before inductor reads its configuration

    import torch
    import torch._inductor.config as inductor_config

    from diffusion.compile import CompiledForward
    from models.prepack import prepacked_convolutions

    dtype = {"bf16": torch.bfloat16, "fp32": torch.float32}[args.dtype]
    inductor_config.freezing = args.freezing
    started = time.perf_counter()
    unet = build_unet(args, dtype)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, load average "
          f"{os.getloadavg()[0]:.1f}; SD1.5 UNet {args.dtype} ({args.checkpoint or 'random weights'}) built in "
          f"{time.perf_counter() - started:.1f} s; inductor cache {cache_dir} ({'cold' if is_cold else 'warm'}), "
          f"dynamic={args.dynamic}, freezing={args.freezing}", flush=True)

    rows = []
    forward = CompiledForward(unet, backend="inductor", dynamic=args.dynamic, background=False)
    with torch.inference_mode():
        for size in args.sizes:
            g = torch.Generator().manual_seed(1)
            x = torch.randn(2, 4, size, size, generator=g).to(dtype)             # [2, 4, h, w]
            t = torch.tensor([999.0, 999.0])
            context = torch.randn(2, 77, 768, generator=g).to(dtype)             # [2, 77, 768]
            row: dict = {"dtype": args.dtype, "size": size, "dynamic": args.dynamic, "freezing": args.freezing,
                         "cache": "cold" if is_cold else "warm", "checkpoint": str(args.checkpoint)}
            if args.first_prompt:
                prompts, forward = first_prompts(unet, (x, t, context), args.first_prompt, args.dynamic)
                row.update(prompts)
                first_s = prompts["ready_s"]
                print(f"{size}x{size} first prompt of {args.first_prompt} forwards: none "
                      f"{prompts['none_total_s']:.1f} s, background {prompts['background_total_s']:.1f} s "
                      f"(compiled ready after {first_s:.1f} s, {prompts['background_compiled_calls']} of its "
                      f"forwards compiled), blocking {prompts['blocking_total_s']:.1f} s (compile "
                      f"{prompts['blocking_compile_s']:.1f} s, cache now warm); per forward none "
                      f"{[round(s, 2) for s in prompts['none']]}, background "
                      f"{[round(s, 2) for s in prompts['background']]}, blocking "
                      f"{[round(s, 2) for s in prompts['blocking']]}", flush=True)
            else:
                t0 = time.perf_counter()
                forward(x, t, context)
                first_s = time.perf_counter() - t0
            if forward.is_failed:
                raise SystemExit(f"compile failed: {forward.error}")
            calls_before = forward.compiled_calls
            unet(x, t, context)                                                   # eager warm-up
            forward(x, t, context)
            times: dict[str, list[float]] = {"eager": [], "compiled": [], "prepacked": []}
            cpu_times: dict[str, list[float]] = {"eager": [], "compiled": []}
            for _ in range(args.rounds):
                for name, fn in (("eager", unet), ("compiled", forward)):
                    wall, cpu = timed(fn, x, t, context)
                    times[name].append(wall)
                    cpu_times[name].append(cpu)
            if forward.compiled_calls - calls_before != args.rounds + 1:
                raise SystemExit("the compiled forward did not run compiled (a guard missed?)")
            with prepacked_convolutions(unet):
                unet(x, t, context)
                times["prepacked"] = [timed(unet, x, t, context)[0] for _ in range(args.rounds)]
            eager_s, compiled_s = statistics.median(times["eager"]), statistics.median(times["compiled"])
            eager_cpu_s, compiled_cpu_s = (statistics.median(cpu_times[k]) for k in ("eager", "compiled"))
            gain_s = eager_s - compiled_s
            row.update({"first_s": first_s, "eager_s": eager_s, "compiled_s": compiled_s,
                        "prepacked_s": statistics.median(times["prepacked"]), "speedup": eager_s / compiled_s,
                        "break_even_steps": (first_s - compiled_s) / gain_s if gain_s > 0 else None,
                        "eager_cpu_s": eager_cpu_s, "compiled_cpu_s": compiled_cpu_s,
                        "times_s": times, "load_average": os.getloadavg()[0]})
            rows.append(row)
            even = f"{row['break_even_steps']:.0f}" if row["break_even_steps"] is not None else "never"
            print(f"{args.dtype} {size}x{size}: first compile {first_s:.1f} s, eager {eager_s:.3f} s, "
                  f"compiled {compiled_s:.3f} s per forward ({row['speedup']:.2f}x), prepacked eager "
                  f"{row['prepacked_s']:.3f} s, break-even after {even} steps; CPU s per forward eager "
                  f"{eager_cpu_s:.2f}, compiled {compiled_cpu_s:.2f} (load average {row['load_average']:.1f})",
                  flush=True)

    result = {"torch": torch.__version__, "threads": torch.get_num_threads(), "cpus": os.cpu_count(),
              "rounds": args.rounds, "rows": rows}
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=1))
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
