"""Peak RSS of a full-size SD3 medium all-in-one file (random weights in the published layout: MM-DiT,
VAE, CLIP-L and CLIP-G in fp16, T5-XXL in fp8_e4m3fn, 10.9 GB) run txt2img in the default mode.

    flock /tmp/plexus-heavy.lock .venv/bin/python bench/sd3_memory.py [--size 256] [--steps 1]

Writes the file once (--path), then in a fresh process: load (CheckpointLoaderSimple's path), encode a
prompt and an empty one (T5 computed from its fp8 weights, cast per layer), sample, decode; prints the
timings, the process's peak RSS (VmHWM) and its ratio to the file size.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def write(path: Path) -> None:
    import torch

    from models.mmdit import MMDiTConfig
    from models.testing import Sd3CheckpointSpec, write_random_sd3_checkpoint
    from models.text import ClipTextConfig
    from models.text.t5 import T5Config
    from models.vae import VAEConfig
    configs = {"clip_l": ClipTextConfig.of_kind("clip_l"),
               "clip_g": ClipTextConfig.of_kind("clip_g", hidden_size=1280, num_layers=32, num_heads=20,
                                                intermediate_size=5120, projection_dim=1280),
               "t5xxl": T5Config()}
    spec = Sd3CheckpointSpec(MMDiTConfig(), VAEConfig(z_channels=16, embed_dim=16, has_quant_conv=False), configs,
                             dtype=torch.float16, t5_dtype=torch.float8_e4m3fn)
    write_random_sd3_checkpoint(path, spec)


def run(path: Path, size: int, steps: int) -> dict:
    import torch

    from diffusion import conditioning, ksampler, loading, vae_ops
    from model_management import MemorySettings, ModelManager
    manager = ModelManager(MemorySettings())
    t = time.perf_counter()
    model, clip, vae = loading.load_checkpoint_file(path, manager)
    out = {"load_s": time.perf_counter() - t}
    t = time.perf_counter()
    pos = conditioning.encode_text(clip, "a photo of a cat on a red sofa")
    out["encode_prompt_s"] = time.perf_counter() - t
    neg = conditioning.encode_text(clip, "")
    t = time.perf_counter()
    latent = ksampler.ksample(model, {"samples": torch.zeros(1, 16, size // 8, size // 8)}, pos, neg, seed=1,
                              steps=steps, cfg=4.5, sampler_name="euler", scheduler="simple")
    out["sample_s"] = time.perf_counter() - t
    t = time.perf_counter()
    image = vae_ops.decode(vae, latent["samples"])
    out["decode_s"] = time.perf_counter() - t
    out["image"] = list(image.shape)
    out["finite"] = bool(torch.isfinite(image).all())
    with open("/proc/self/status") as f:
        hwm = next(int(line.split()[1]) for line in f if line.startswith("VmHWM"))
    out["peak_rss_gib"] = hwm / 2 ** 20
    out["file_gib"] = os.path.getsize(path) / 2 ** 30
    out["rss_over_file"] = out["peak_rss_gib"] / out["file_gib"]
    out["dtypes"] = {k: str(v.dtype) for k, v in manager.dtype_choices().items()}
    return out


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--path", type=Path, default=Path("/tmp/plexus-sd3-medium-random.safetensors"))
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--steps", type=int, default=1)
    parser.add_argument("--child", action="store_true")
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))
    if args.child:
        print(json.dumps(run(args.path, args.size, args.steps), default=str))
        return 0
    if not args.path.exists():
        t = time.perf_counter()
        write(args.path)
        print(f"wrote {args.path} ({args.path.stat().st_size:,} bytes) in {time.perf_counter() - t:.0f} s")
    return subprocess.run([sys.executable, __file__, "--child", "--path", str(args.path), "--size", str(args.size),
                           "--steps", str(args.steps)]).returncode


if __name__ == "__main__":
    sys.exit(main())
