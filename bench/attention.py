"""One attention call per backend at the shapes of a full-size SD1.5 UNet, and what "auto" costs in accuracy.

    .venv/bin/python bench/attention.py                         # 32x32 and 64x64 latents, bf16 and fp32
    .venv/bin/python bench/attention.py --sizes 64 --dtypes bf16 --backends sdpa sliced
    .venv/bin/python bench/attention.py --unet --unet-size 32   # plus the full UNet's error against fp32

Batch 2 (a CFG pair), 8 heads; per latent size the self-attention of each level (N = h*w, 4*4 smaller per
level; head width 40, 80, 160) and the cross-attention of the largest level (77 keys). Each row: median and
min milliseconds of `--rounds` calls, the backends interleaved call by call so that other load on the
machine falls on all alike, and the largest and mean absolute difference from the formula in float64.

`--unet` builds the full-size SD1.5 UNet with random weights (bench/_unet_fixture.py) in fp32 and in bf16 and
reports, for each bf16 backend, the relative L2 and largest difference of one forward's output from the
fp32 forward: whether rounding the scores to bf16 ("sliced", which "auto" picks for bf16 on the CPU) adds
to the error a bf16 UNet already has.
Results: a table on stdout and JSON in bench/results/attention.json (`--json` to put it elsewhere).
"""
from __future__ import annotations

import argparse
import math
import statistics
import time
from pathlib import Path

import torch
from _unet_fixture import (
    RESULTS,
    build_plexus,
    environment,
    random_sd15_unet_state,
    unet_inputs,
    write_report,
)

from models.attention import ATTENTION_BACKENDS, set_attention_backend

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}
HEADS = 8


def sd15_shapes(size: int) -> list[tuple[str, int, int, int]]:
    """(label, queries, keys, head width) of each distinct attention call in an SD1.5 UNet at latent `size`."""
    shapes = []
    for level, width in enumerate((40, 80, 160)):
        tokens = (size >> level) ** 2
        shapes.append((f"self L{level}", tokens, tokens, width))
    shapes.append(("cross L0", size * size, 77, 40))
    return shapes


def time_calls(fns: dict, args: tuple, rounds: int) -> dict[str, list[float]]:
    times: dict[str, list[float]] = {name: [] for name in fns}
    with torch.inference_mode():
        for fn in fns.values():                      # warm-up: kernel selection, allocator growth
            fn(*args, False)
        for _ in range(rounds):
            for name, fn in fns.items():
                start = time.perf_counter()
                fn(*args, False)
                times[name].append((time.perf_counter() - start) * 1e3)
    return times


def op_rows(sizes: list[int], dtypes: list[str], backends: list[str], rounds: int) -> list[dict]:
    rows = []
    g = torch.Generator().manual_seed(0)
    for size in sizes:
        for label, n, m, d in sd15_shapes(size):
            q = torch.randn(2, HEADS, n, d, generator=g)
            k, v = (torch.randn(2, HEADS, m, d, generator=g) for _ in range(2))
            scores = torch.softmax(q.double() @ k.double().transpose(-1, -2) / math.sqrt(d), -1)
            expected = scores @ v.double()
            del scores
            for dtype_name in dtypes:
                args = tuple(t.to(DTYPES[dtype_name]) for t in (q, k, v))
                fns = {name: ATTENTION_BACKENDS[name] for name in backends}
                times = time_calls(fns, args, rounds)
                for name, fn in fns.items():
                    with torch.inference_mode():
                        err = (fn(*args, False).double() - expected).abs()
                    rows.append({"size": size, "call": label, "queries": n, "keys": m, "head_width": d,
                                 "dtype": dtype_name, "backend": name,
                                 "median_ms": statistics.median(times[name]), "min_ms": min(times[name]),
                                 "max_abs_err": err.max().item(), "mean_abs_err": err.mean().item()})
                    print(f"{size:>3}² {label:<9} N={n:<5} M={m:<5} d={d:<4} {dtype_name:<5} {name:<14} "
                          f"{rows[-1]['median_ms']:9.1f} ms (min {rows[-1]['min_ms']:8.1f})  "
                          f"err max {rows[-1]['max_abs_err']:.4f} mean {rows[-1]['mean_abs_err']:.5f}", flush=True)
    return rows


def unet_rows(size: int, backends: list[str]) -> list[dict]:
    state = random_sd15_unet_state()
    x, t, context = unet_inputs(size, torch.float32, False)
    with torch.inference_mode():
        model = build_plexus(state, torch.float32, "sdpa")
        expected = model(x, t, context).double()
        del model
        model = build_plexus(state, torch.bfloat16)
        rows = []
        for name in backends:
            set_attention_backend(model, name)
            got = model(x.bfloat16(), t, context.bfloat16()).double()
            rows.append({"size": size, "backend": name,
                         "relative_l2": ((got - expected).norm() / expected.norm()).item(),
                         "max_abs_err": (got - expected).abs().max().item()})
            print(f"UNet {size}² bf16 {name:<14} relative L2 {rows[-1]['relative_l2']:.5f}  "
                  f"max {rows[-1]['max_abs_err']:.4f}  (against the fp32 forward)", flush=True)
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", type=int, nargs="+", default=[32, 64])
    p.add_argument("--dtypes", nargs="+", choices=sorted(DTYPES), default=["bf16", "fp32"])
    p.add_argument("--backends", nargs="+", choices=sorted(ATTENTION_BACKENDS),
                   default=["sdpa", "sliced", "sub_quadratic"])
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--unet", action="store_true", help="also the full UNet's bf16 error against fp32")
    p.add_argument("--unet-size", type=int, default=32)
    p.add_argument("--json", type=Path, default=RESULTS / "attention.json")
    args = p.parse_args()
    report = {"environment": environment(), "calls": op_rows(args.sizes, args.dtypes, args.backends, args.rounds)}
    if args.unet:
        report["unet"] = unet_rows(args.unet_size, args.backends)
    write_report(args.json, report)


if __name__ == "__main__":
    main()
