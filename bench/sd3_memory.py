"""Peak RSS of a full-size SD3 medium all-in-one file (random weights in the published layout: MM-DiT,
VAE, CLIP-L and CLIP-G in fp16, T5-XXL in fp8_e4m3fn, 10.9 GB) run txt2img in the default mode.

    flock /tmp/plexus-heavy.lock .venv/bin/python bench/sd3_memory.py [--size 256] [--steps 1] \
        [--novram --vram-budget 2] [--t5-keep-pages]

Writes the file once (--path), then in a fresh process: load (CheckpointLoaderSimple's path), encode a
prompt and an empty one (T5 computed from its fp8 weights, cast per layer), sample, encode a new prompt on the
warm models (`encode_after_sample`: what bench/compare.py's text_encode_s times), decode; prints per stage
its time, the resident set after it and its peak (anonymous and file pages apart), then the process's peak RSS
(VmHWM) and its ratio to the file size. A watchdog ends the run above --cap-gib (the machine is shared).
`--t5-keep-pages` turns off T5's per-block page release (models/text/t5.py T5Block) to compare policies.
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


GIB = 2 ** 30


def _status(field: str) -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith(field + ":"))


class Stages:
    """RSS per stage: the resident set after it and its own peak (VmHWM reset through clear_refs), plus a
    watchdog that ends the process before it takes the shared machine down (`cap_bytes`)."""

    def __init__(self, cap_bytes: int) -> None:
        import threading
        self.rows: list[dict] = []
        self.current = "start"
        self.cap = cap_bytes
        self.peak = 0
        threading.Thread(target=self._watch, daemon=True).start()

    def _watch(self) -> None:
        while True:
            rss = _status("VmRSS")
            if rss > self.cap:
                print(json.dumps({"killed_by_watchdog": self.current, "rss_gib": rss / GIB, "stages": self.rows}),
                      flush=True)
                os._exit(3)
            time.sleep(0.05)

    def run(self, name: str, fn):
        self.current = name
        try:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")                          # reset VmHWM to the current RSS
        except OSError:
            pass
        t = time.perf_counter()
        out = fn()
        row = {"stage": name, "s": round(time.perf_counter() - t, 2), "rss_gib": round(_status("VmRSS") / GIB, 2),
               "peak_gib": round(_status("VmHWM") / GIB, 2), "anon_gib": round(_status("RssAnon") / GIB, 2),
               "file_gib": round(_status("RssFile") / GIB, 2)}
        self.peak = max(self.peak, _status("VmHWM"))
        self.rows.append(row)
        print(json.dumps(row), flush=True)
        return out


def run(path: Path, size: int, steps: int, novram: bool, cap_gib: float, vram_budget_gib: float | None,
        t5_keep_pages: bool = False) -> dict:
    import torch

    from diffusion import conditioning, ksampler, loading, vae_ops
    from model_management import MemorySettings, ModelManager, VramMode, gib_to_bytes
    settings = MemorySettings(vram_mode=VramMode.NO if novram else VramMode.NORMAL,
                              vram_budget_bytes=gib_to_bytes(vram_budget_gib))
    manager = ModelManager(settings)
    stages = Stages(int(cap_gib * GIB))
    model, clip, vae = stages.run("load", lambda: loading.load_checkpoint_file(path, manager))
    t5 = clip.module.towers["t5xxl"].model
    for block in t5.encoder.block:
        block.releases_file_pages = not t5_keep_pages
    stages.run("text_to_device", lambda: manager.load_models_for([clip]))
    pos = stages.run("encode_prompt", lambda: conditioning.encode_text(clip, "a photo of a cat on a red sofa"))
    neg = stages.run("encode_empty", lambda: conditioning.encode_text(clip, ""))
    latent = stages.run("sample", lambda: ksampler.ksample(
        model, {"samples": torch.zeros(1, 16, size // 8, size // 8)}, pos, neg, seed=1, steps=steps, cfg=4.5,
        sampler_name="euler", scheduler="simple"))
    stages.run("encode_after_sample", lambda: conditioning.encode_text(clip, "an old stone bridge over a river"))
    image = stages.run("decode", lambda: vae_ops.decode(vae, latent["samples"]))
    out = {"stages": stages.rows, "image": list(image.shape), "finite": bool(torch.isfinite(image).all())}
    out["peak_rss_gib"] = max(stages.peak, _status("VmHWM")) / GIB
    out["file_gib"] = os.path.getsize(path) / GIB
    out["rss_over_file"] = out["peak_rss_gib"] / out["file_gib"]
    out["dtypes"] = {k.value: str(v.dtype) for k, v in manager.dtype_choices().items()}
    out["models"] = manager.report().get("models")
    out["t5_keep_pages"] = t5_keep_pages
    return out


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--path", type=Path, default=Path("/tmp/plexus-sd3-medium-random.safetensors"))
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--steps", type=int, default=1)
    parser.add_argument("--novram", action="store_true")
    parser.add_argument("--vram-budget", type=float, default=None, help="GiB: the simulated device (main.py's flag)")
    parser.add_argument("--cap-gib", type=float, default=19.0, help="watchdog: end the run above this RSS")
    parser.add_argument("--t5-keep-pages", action="store_true",
                        help="T5 keeps its file pages after each block (default: drops them)")
    parser.add_argument("--write-only", action="store_true", help="write the file (when absent) and stop")
    parser.add_argument("--child", action="store_true")
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))
    if args.child:
        print(json.dumps(run(args.path, args.size, args.steps, args.novram, args.cap_gib, args.vram_budget,
                                    args.t5_keep_pages), default=str))
        return 0
    if not args.path.exists():
        t = time.perf_counter()
        write(args.path)
        print(f"wrote {args.path} ({args.path.stat().st_size:,} bytes) in {time.perf_counter() - t:.0f} s")
    if args.write_only:
        return 0
    return subprocess.run([sys.executable, __file__, "--child", "--path", str(args.path), "--size", str(args.size),
                           "--steps", str(args.steps), "--cap-gib", str(args.cap_gib)]
                          + (["--novram"] if args.novram else [])
                          + (["--t5-keep-pages"] if args.t5_keep_pages else [])
                          + (["--vram-budget", str(args.vram_budget)] if args.vram_budget is not None else [])).returncode


if __name__ == "__main__":
    sys.exit(main())
