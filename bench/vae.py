"""Seconds per VAE decode (and encode) of the full-size SD1.5 VAE on CPU: fp32 against bf16, memory formats,
attention backends, and what bf16 costs in pixels.

    .venv/bin/python bench/vae.py                          # 64x64 and 32x32 latents (~10 min on 2 cores)
    .venv/bin/python bench/vae.py --quick                  # 32x32 only, sdpa only, 1 timed round, no encode
    .venv/bin/python bench/vae.py --sizes 64 --dtypes fp32 bf16 --formats off input --iters 5

The model is `models.vae.AutoencoderKL` with the SD1.5 `VAEConfig()` (83.7 M parameters) and random weights
in the real layout (`models.testing.random_tensor`: LeCun-scaled, deterministic per key), stored in each
dtype (not autocast). Batch 1; the latent is N(0, 1) / 0.18215, the magnitude of the raw latents a sampler
hands the decoder.

Variants: every dtype x memory format with the sdpa backend, plus each other attention backend with the
contiguous format (`--all-combinations` for the full product). Memory formats: `off` (contiguous weights and
input), `on` (channels-last weights and input), `input` (contiguous weights, channels-last input: what
`diffusion/vae_ops.py` can do without touching a module the model manager owns). Each variant runs one
discarded warm-up decode (oneDNN builds its kernels on the first call); then `--iters` rounds each decode
every variant once, interleaved, so load from other processes on a shared machine drifts over all variants
alike. Reported: the median and the minimum wall seconds and the median CPU seconds of this process (all
threads): CPU seconds near threads x wall mean the run had its cores; far below, other processes took them
and the minimum is the steadier figure. Quality: the max / mean absolute difference of the image against the fp32,
contiguous, sdpa decode (ComfyUI's CPU path), on the 0..1 scale after ComfyUI's (x + 1) / 2 clamp: one 8-bit
step is 1/255 = 0.0039. Encode (unless `--no-encode`): a warm-up and `--encode-iters` timed encodes of a
random image per dtype, contiguous and in that dtype's fastest decode format, the latent mean compared with
fp32's. Random weights
are not the trained VAE: the error figures show the size of the arithmetic's rounding, not a trained
decoder's.

Results are printed and written as JSON to bench/results/vae.json.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
sys.path.insert(0, str(ROOT))

from models.attention import ATTENTION_BACKENDS, set_attention_backend  # noqa: E402
from models.testing import module_layout, random_tensor  # noqa: E402
from models.vae import AutoencoderKL, VAEConfig  # noqa: E402

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}
FORMATS = ("off", "on", "input")       # channels-last: neither, weights and input, input only
SD15_LATENT_SCALE = 0.18215            # SD1.x scale factor (LDM configs/stable-diffusion/v1-inference.yaml)
REFERENCE = ("fp32", "off", "sdpa")    # what ComfyUI runs on CPU: fp32, contiguous, torch's sdpa


def random_sd15_vae_state(seed: int = 0) -> dict[str, torch.Tensor]:
    """Full-size SD1.5 VAE weights in the standalone VAE file layout (`encoder.*`, `decoder.*`, ...)."""
    shapes = module_layout(AutoencoderKL, VAEConfig(), "")
    return {k: random_tensor(k, s, torch.float32, seed) for k, s in shapes.items()}


def build_vae(state: dict[str, torch.Tensor], dtype: torch.dtype, is_channels_last: bool = False) -> AutoencoderKL:
    with torch.device("meta"):
        model = AutoencoderKL(VAEConfig())
    model.load_state_dict({k: v.to(dtype) for k, v in state.items()}, assign=True)
    if is_channels_last:
        model.to(memory_format=torch.channels_last)
    return model.eval().requires_grad_(False)


def to_image(decoded: torch.Tensor) -> torch.Tensor:
    """[-1, 1] model output -> the 0..1 image ComfyUI saves (before 8-bit rounding)."""
    return ((decoded.float() + 1.0) / 2.0).clamp(0.0, 1.0)


def model_input(x: torch.Tensor, memory_format: str) -> torch.Tensor:
    return x.to(memory_format=torch.contiguous_format if memory_format == "off" else torch.channels_last)


def latent_for(size: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(1)
    return torch.randn(1, 4, size, size, generator=g) / SD15_LATENT_SCALE


def image_for(size: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(2)
    return torch.rand(1, 3, size, size, generator=g) * 2 - 1


def variants_for(args) -> list[tuple[str, str, str]]:
    """(dtype, format, backend), the reference first."""
    chosen = [(d, f, b) for d in args.dtypes for f in args.formats for b in args.backends
              if args.all_combinations or b == "sdpa" or f == "off"]
    return sorted(chosen, key=lambda v: v != REFERENCE)


class Models:
    """One model per (dtype, weights channels-last), built on first use and kept."""

    def __init__(self, state: dict[str, torch.Tensor]):
        self.state, self.built = state, {}

    def get(self, dtype_name: str, memory_format: str) -> AutoencoderKL:
        key = (dtype_name, memory_format == "on")
        if key not in self.built:
            self.built[key] = build_vae(self.state, DTYPES[dtype_name], key[1])
        return self.built[key]


@dataclass
class Timing:
    wall_s: list[float]
    cpu_s: list[float]              # this process's CPU seconds, all threads: ~threads x wall if it had the cores
    output: torch.Tensor

    def fields(self) -> dict:
        return dict(s=round(statistics.median(self.wall_s), 4), min_s=round(min(self.wall_s), 4),
                    cpu_s=round(statistics.median(self.cpu_s), 4), times_s=[round(t, 4) for t in self.wall_s])


def run_interleaved(calls: dict, iters: int) -> dict[object, Timing]:
    """A warm-up call of each fn, then `iters` rounds that call each fn once."""
    timings = {}
    with torch.inference_mode():
        for name, fn in calls.items():
            timings[name] = Timing([], [], fn())
            print(f"  warmed up {name}", flush=True)
        for i in range(iters):
            for name, fn in calls.items():
                wall, cpu = time.perf_counter(), time.process_time()
                timings[name].output = fn()
                timings[name].cpu_s.append(time.process_time() - cpu)
                timings[name].wall_s.append(time.perf_counter() - wall)
            print(f"  round {i + 1}/{iters} done", flush=True)
    return timings


def decode_call(model: AutoencoderKL, z: torch.Tensor, backend: str):
    def call():
        set_attention_backend(model, backend)
        return model.decode(z)
    return call


def encode_call(model: AutoencoderKL, images: torch.Tensor):
    def call():
        set_attention_backend(model, "sdpa")
        return model.encode(images)
    return call


def run_decode(args, models: Models) -> list[dict]:
    rows = []
    for size in args.sizes:
        z = latent_for(size)
        calls = {v: decode_call(models.get(v[0], v[1]), model_input(z, v[1]), v[2]) for v in variants_for(args)}
        timings = run_interleaved(calls, args.iters)
        reference = to_image(timings[REFERENCE].output)
        for (dtype_name, memory_format, backend), timing in timings.items():
            image = to_image(timing.output)
            diff = (image - reference).abs()
            row = dict(op="decode", latent=size, image=size * 8, dtype=dtype_name, channels_last=memory_format,
                       backend=backend, **timing.fields(), max_abs_diff=float(diff.max()),
                       mean_abs_diff=float(diff.mean()), image_std=float(image.std()),
                       is_finite=bool(torch.isfinite(timing.output).all()))
            rows.append(row)
            print(format_row(row), flush=True)
    return rows


def run_encode(args, models: Models, decode_rows: list[dict]) -> list[dict]:
    """Encode per dtype, contiguous and in the fastest decode format of that dtype; latents against fp32's."""
    rows = []
    for size in args.sizes:
        images = image_for(size * 8)
        variants = []
        for dtype_name in sorted(args.dtypes, key=lambda d: d != "fp32"):
            mine = [r for r in decode_rows if r["latent"] == size and r["dtype"] == dtype_name]
            fastest = min(mine, key=lambda r: r["min_s"])["channels_last"] if mine else "off"
            variants += [(dtype_name, f) for f in dict.fromkeys(("off", fastest))]
        calls = {v: encode_call(models.get(*v), model_input(images, v[1])) for v in variants}
        timings = run_interleaved(calls, args.encode_iters)
        reference = timings[("fp32", "off")].output.float()
        for (dtype_name, memory_format), timing in timings.items():
            diff = (timing.output.float() - reference).abs()
            row = dict(op="encode", latent=size, image=size * 8, dtype=dtype_name, channels_last=memory_format,
                       backend="sdpa", **timing.fields(), max_abs_diff=float(diff.max()),
                       mean_abs_diff=float(diff.mean()), latent_std=float(reference.std()))
            rows.append(row)
            print(format_row(row), flush=True)
    return rows


def format_row(row: dict) -> str:
    is_reference = row["max_abs_diff"] == 0 and row["dtype"] == "fp32" and row["channels_last"] == "off"
    diff = "reference" if is_reference else f"max {row['max_abs_diff']:.5f} mean {row['mean_abs_diff']:.6f}"
    return (f"{row['op']:6} {row['image']:4}² (latent {row['latent']:2}) {row['dtype']:4} "
            f"channels_last={row['channels_last']:5} {row['backend']:13} median {row['s']:7.3f} s, "
            f"min {row['min_s']:7.3f} s, cpu {row['cpu_s']:7.3f} s   {diff}")


def summarise(rows: list[dict]) -> list[str]:
    """Each variant against the fp32 reference of its op and size: median, min and CPU-time ratios."""
    lines = []
    for op in ("decode", "encode"):
        for size in sorted({r["latent"] for r in rows if r["op"] == op}, reverse=True):
            sel = [r for r in rows if r["op"] == op and r["latent"] == size]
            ref = next(r for r in sel if r["dtype"] == "fp32" and r["channels_last"] == "off"
                       and r["backend"] == "sdpa")
            what = "image" if op == "decode" else "latent"
            lines.append(f"  {op} {size * 8}²: {'variant':28} {'median':>8} {'min':>8} {'cpu':>8}   "
                         f"ratio to fp32 (median / min / cpu)   {what} diff vs fp32 (max, mean)")
            for r in sorted(sel, key=lambda r: r["min_s"]):
                lines.append(f"  {op} {size * 8}²: {r['dtype']:4} cl={r['channels_last']:5} {r['backend']:13}  "
                             f"{r['s']:7.3f}s {r['min_s']:7.3f}s {r['cpu_s']:7.3f}s   "
                             f"{r['s'] / ref['s']:.2f}x / {r['min_s'] / ref['min_s']:.2f}x / "
                             f"{r['cpu_s'] / ref['cpu_s']:.2f}x              "
                             f"{r['max_abs_diff']:.4f}, {r['mean_abs_diff']:.5f}")
    return lines


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", type=int, nargs="+", default=[64, 32], help="latent sizes (image = 8x)")
    p.add_argument("--dtypes", nargs="+", default=list(DTYPES), choices=list(DTYPES))
    p.add_argument("--formats", nargs="+", default=list(FORMATS), choices=FORMATS,
                   help="channels-last: off, on (weights and input), input (input only)")
    p.add_argument("--backends", nargs="+", default=list(ATTENTION_BACKENDS), choices=list(ATTENTION_BACKENDS))
    p.add_argument("--all-combinations", action="store_true",
                   help="every backend with every format (default: other backends only with format off)")
    p.add_argument("--iters", type=int, default=3, help="timed decode rounds (median and min reported)")
    p.add_argument("--encode-iters", type=int, default=1, help="timed encode rounds")
    p.add_argument("--no-encode", action="store_true", help="skip the encode timings")
    p.add_argument("--quick", action="store_true", help="32x32 latent, sdpa, 1 timed round, no encode")
    p.add_argument("--json", type=Path, default=RESULTS / "vae.json")
    args = p.parse_args()
    if args.quick:
        args.sizes, args.backends, args.iters, args.no_encode = [32], ["sdpa"], 1, True
    if "fp32" not in args.dtypes or "off" not in args.formats or "sdpa" not in args.backends:
        p.error("the fp32 / format off / sdpa decode is the reference; keep it in the selection")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, CPU capability "
          f"{torch.backends.cpu.get_cpu_capability()}", flush=True)
    load_before = os.getloadavg()
    models = Models(random_sd15_vae_state())
    rows = run_decode(args, models)
    if not args.no_encode:
        rows += run_encode(args, models, rows)
    print("\nFastest first, against fp32 / contiguous / sdpa (ComfyUI's CPU path):")
    print("\n".join(summarise(rows)))
    args.json.parent.mkdir(parents=True, exist_ok=True)
    meta = dict(torch=torch.__version__, threads=torch.get_num_threads(), machine=platform.machine(),
                cpu_capability=torch.backends.cpu.get_cpu_capability(), iters=args.iters,
                load_average_before_after=[*load_before, *os.getloadavg()])
    args.json.write_text(json.dumps(dict(meta=meta, rows=rows), indent=2))
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
