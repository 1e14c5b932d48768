"""Seconds per UNet forward for the full-size SD1.5 architecture on CPU, against diffusers on the same weights.

    .venv/bin/python bench/unet.py                      # everything (several minutes on 2 cores)
    .venv/bin/python bench/unet.py --quick              # 32x32 only, sdpa only, 1 timed iteration
    .venv/bin/python bench/unet.py --sizes 64 --dtypes bf16 --backends sdpa --channels-last on

Batch 2 (a classifier-free-guidance pair), random weights, context [2, 77, 768]. For each latent size,
dtype (fp32; bf16 stored as bf16, not autocast), memory format and attention backend it prints the median
seconds per forward; then the same forward in diffusers' UNet2DConditionModel (test-only dependency) with
the same weights converted by diffusers' own single-file converter, and the ratio. `--load` also writes a
full-size SD1.5 .safetensors (fp16, streamed) and measures, in a fresh subprocess, the time from
`load_checkpoint` to the end of the first forward, and that subprocess's peak RSS.
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

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from models.attention import ATTENTION_BACKENDS, set_attention_backend  # noqa: E402
from models.testing import module_layout, random_tensor, sd15_unet_config  # noqa: E402
from models.unet import UNetConfig, UNetModel  # noqa: E402

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def random_sd15_unet_state(seed: int = 0) -> dict[str, torch.Tensor]:
    """Full-size SD1.5 UNet weights in the LDM file layout (keys without `model.diffusion_model.`)."""
    shapes = module_layout(UNetModel, sd15_unet_config(), "")
    return {k: random_tensor(k, s, torch.float32, seed) for k, s in shapes.items()}


def build_plexus(state: dict[str, torch.Tensor], dtype: torch.dtype, backend: str) -> UNetModel:
    with torch.device("meta"):
        model = UNetModel(sd15_unet_config(), attention=backend)
    model.load_state_dict({k: v.to(dtype) for k, v in state.items()}, assign=True)
    return model.eval().requires_grad_(False)


def build_diffusers(state: dict[str, torch.Tensor], dtype: torch.dtype):
    import diffusers
    from diffusers.loaders.single_file_utils import convert_ldm_unet_checkpoint
    c: UNetConfig = sd15_unet_config()
    config = dict(in_channels=4, out_channels=4, block_out_channels=[c.model_channels * m for m in c.channel_mult],
                  down_block_types=["CrossAttnDownBlock2D"] * 3 + ["DownBlock2D"],
                  up_block_types=["UpBlock2D"] + ["CrossAttnUpBlock2D"] * 3, layers_per_block=2,
                  cross_attention_dim=768, attention_head_dim=8)
    converted = convert_ldm_unet_checkpoint({"model.diffusion_model." + k: v for k, v in state.items()}, config)
    with torch.device("meta"):
        model = diffusers.UNet2DConditionModel(**config)
    model.load_state_dict({k: v.to(dtype) for k, v in converted.items()}, assign=True, strict=True)
    return model.eval().requires_grad_(False)


def time_forward(fn, warmup: int, iters: int) -> float:
    with torch.inference_mode():
        for _ in range(warmup):
            fn()
        times = []
        for _ in range(iters):
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
    return statistics.median(times)


def inputs(size: int, dtype: torch.dtype, channels_last: bool):
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, 4, size, size, generator=g).to(dtype)
    if channels_last:
        x = x.to(memory_format=torch.channels_last)
    return x, torch.tensor([999.0, 999.0]), torch.randn(2, 77, 768, generator=g).to(dtype)


def run_speed(args) -> list[dict]:
    torch.manual_seed(0)
    state = random_sd15_unet_state()
    rows = []
    for dtype_name in args.dtypes:
        dtype = DTYPES[dtype_name]
        ours = build_plexus(state, dtype, "sdpa")
        theirs = None if args.skip_diffusers else build_diffusers(state, dtype)
        for size in args.sizes:
            for cl in args.channels_last:
                is_cl = cl == "on"
                ours.to(memory_format=torch.channels_last if is_cl else torch.contiguous_format)
                x, t, ctx = inputs(size, dtype, is_cl)
                for backend in args.backends:
                    set_attention_backend(ours, backend)
                    s = time_forward(lambda: ours(x, t, ctx), args.warmup, args.iters)
                    rows.append(dict(impl="plexus", dtype=dtype_name, size=size, channels_last=cl, backend=backend, s=s))
                    print(f"plexus    {dtype_name:4} {size:3}x{size:<3} channels_last={cl:3} {backend:13} {s:7.3f} s",
                          flush=True)
                if theirs is not None:
                    theirs.to(memory_format=torch.channels_last if is_cl else torch.contiguous_format)
                    s = time_forward(lambda: theirs(x, t, encoder_hidden_states=ctx).sample, args.warmup, args.iters)
                    rows.append(dict(impl="diffusers", dtype=dtype_name, size=size, channels_last=cl, backend="sdpa", s=s))
                    print(f"diffusers {dtype_name:4} {size:3}x{size:<3} channels_last={cl:3} {'sdpa':13} {s:7.3f} s",
                          flush=True)
        del ours, theirs
    return rows


def summarise(rows: list[dict]) -> None:
    print("\nPlexus best vs diffusers best (same dtype and size):")
    for dtype_name in sorted({r["dtype"] for r in rows}):
        for size in sorted({r["size"] for r in rows}):
            sel = [r for r in rows if r["dtype"] == dtype_name and r["size"] == size]
            ours = [r for r in sel if r["impl"] == "plexus"]
            theirs = [r for r in sel if r["impl"] == "diffusers"]
            if not ours or not theirs:
                continue
            best, ref = min(ours, key=lambda r: r["s"]), min(theirs, key=lambda r: r["s"])
            default = next((r for r in ours if r["backend"] == "sdpa" and r["channels_last"] == "on"), best)
            print(f"  {dtype_name:4} {size:3}x{size:<3}: plexus {best['s']:.3f} s ({best['backend']}, channels_last="
                  f"{best['channels_last']}), plexus default (sdpa, cl on) {default['s']:.3f} s, diffusers "
                  f"{ref['s']:.3f} s (cl {ref['channels_last']}) -> speed-up {ref['s'] / best['s']:.2f}x "
                  f"(default {ref['s'] / default['s']:.2f}x)")


def run_load(args) -> None:
    """Write a full-size SD1.5 checkpoint and time load -> first forward in a fresh process."""
    from models.testing import CheckpointSpec, tiny_vae_config, write_random_checkpoint  # noqa: F401
    from models.vae import VAEConfig
    tmp = Path(args.checkpoint) if args.checkpoint else Path(tempfile.mkdtemp()) / "sd15_random_fp16.safetensors"
    if not tmp.exists():
        t0 = time.perf_counter()
        write_random_checkpoint(tmp, CheckpointSpec("sd1", sd15_unet_config(), VAEConfig(), dtype=torch.float16))
        print(f"wrote {tmp} ({tmp.stat().st_size / 1e9:.2f} GB) in {time.perf_counter() - t0:.1f} s", flush=True)
    for dtype_name in args.load_dtypes:
        out = subprocess.run([sys.executable, __file__, "--load-child", str(tmp), "--load-dtype", dtype_name],
                             capture_output=True, text=True, check=True)
        result = json.loads(out.stdout.strip().splitlines()[-1])
        print(f"load {tmp.name} as {dtype_name}: load {result['load_s']:.2f} s, first forward (64x64, batch 2) "
              f"{result['forward_s']:.2f} s, load->first forward {result['total_s']:.2f} s, "
              f"peak RSS {result['peak_rss_mib']:.0f} MiB", flush=True)
    if not args.checkpoint:
        tmp.unlink()


def load_child(path: str, dtype_name: str) -> None:
    from models.checkpoint import load_checkpoint
    t0 = time.perf_counter()
    ckpt = load_checkpoint(path, dtype=DTYPES[dtype_name])
    ckpt.unet.to(memory_format=torch.channels_last)
    t1 = time.perf_counter()
    x, t, ctx = inputs(64, DTYPES[dtype_name], True)
    with torch.inference_mode():
        ckpt.unet(x, t, ctx)
    t2 = time.perf_counter()
    print(json.dumps(dict(load_s=t1 - t0, forward_s=t2 - t1, total_s=t2 - t0, peak_rss_mib=peak_rss_mib())))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", type=int, nargs="+", default=[32, 64])
    p.add_argument("--dtypes", nargs="+", default=["fp32", "bf16"], choices=list(DTYPES))
    p.add_argument("--backends", nargs="+", default=list(ATTENTION_BACKENDS), choices=list(ATTENTION_BACKENDS))
    p.add_argument("--channels-last", nargs="+", default=["on", "off"], choices=["on", "off"])
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--iters", type=int, default=3)
    p.add_argument("--skip-diffusers", action="store_true")
    p.add_argument("--load", action="store_true", help="also measure checkpoint load -> first forward")
    p.add_argument("--no-speed", action="store_true", help="skip the per-forward timings")
    p.add_argument("--load-dtypes", nargs="+", default=["fp32", "bf16"], choices=list(DTYPES))
    p.add_argument("--checkpoint", help="existing SD1.5 .safetensors for --load (else a random one is written)")
    p.add_argument("--quick", action="store_true", help="32x32, sdpa, channels-last on, 1 iteration")
    p.add_argument("--load-child", help=argparse.SUPPRESS)
    p.add_argument("--load-dtype", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.load_child:
        return load_child(args.load_child, args.load_dtype)
    if args.quick:
        args.sizes, args.backends, args.channels_last, args.iters = [32], ["sdpa"], ["on"], 1
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, CPU capability "
          f"{torch.backends.cpu.get_cpu_capability()}", flush=True)
    if not args.no_speed:
        rows = run_speed(args)
        summarise(rows)
        print(f"peak RSS of the timing process: {peak_rss_mib():.0f} MiB")
    if args.load:
        run_load(args)


if __name__ == "__main__":
    main()
