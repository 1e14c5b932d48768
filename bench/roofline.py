"""How far each model forward is from this CPU's bf16 FLOP ceiling, and where the rest of the time goes.

    .venv/bin/python bench/roofline.py                         # every model row that exists, default sizes
    .venv/bin/python bench/roofline.py --rows sd15-unet vae-decoder --sizes 256 512 --iters 3
    .venv/bin/python bench/roofline.py --ceiling-only          # just the machine's ceiling
    .venv/bin/python bench/roofline.py --json bench/results/roofline.json

In one run it measures:
1. the ceiling: bf16 GFLOP/s of large oneDNN matmuls and of the 3x3 convolutions at the SD1.5 UNet's own
   shapes (batch 2, 64x64 latents), best of several calls each; the ceiling is the fastest of them;
2. the FLOPs of each forward, counted by `torch.utils.flop_counter.FlopCounterMode` (matmuls,
   convolutions and attention; a multiply-add is 2 FLOPs);
3. each forward's median time (warm, the default bf16 path with convolution (and bf16 linear) weights
   prepacked as the sampler runs them, `--pack-linears off` for convolutions only) and its multiple of the
   FLOP bound, bound = FLOPs / ceiling;
4. a profile of one forward by op class (conv, matmul, attention, norm, pointwise, reorder/copy, other):
   the self CPU time of every aten and mkldnn op (the prepacked kernels), summed per class.

Rows: `sd15-unet` (batch 2, the CFG pair, 77-token context) and `vae-decoder` (batch 1) at each image size;
`sdxl-unet` and `sd3-mmdit` are measured once their families exist in `models/` (the row says so otherwise).
Weights are random: the numbers are about the arithmetic, not the images.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.profiler import ProfilerActivity, profile
from torch.utils.flop_counter import FlopCounterMode

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench._unet_fixture import build_plexus, random_sd15_unet_state, unet_inputs  # noqa: E402
from diffusion.prepacking import IS_PACKING_LINEARS  # noqa: E402
from models.prepack import is_packing_available, prepacked_convolutions  # noqa: E402

DTYPE = torch.bfloat16

# The 3x3 convolutions of the SD1.5 UNet at 64x64 latents (batch 2): (channels, spatial size).
UNET_CONV_SHAPES = ((320, 64), (640, 32), (1280, 16), (1280, 8))
MATMUL_SIZES = (2048, 4096)

# Op classes of the profile, by the aten op's name (first match wins).
OP_CLASSES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("attention", ("scaled_dot_product", "flash_attention", "_softmax", "softmax", "baddbmm", "bmm")),
    ("conv", ("convolution", "conv2d", "mkldnn_convolution", "_convolution_pointwise")),
    ("matmul", ("addmm", "mm", "matmul", "linear", "_linear_pointwise")),
    ("norm", ("group_norm", "layer_norm", "native_group_norm", "native_layer_norm", "batch_norm")),
    ("reorder/copy", ("copy_", "clone", "contiguous", "to_dense", "_to_copy", "reorder", "cat", "pad",
                      "constant_pad_nd", "resize_", "_reshape_alias", "view", "permute", "transpose")),
    ("pointwise", ("silu", "gelu", "mul", "add", "sub", "div", "sigmoid", "exp", "cos", "sin", "neg",
                   "upsample", "where", "fill_", "zero_", "rsqrt", "pow", "mean", "sum", "chunk", "split")),
)


def op_class(name: str) -> str:
    bare = name.removeprefix("aten::")
    for label, needles in OP_CLASSES:
        if any(bare == n or bare.startswith(n) for n in needles):
            return label
    return "other"


def best_seconds(fn: Callable[[], object], repeats: int) -> float:
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def measure_ceiling(repeats: int = 5) -> dict:
    """bf16 GFLOP/s of large matmuls and of the UNet's 3x3 convolutions (best of `repeats` each)."""
    rows = []
    g = torch.Generator().manual_seed(0)
    for n in MATMUL_SIZES:
        a = torch.randn(n, n, generator=g).to(DTYPE)
        b = torch.randn(n, n, generator=g).to(DTYPE)
        seconds = best_seconds(lambda: a @ b, repeats)
        rows.append({"op": f"matmul {n}x{n}x{n}", "gflops": 2 * n ** 3 / seconds / 1e9})
    for channels, size in UNET_CONV_SHAPES:
        x = torch.randn(2, channels, size, size, generator=g).to(DTYPE)
        w = torch.randn(channels, channels, 3, 3, generator=g).to(DTYPE)
        seconds = best_seconds(lambda: F.conv2d(x, w, padding=1), repeats)
        flops = 2 * 2 * channels * channels * 9 * size * size
        rows.append({"op": f"conv3x3 {channels}ch {size}x{size} b2", "gflops": flops / seconds / 1e9})
    return {"rows": rows, "ceiling_gflops": max(r["gflops"] for r in rows)}


@dataclass
class Forward:
    """One model row: `run()` is a warm forward; `module` is what gets its convolutions prepacked."""
    name: str
    size: int
    module: torch.nn.Module
    run: Callable[[], object]


def sd15_unet_rows(sizes: list[int]) -> list[Forward]:
    model = build_plexus(random_sd15_unet_state(), DTYPE)
    rows = []
    for size in sizes:
        x, t, context = unet_inputs(size // 8, DTYPE, is_channels_last=False)
        rows.append(Forward("sd15-unet", size, model, lambda x=x, t=t, c=context: model(x, t, c)))
    return rows


def vae_decoder_rows(sizes: list[int]) -> list[Forward]:
    from models.testing import module_layout, random_tensor
    from models.vae import AutoencoderKL, VAEConfig

    config = VAEConfig()
    with torch.device("meta"):
        vae = AutoencoderKL(config)
    state = {k: random_tensor(k, s, DTYPE, 0) for k, s in module_layout(AutoencoderKL, config, "").items()}
    vae.load_state_dict(state, assign=True)
    vae = vae.eval().requires_grad_(False)
    rows = []
    for size in sizes:
        z = torch.randn(1, config.z_channels, size // 8, size // 8, generator=torch.Generator().manual_seed(2))
        z = z.to(DTYPE).contiguous(memory_format=torch.channels_last)
        rows.append(Forward("vae-decoder", size, vae, lambda z=z: vae.decode(z)))
    return rows


def family_rows(name: str, sizes: list[int]) -> list[Forward] | str:
    """Rows of a family that may not have landed yet: a list, or the reason it is not measured."""
    builders = {"sd15-unet": sd15_unet_rows, "vae-decoder": vae_decoder_rows}
    if name in builders:
        return builders[name](sizes)
    try:
        module = __import__(f"bench._roofline_{name.replace('-', '_')}", fromlist=["rows"])
    except ImportError:
        return f"{name}: not measured (no bench/_roofline_{name.replace('-', '_')}.py: the family has not landed)"
    return module.rows(sizes)


def count_flops(fn: Callable[[], object]) -> int:
    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops()


def profile_by_class(fn: Callable[[], object]) -> dict[str, float]:
    """Seconds of self CPU time per op class in one call."""
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        fn()
    totals: dict[str, float] = defaultdict(float)
    for event in prof.key_averages():
        if event.key.startswith(("aten::", "mkldnn::")):       # mkldnn::: the prepacked convolutions / linears
            totals[op_class(event.key.removeprefix("mkldnn::"))] += event.self_cpu_time_total / 1e6
    return dict(sorted(totals.items(), key=lambda kv: -kv[1]))


def measure_row(row: Forward, ceiling_gflops: float, iters: int, is_profiled: bool,
                is_packing_linears: bool = IS_PACKING_LINEARS) -> dict:
    packing = prepacked_convolutions(row.module, is_packing_linears=is_packing_linears) \
        if is_packing_available(DTYPE) else None
    with torch.inference_mode():
        flops = count_flops(row.run)
        if packing is not None:
            packing.__enter__()
        try:
            row.run()                                         # warm-up (and the packing of every conv)
            times = []
            for _ in range(iters):
                start = time.perf_counter()
                row.run()
                times.append(time.perf_counter() - start)
            classes = profile_by_class(row.run) if is_profiled else {}
        finally:
            if packing is not None:
                packing.__exit__(None, None, None)
    median = statistics.median(times)
    bound = flops / (ceiling_gflops * 1e9)
    return {"model": row.name, "size": row.size, "gflop": flops / 1e9, "seconds": median,
            "bound_seconds": bound, "multiple_of_bound": median / bound, "achieved_gflops": flops / median / 1e9,
            "profile_seconds": classes, "times": times}


def markdown(ceiling: dict, results: list[dict], skipped: list[str]) -> str:
    lines = ["| ceiling op | bf16 GFLOP/s |", "|---|---|"]
    lines += [f"| {r['op']} | {r['gflops']:,.0f} |" for r in ceiling["rows"]]
    lines += ["", f"ceiling: {ceiling['ceiling_gflops']:,.0f} GFLOP/s", ""]
    classes = sorted({c for r in results for c in r["profile_seconds"]})
    head = "| forward | GFLOP | median s | bound s | x bound | GFLOP/s |" + "".join(f" {c} s |" for c in classes)
    lines += [head, "|" + "---|" * (6 + len(classes))]
    for r in results:
        lines.append(f"| {r['model']} {r['size']}² | {r['gflop']:,.0f} | {r['seconds']:.3f} | "
                     f"{r['bound_seconds']:.3f} | {r['multiple_of_bound']:.1f} | {r['achieved_gflops']:,.0f} |"
                     + "".join(f" {r['profile_seconds'].get(c, 0.0):.3f} |" for c in classes))
    lines += [f"- {s}" for s in skipped]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", nargs="+", default=["sd15-unet", "vae-decoder", "sdxl-unet", "sd3-mmdit"])
    parser.add_argument("--sizes", nargs="+", type=int, default=None,
                        help="image sizes in pixels (default: each row's own, e.g. 256 512 for SD1.5)")
    parser.add_argument("--iters", type=int, default=3)
    parser.add_argument("--no-profile", action="store_true")
    parser.add_argument("--ceiling-only", action="store_true")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--pack-linears", choices=["on", "off"], default="on" if IS_PACKING_LINEARS else "off",
                        help="also pack the bf16 linears (default: what the sampler does)")
    args = parser.parse_args(argv)
    default_sizes = {"sd15-unet": [256, 512], "vae-decoder": [512, 1024], "sdxl-unet": [768, 1024],
                     "sd3-mmdit": [512, 1024]}

    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, mkldnn bf16 "
          f"{'yes' if is_packing_available(DTYPE) else 'no'}", flush=True)
    ceiling = measure_ceiling()
    for r in ceiling["rows"]:
        print(f"  {r['op']:<28} {r['gflops']:>8,.0f} GFLOP/s", flush=True)
    results: list[dict] = []
    skipped: list[str] = []
    if not args.ceiling_only:
        for name in args.rows:
            rows = family_rows(name, args.sizes or default_sizes.get(name, [512]))
            if isinstance(rows, str):
                skipped.append(rows)
                print(rows, flush=True)
                continue
            for row in rows:
                result = measure_row(row, ceiling["ceiling_gflops"], args.iters, not args.no_profile,
                                     args.pack_linears == "on")
                results.append(result)
                print(f"  {result['model']} {result['size']}²: {result['gflop']:,.0f} GFLOP, "
                      f"{result['seconds']:.3f} s, {result['multiple_of_bound']:.1f}x bound", flush=True)
    report = markdown(ceiling, results, skipped)
    print(report)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"ceiling": ceiling, "results": results, "skipped": skipped},
                                        indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
