"""LoRA benchmark: time to apply and to remove a rank-32 kohya LoRA on the full-size SD1.5 layout
(UNet + CLIP-L), and peak RSS while doing it, against the RSS of the same model loaded without it.

    .venv/bin/python bench/lora.py                        # both modes, fp16 weights, CPU
    .venv/bin/python bench/lora.py --modes full --dtype fp32 --repeats 5

Targets (the weight-patching issue): apply and remove under 1 s each, peak RSS less than 10% above
the RSS without the LoRA.

- `full`: a full-size random-weight SD1.5 checkpoint (fp16 .safetensors, bench/results/sd15-random-fp16
  .safetensors, written by bench/txt2img.py when missing) loaded through the real loader with the default
  CPU policy (bf16 UNet, fp32 text encoder, each converted once while loading), fully on the compute
  device (the CPU). "Apply" = read the LoRA file, build the patches, record them on clones and load the
  clones: the manager merges each patched weight in fp32 straight into the model's own converted tensor
  (row block by row block) — no patched copy. "Remove" = load the un-patched handles again: the patched
  weights are rebuilt from the checkpoint file (read again and converted as when loading), bit-identical.
- `full-copy` (`--dtype`): the same model built in memory with no file behind it (as with a GPU, where the
  base stays in RAM and the merged weights are device memory): merged weights are new tensors, and on the
  CPU device they are RAM, so RSS grows by the bytes of the weights the LoRA touches.
- `streamed`: novram with a simulated device budget: nothing resident, every module streamed in for its
  forward pass and patched on the fly. Measured: load time and one small UNet forward (8x8 latent) with
  and without the LoRA, and the peak RSS of each.

Each mode runs in a fresh subprocess (peak RSS only ever grows in a process). The model is built in
memory with random weights in the SD1.5 layout (`models.testing.sd15_unet_config`, CLIP-L sizes), and the
LoRA file is written as kohya would write it (`lora_unet_<diffusers name>`, `lora_te_text_model_...`,
`.lora_down/.lora_up/.alpha`, fp16) for every Linear/1x1 conv of the transformers and text layers.
"""
from __future__ import annotations

import argparse
import gc
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import psutil
import torch

from model_management import MemorySettings, ModelHandle, ModelManager, VramMode
from models.lora import apply_lora, diffusers_unet_module_map, load_lora_state_dict
from models.testing import sd15_unet_config, text_encoder_config
from models.text import TextEncoder
from models.unet import UNetModel

MIB = 1024 ** 2
DTYPES = {"fp16": torch.float16, "fp32": torch.float32, "bf16": torch.bfloat16}
KOHYA_UNET_CHILDREN = ("proj_in", "proj_out", "to_q", "to_k", "to_v", "to_out.0", "ff.net.0.proj", "ff.net.2")
KOHYA_TE_CHILDREN = ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.out_proj",
                     "mlp.fc1", "mlp.fc2")


class RssSampler:
    """Peak RSS over a stretch of code, sampled every millisecond on a thread."""

    def __init__(self) -> None:
        self.process = psutil.Process()
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.process.memory_info().rss)
            time.sleep(0.001)

    def __enter__(self) -> RssSampler:  # noqa: PYI034
        self.peak = self.process.memory_info().rss
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self.process.memory_info().rss)


def rss() -> int:
    gc.collect()
    return psutil.Process().memory_info().rss


def random_module(factory, dtype: torch.dtype) -> torch.nn.Module:
    """Built on the meta device, then given N(0, 1/fan_in) weights (norm scales 1) in `dtype`."""
    with torch.device("meta"):
        module = factory()
    module = module.to_empty(device="cpu").to(dtype)
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, p in module.named_parameters():
            if p.ndim >= 2:                    # uniform with the variance of N(0, 1/fan_in), filled in place
                bound = math.sqrt(3.0 / p[0].numel())
                p.uniform_(-bound, bound, generator=gen)
            else:
                p.fill_(1.0 if "norm" in name and name.endswith("weight") else 0.0)
    return module.eval().requires_grad_(False)


def build_model(dtype: torch.dtype) -> tuple[UNetModel, TextEncoder]:
    unet = random_module(lambda: UNetModel(sd15_unet_config()), dtype)
    text = random_module(lambda: TextEncoder(text_encoder_config("sd1")), dtype)
    return unet, text


def write_kohya_lora(path: Path, rank: int = 32, alpha: float = 16.0) -> dict:
    """A rank-`rank` kohya LoRA for every module a real SD1.5 kohya LoRA targets (shapes from the layout)."""
    from safetensors.torch import save_file
    config = sd15_unet_config()
    with torch.device("meta"):
        unet_shapes = {k: tuple(v.shape) for k, v in UNetModel(config).state_dict().items()}
        te_shapes = {k: tuple(v.shape) for k, v in TextEncoder(text_encoder_config("sd1")).state_dict().items()}
    targets = {}
    for diffusers, ldm in diffusers_unet_module_map(config).items():
        if ".attentions." in diffusers and diffusers.endswith(KOHYA_UNET_CHILDREN):
            targets["lora_unet_" + diffusers.replace(".", "_")] = unet_shapes[ldm + ".weight"]
    for layer in range(12):
        for child in KOHYA_TE_CHILDREN:
            hf = f"text_model.encoder.layers.{layer}.{child}"
            targets["lora_te_" + hf.replace(".", "_")] = te_shapes[f"model.{hf}.weight"]
    gen = torch.Generator().manual_seed(1)
    tensors = {}
    for name, shape in targets.items():
        kernel = (1,) * (len(shape) - 2)
        tensors[f"{name}.lora_down.weight"] = (torch.randn((rank, shape[1], *kernel), generator=gen) * 0.01).half()
        tensors[f"{name}.lora_up.weight"] = (torch.randn((shape[0], rank, *kernel), generator=gen) * 0.01).half()
        tensors[f"{name}.alpha"] = torch.tensor(alpha).half()
    save_file(tensors, str(path))
    return {"modules": len(targets), "file_mib": path.stat().st_size / MIB,
            "unet_modules": sum(n.startswith("lora_unet_") for n in targets)}


def load_plain(mode: str, dtype: torch.dtype, checkpoint: Path) -> tuple[ModelManager, list]:
    """The un-patched (MODEL, CLIP) handles, fully loaded: from the checkpoint file through the real loader
    (`full`), or built in memory (`full-copy`)."""
    manager = ModelManager(MemorySettings(device="cpu"))
    if mode == "full":
        from diffusion.loading import load_checkpoint_file
        model, clip, _ = load_checkpoint_file(checkpoint, manager)
        plain = [model, clip]
    else:
        unet, text = build_model(dtype)
        plain = [ModelHandle(unet, name="unet"), ModelHandle(text, name="clip")]
    manager.load_models_for(plain)
    return manager, plain


def measure_full(lora_path: Path, dtype: torch.dtype, repeats: int, mode: str = "full",
                 checkpoint: Path | None = None) -> dict:
    manager, plain = load_plain(mode, dtype, checkpoint)
    homes = {k: v.data_ptr() for h in plain for k, v in h.shared.weights.home.items()}
    baseline = rss()
    runs = []
    for _ in range(repeats):
        with RssSampler() as sampler:
            t0, c0 = time.perf_counter(), time.process_time()
            lora = load_lora_state_dict(lora_path)
            model, clip, report = apply_lora(plain[0], plain[1], lora, 1.0, 1.0, lora_path.name)
            manager.load_models_for([model, clip])
            t1, c1 = time.perf_counter(), time.process_time()
        patched_rss = rss()
        merged_in_place = sum(len(manager.record_of(h).patched_in_place) for h in plain)
        with RssSampler() as remove_sampler:
            t2 = time.perf_counter()
            manager.load_models_for(plain)
            t3 = time.perf_counter()
        del lora, model, clip
        runs.append({"apply_s": t1 - t0, "apply_cpu_s": c1 - c0, "remove_s": t3 - t2, "peak_rss_mib": sampler.peak / MIB,
                     "rss_while_patched_mib": patched_rss / MIB, "remove_peak_rss_mib": remove_sampler.peak / MIB,
                     "in_place": merged_in_place})
    slots = {k: h.shared.weights.current(k).data_ptr() for h in plain for k in h.shared.weights.slots}
    patched_bytes = sum(h.shared.weights.nbytes(k) for h, part in zip(plain, ("model", "clip"))
                        for k in report.parts[part].patches)
    model_bytes = sum(h.shared.weights.total_bytes() for h in plain)
    peak = max(r["peak_rss_mib"] for r in runs)
    part_dtypes = {part: str(next(h.module.parameters()).dtype).removeprefix("torch.")
                   for h, part in zip(plain, ("model", "clip"))}
    in_place = sum(len(r.patched_in_place) for r in map(manager.record_of, plain) if r is not None)
    return {"mode": mode, "dtypes": part_dtypes, "merged_in_place_while_patched": runs[-1]["in_place"],
            "in_place_after_remove": in_place,
            "model_mib": model_bytes / MIB, "patched_weights": report.patched_weights,
            "patched_weight_mib": patched_bytes / MIB, "unmatched_keys": len(report.unmatched),
            "rss_without_lora_mib": baseline / MIB,
            "apply_s": [round(r["apply_s"], 3) for r in runs],
            "apply_cpu_s": [round(r["apply_cpu_s"], 3) for r in runs], "threads": torch.get_num_threads(),
            "load_average_1min": os.getloadavg()[0], "remove_s": [round(r["remove_s"], 3) for r in runs],
            "apply_s_median": statistics.median(r["apply_s"] for r in runs),
            "remove_s_median": statistics.median(r["remove_s"] for r in runs),
            "peak_rss_mib": peak, "peak_over_baseline": peak * MIB / baseline - 1,
            "rss_after_remove_mib": rss() / MIB,
            "base_tensors_back_in_place": slots == homes}


def forward(unet: torch.nn.Module) -> None:
    gen = torch.Generator().manual_seed(2)
    x, context = torch.randn((1, 4, 8, 8), generator=gen), torch.randn((1, 77, 768), generator=gen)
    with torch.no_grad():
        unet(x, torch.tensor([500.0]), context)


def measure_streamed(lora_path: Path, dtype: torch.dtype, budget_mib: int) -> dict:
    unet, _ = build_model(dtype)
    manager = ModelManager(MemorySettings(vram_mode=VramMode.NO, device="cpu",
                                          vram_budget_bytes=budget_mib * MIB))
    plain = ModelHandle(unet, name="unet")
    manager.load_models_for([plain])
    baseline = rss()
    with RssSampler() as plain_sampler:
        t0 = time.perf_counter()
        forward(unet)
        plain_s = time.perf_counter() - t0
    with RssSampler() as sampler:
        t0 = time.perf_counter()
        model, _, report = apply_lora(plain, None, load_lora_state_dict(lora_path), 1.0, 0.0, lora_path.name)
        manager.load_models_for([model])
        load_s = time.perf_counter() - t0
        t1 = time.perf_counter()
        forward(unet)
        lora_s = time.perf_counter() - t1
    t2 = time.perf_counter()
    manager.load_models_for([plain])
    remove_s = time.perf_counter() - t2
    return {"mode": "streamed (novram)", "dtype": str(dtype).removeprefix("torch."), "budget_mib": budget_mib,
            "patched_weights": len(report.parts["model"].patches), "rss_without_lora_mib": baseline / MIB,
            "apply_s": load_s, "remove_s": remove_s, "forward_s_plain": plain_s, "forward_s_lora": lora_s,
            "peak_rss_plain_forward_mib": plain_sampler.peak / MIB, "peak_rss_lora_mib": sampler.peak / MIB,
            "peak_over_plain_forward": sampler.peak / plain_sampler.peak - 1}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--modes", nargs="*", default=["full", "full-copy", "streamed"],
                        choices=["full", "full-copy", "streamed"])
    parser.add_argument("--dtype", default="fp16", choices=sorted(DTYPES), help="full-copy and streamed modes")
    parser.add_argument("--checkpoint", default=str(ROOT / "bench" / "results" / "sd15-random-fp16.safetensors"),
                        help="full mode: a full-size SD1.5-layout checkpoint (written when missing)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--budget-mib", type=int, default=512, help="simulated device for the streamed mode")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--lora", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    torch.set_num_threads(max(1, min(4, os.cpu_count() or 1)))
    if args.child:
        path, dtype = Path(args.lora), DTYPES[args.dtype]
        result = measure_streamed(path, dtype, args.budget_mib) if args.child == "streamed" \
            else measure_full(path, dtype, args.repeats, args.child, Path(args.checkpoint))
        print(json.dumps(result))
        return 0
    checkpoint = Path(args.checkpoint)
    if "full" in args.modes and not checkpoint.exists():
        sys.path.insert(0, str(ROOT / "bench"))
        from txt2img import write_checkpoint
        write_checkpoint(checkpoint)
    with tempfile.TemporaryDirectory() as tmp:
        lora_path = Path(tmp) / "sd15_rank32_kohya.safetensors"
        print(json.dumps({"lora": write_kohya_lora(lora_path)}))
        ok = True
        for mode in args.modes:
            out = subprocess.run([sys.executable, __file__, "--child", mode, "--lora", str(lora_path),
                                  "--dtype", args.dtype, "--repeats", str(args.repeats),
                                  "--budget-mib", str(args.budget_mib), "--checkpoint", str(checkpoint)],
                                 capture_output=True, text=True,
                                 check=False)
            if out.returncode != 0:
                raise SystemExit(f"bench child {mode!r} failed:\n{out.stderr}")
            result = json.loads(out.stdout.strip().splitlines()[-1])
            print(json.dumps(result))
            if mode == "full":
                ok &= result["apply_s_median"] < 1.0 and result["remove_s_median"] < 1.0 \
                    and result["peak_over_baseline"] < 0.10
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
