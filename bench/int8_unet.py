"""Seconds per SD1.5 UNet step (one batch-2 forward: a classifier-free-guidance pair) with int8 weights
(`--int8-unet`, models/int8_weights.py) against the default bf16 path, and bf16 with packed linears
(diffusion/prepacking.py `IS_PACKING_LINEARS`), in one process, interleaved.

    flock /tmp/plexus-heavy.lock .venv/bin/python -W ignore bench/int8_unet.py --sizes 64 --rounds 5

Sides (each its own copy of the same random full-size SD1.5 weights, bench/_unet_fixture.py):
- `bf16`: the sampler's default: bf16 weights, convolutions prepacked (models/prepack.py), linears plain;
- `bf16+linears`: the same with the bf16 linears packed too (what IS_PACKING_LINEARS = True runs);
- `int8`: Linear and Conv2d weights int8 per output channel, activations quantised per call, bf16 in and out.
Each side runs `--warmup` discarded forwards, then `--rounds` rounds of one forward per side (A B C A B C ...),
so that load from other processes falls on every side alike. Printed: median and min seconds per side, the
ratio of medians against `bf16`, the layer weights' bytes per side, whether `bf16+linears` gives the very same
output as `bf16` (bit for bit), and the int8 output's relative distance from bf16's; the load average before
and after.
"""
from __future__ import annotations

import argparse
import contextlib
import copy
import json
import os
import statistics
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench._unet_fixture import Side, build_plexus, random_sd15_unet_state, time_interleaved, unet_inputs  # noqa: E402
from models.int8_weights import store_weights_in_int8  # noqa: E402
from models.prepack import prepacked_convolutions  # noqa: E402


def weight_bytes(module: torch.nn.Module) -> int:
    return sum(p.numel() * p.element_size() for p in module.parameters())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[64], help="latent sizes (image size / 8)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--sides", nargs="+", default=["bf16", "bf16+linears", "int8"],
                        choices=["bf16", "bf16+linears", "int8"])
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    print(torch.__version__, "threads", torch.get_num_threads(), "|", os.popen("uptime").read().strip(), flush=True)

    state = random_sd15_unet_state()
    models = {}
    for name in args.sides:
        model = build_plexus(state, torch.bfloat16)
        if name == "int8":
            store_weights_in_int8(model, torch.bfloat16)
        models[name] = model
    del state
    report = {"torch": torch.__version__, "sizes": {}, "weight_bytes": {n: weight_bytes(m) for n, m in models.items()}}
    with contextlib.ExitStack() as stack:
        for name, model in models.items():
            if name != "int8":
                stack.enter_context(prepacked_convolutions(model, is_packing_linears=name == "bf16+linears"))
        for size in args.sizes:
            x, t, context = unet_inputs(size, torch.bfloat16, False)
            outputs = {}

            def forward(name):
                def run():
                    outputs[name] = models[name](x, t, context)
                return run
            times = time_interleaved({n: Side(forward(n)) for n in models}, args.rounds, args.warmup,
                                     on_time=lambda n, s: print(f"  {size * 8}² {n}: {s:.3f} s", flush=True))
            base = statistics.median(times["bf16"].times_s) if "bf16" in times else None
            row = {}
            for name, side in times.items():
                row[name] = {"median_s": round(side.median_s, 3), "min_s": round(min(side.times_s), 3),
                             "times_s": [round(v, 3) for v in side.times_s],
                             "x_bf16": round(side.median_s / base, 3) if base else None}
            if "bf16" in outputs:
                ref = outputs["bf16"].double()
                if "bf16+linears" in outputs:
                    row["bf16+linears"]["is_bit_identical"] = bool(torch.equal(outputs["bf16+linears"], outputs["bf16"]))
                if "int8" in outputs:
                    row["int8"]["rel_distance"] = float((outputs["int8"].double() - ref).norm() / ref.norm())
            report["sizes"][size * 8] = row
            for name, r in row.items():
                extra = "".join(f" {k} {v}" for k, v in r.items() if k in ("is_bit_identical", "rel_distance"))
                print(f"{size * 8}² {name:13} median {r['median_s']:.3f} s  min {r['min_s']:.3f} s  "
                      f"x bf16 {r['x_bf16']}{extra}", flush=True)
    for name, n in report["weight_bytes"].items():
        print(f"weights {name}: {n / 2**20:.0f} MiB")
    report["load_after"] = os.popen("uptime").read().strip()
    print(report["load_after"])
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
