"""Plexus against ComfyUI on the same txt2img API workflow, on the CPU, one server after the other.

    .venv/bin/python bench/compare.py --peer-dir ../peer/ComfyUI          # Plexus, then ComfyUI
    .venv/bin/python bench/compare.py --peer-dir ../peer/ComfyUI --smoke  # 256² only, 1 and 2 steps
    .venv/bin/python bench/compare.py --only peer --peer-dir ...          # one side only
    flock /tmp/plexus-heavy.lock .venv/bin/python bench/compare.py --family sd3 --peer-dir ../peer/ComfyUI \
        --sizes 512 --steps 1 2 --warmup-steps 0 --port-base 8400               # SD3 medium all-in-one
    flock /tmp/plexus-heavy.lock .venv/bin/python bench/compare.py --family flux --peer-dir ../peer/ComfyUI \
        --models-dir /tmp/flux-models --sizes 512 --steps 1 2 --warmup-steps 0  # FLUX.1 [dev], reduced depth

The workflow is ComfyUI's default graph in API format: CheckpointLoaderSimple -> two CLIPTextEncode
-> EmptyLatentImage -> KSampler (euler, normal, cfg 7) -> VAEDecode -> SaveImage, on a full-size
random-weight checkpoint in the SD1.5 LDM layout written by ``models.testing`` (UNet, VAE and CLIP-L
text tower; fp16 on disk by default) into a models folder both servers read through the same
``extra_model_paths.yaml``. Each server gets its own fresh base directory (output, user, temp).

For each server it measures:
- ``startup_s``: process start to the first HTTP answer (any status) on ``/system_stats``;
- ``cold_prompt_s``: the first prompt (first size, ``--steps`` low count), checkpoint loading included;
- per size (after an unmeasured ``--warmup-steps`` run at each size but the first, which the cold
  run warmed): two warm runs that differ only in the step count; ``s_per_step`` = time difference /
  step difference (fixed costs cancel out), and ``vae_decode_s`` = the VAEDecode node's time, the
  faster of the two (from the ``executing`` websocket messages, the same way on both servers;
  Plexus's own per-node timing from ``/history`` is recorded beside it);
- ``peak_rss_mib``: the server process's peak resident set (``VmHWM`` of ``/proc/<pid>/status``).

A prompt's time runs from POST /prompt to its ``execution_success`` websocket message. The peer is a
ComfyUI checkout (``--peer-dir``) with its own virtual environment (``--peer-python``, else
``venv``/``.venv`` inside or beside the checkout), started with ``--cpu``; it is never vendored nor
needed by the tests. ``--threads N`` sets OMP/MKL threads for both servers alike; for the same torch
on both sides run Plexus with the peer's interpreter (``--plexus-python <peer venv>/bin/python``: it
has every Plexus runtime dependency). Results go to ``bench/results/compare-<time>.json``, the
server logs beside it, and the table ends with the Plexus / ComfyUI ratios (below 1: Plexus is
faster or smaller); ``--plexus-fp32`` adds a Plexus run with ``--force-fp32`` and its own ratio column.

``--family sd3``: the full-size SD3 medium all-in-one file in the published layout (MM-DiT, VAE, CLIP-L and
CLIP-G in fp16, T5-XXL in fp8_e4m3fn; written by bench/sd3_memory.py, 10.9 GB, hard-linked into the models
folder, never copied) with the SD3 template's graph: EmptySD3LatentImage, KSampler euler / sgm_uniform,
cfg 4.5. After the warm pairs, one more prompt with a new positive text (1 step) times its CLIPTextEncode
node, CLIP-L + CLIP-G + T5-XXL on warm models: ``text_encode_s``. ``--rss-cap-gib`` ends a server whose
anonymous resident set passes it (the machine is shared) and reports that instead of its numbers.
``--family sd35``: full-size random SD3.5 medium files (bench/sd3_files.py writes them once into
/tmp/plexus-sd35-medium, about 11.5 GB: the MM-DiT-X + VAE file in bf16, clip_l and clip_g in fp16, t5xxl in
fp8_e4m3fn; hard-linked into the models folder) with the graph of ComfyUI's SD3.5 medium example: the checkpoint
for MODEL and VAE, TripleCLIPLoader (clip_l, clip_g, t5xxl) for CLIP, then the SD3 graph above:

    flock /tmp/plexus-heavy.lock .venv/bin/python bench/compare.py --family sd35 --peer-dir ../peer/ComfyUI \
        --sizes 512 --steps 1 2 --warmup-steps 0 --port-base 8400
``--family sdxl``: an SDXL base checkpoint (``--checkpoint``, default the 6.9 GB random fp16 file in the SDXL
base layout that models/testing.py writes, hard-linked into the models folder, never copied) with the default
graph above (CLIPTextEncode on the SDXL CLIP, EmptyLatentImage, KSampler euler / normal, cfg 7):

    flock /tmp/plexus-heavy.lock .venv/bin/python bench/compare.py --family sdxl --peer-dir ../peer/ComfyUI \
        --sizes 512 768 --steps 1 2 --warmup-steps 0 --port-base 8300 --rss-cap-gib 19

``--checkpoint FILE`` (any family) reuses that file instead of writing one.

``--family flux``: the FLUX.1 [dev] template's graph (UNETLoader, DualCLIPLoader type flux, VAELoader,
CLIPTextEncode + FluxGuidance 3.5, EmptySD3LatentImage, KSampler euler / simple, cfg 1) on
bench/fidelity_cases/flux.py's files: the transformer full width at reduced depth (1 double + 2 single
blocks of the released 19 + 38, bf16), full-size T5-XXL in fp8_e4m3fn, CLIP-L fp16 and the FLUX VAE;
written into the models folder once (about 6.5 GB). s/step is then that of 3 of the 57 blocks plus the
embedders and final layer; text_encode_s is T5-XXL + CLIP-L on warm models. ``--checkpoint FILE`` runs that
FLUX diffusion-model file instead (hard-linked into diffusion_models/), e.g. the full-depth [dev] in fp8
e4m3fn (19 + 38 blocks, 11.9 GB; bench/fidelity_cases/flux.py ``write_dev_full_fp8``), which both sides
keep in fp8 and cast per layer (ComfyUI: unet_dtype picks the file's fp8 when the bf16 model would not fit):

    flock /tmp/plexus-heavy.lock .venv/bin/python bench/compare.py --family flux --peer-dir ../peer/ComfyUI \
        --models-dir /tmp/flux-full --checkpoint /tmp/flux-full/diffusion_models/flux1_dev_full_random_fp8_e4m3fn_s0.safetensors \
        --sizes 512 --steps 1 2 --warmup-steps 0 --rss-cap-gib 20 --port-base 8450

The issue asks for 4 steps; a 1-step and a 2-step run give the same s/step (the difference of the two
prompts' times, so loading, text encoding and VAE decoding cancel out) at a third of the time on this CPU.
``--plexus-arg=--novram`` (repeatable) passes flags to the Plexus server only.
Standard library only, apart from ``models.testing`` (torch) to write the checkpoint.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from _servers import (PromptFailed, Server, ServerSpec, find_peer_python, node_durations, peak_rss_mib,
                      server_env, write_model_paths)

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
CHECKPOINT_STEM = "plexus_bench_sd15_random"
POSITIVE = "a photograph of a lighthouse on a cliff at dusk, detailed, warm light"
NEGATIVE = "blurry, low quality"


# --- the workflow ----------------------------------------------------------------------------------

def txt2img_prompt(size: int, steps: int, seed: int, checkpoint: str) -> dict[str, Any]:
    """ComfyUI's default graph in API format; node "8" is the VAEDecode that is timed."""
    return {
        "4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": checkpoint}},
        "6": {"class_type": "CLIPTextEncode", "inputs": {"text": POSITIVE, "clip": ["4", 1]}},
        "7": {"class_type": "CLIPTextEncode", "inputs": {"text": NEGATIVE, "clip": ["4", 1]}},
        "5": {"class_type": "EmptyLatentImage", "inputs": {"width": size, "height": size, "batch_size": 1}},
        "3": {"class_type": "KSampler", "inputs": {
            "model": ["4", 0], "positive": ["6", 0], "negative": ["7", 0], "latent_image": ["5", 0],
            "seed": seed, "steps": steps, "cfg": 7.0, "sampler_name": "euler", "scheduler": "normal",
            "denoise": 1.0}},
        "8": {"class_type": "VAEDecode", "inputs": {"samples": ["3", 0], "vae": ["4", 2]}},
        "9": {"class_type": "SaveImage", "inputs": {"images": ["8", 0], "filename_prefix": "compare"}},
    }


VAE_DECODE_NODE = "8"
TEXT_ENCODE_NODE = "6"
SD3_CHECKPOINT = Path("/tmp/plexus-sd3-medium-random.safetensors")
SDXL_CHECKPOINT = Path("/work/peer/bench-models/checkpoints/sdxl_random_fp16_s0_sdxl-helper.safetensors")


def sd3_prompt(size: int, steps: int, seed: int, checkpoint: str, positive: str = POSITIVE) -> dict[str, Any]:
    """The SD3 template's graph in API format (its sampler settings with euler): same node ids as above."""
    prompt = txt2img_prompt(size, steps, seed, checkpoint)
    prompt["6"]["inputs"]["text"] = positive
    prompt["5"] = {"class_type": "EmptySD3LatentImage", "inputs": {"width": size, "height": size, "batch_size": 1}}
    prompt["3"]["inputs"].update(cfg=4.5, sampler_name="euler", scheduler="sgm_uniform")
    return prompt


def sd35_prompt(size: int, steps: int, seed: int, checkpoint: str, positive: str = POSITIVE) -> dict[str, Any]:
    """ComfyUI's SD3.5 medium example: MM-DiT-X + VAE from the checkpoint, TripleCLIPLoader for the text."""
    from sd3_files import SD35_DIR, SD35_TEXT
    prompt = sd3_prompt(size, steps, seed, checkpoint, positive)
    if (SD35_DIR / SD35_TEXT["t5xxl"]).exists():
        prompt["11"] = {"class_type": "TripleCLIPLoader", "inputs": {
            "clip_name1": SD35_TEXT["clip_l"], "clip_name2": SD35_TEXT["clip_g"], "clip_name3": SD35_TEXT["t5xxl"]}}
    else:                                           # bench/sd3_files.py could not write T5 (disk): CLIP-L + G
        prompt["11"] = {"class_type": "DualCLIPLoader", "inputs": {
            "clip_name1": SD35_TEXT["clip_l"], "clip_name2": SD35_TEXT["clip_g"], "type": "sd3", "device": "default"}}
    for node in ("6", "7"):
        prompt[node]["inputs"]["clip"] = ["11", 0]
    return prompt


def sd35_has_t5() -> bool:
    from sd3_files import SD35_DIR, SD35_TEXT
    return (SD35_DIR / SD35_TEXT["t5xxl"]).exists()


def flux_prompt(size: int, steps: int, seed: int, checkpoint: str, positive: str = POSITIVE) -> dict[str, Any]:
    """The FLUX.1 [dev] template's graph on the fidelity files (same node ids for the timed nodes)."""
    from fidelity_cases import flux as files
    return {
        "1": {"class_type": "UNETLoader", "inputs": {"unet_name": checkpoint, "weight_dtype": "default"}},
        "2": {"class_type": "DualCLIPLoader", "inputs": {"clip_name1": files.T5, "clip_name2": files.CLIP_L,
                                                         "type": "flux"}},
        "4": {"class_type": "VAELoader", "inputs": {"vae_name": files.VAE}},
        "6": {"class_type": "CLIPTextEncode", "inputs": {"text": positive, "clip": ["2", 0]}},
        "10": {"class_type": "FluxGuidance", "inputs": {"conditioning": ["6", 0], "guidance": 3.5}},
        "7": {"class_type": "CLIPTextEncode", "inputs": {"text": "", "clip": ["2", 0]}},
        "5": {"class_type": "EmptySD3LatentImage", "inputs": {"width": size, "height": size, "batch_size": 1}},
        "3": {"class_type": "KSampler", "inputs": {
            "model": ["1", 0], "positive": ["10", 0], "negative": ["7", 0], "latent_image": ["5", 0],
            "seed": seed, "steps": steps, "cfg": 1.0, "sampler_name": "euler", "scheduler": "simple",
            "denoise": 1.0}},
        "8": {"class_type": "VAEDecode", "inputs": {"samples": ["3", 0], "vae": ["4", 0]}},
        "9": {"class_type": "SaveImage", "inputs": {"images": ["8", 0], "filename_prefix": "compare"}},
    }


def ensure_flux_files(models_dir: Path, unet: Path | None = None) -> Path:
    """bench/fidelity_cases/flux.py's T5-XXL, CLIP-L and VAE files, written once, and its reduced-depth [dev]
    file, or `unet` (a FLUX diffusion-model file) hard-linked into diffusion_models/ instead."""
    sys.path.insert(0, str(ROOT))
    from fidelity import ensure_model
    from fidelity_cases import flux as files
    wanted = {files.T5, files.CLIP_L, files.VAE} | (set() if unet else {files.DEV})
    for model in files.FAMILY.models:
        if model.name in wanted:
            ensure_model(models_dir, model)
    if unet is None:
        return models_dir / "diffusion_models" / files.DEV
    return linked_checkpoint(models_dir, unet, "diffusion_models")


def ensure_sd3_checkpoint(models_dir: Path, source: Path) -> Path:
    """The SD3 medium random file (bench/sd3_memory.py writes it once) hard-linked into the models folder."""
    if not source.exists():
        subprocess.run([sys.executable, str(ROOT / "bench" / "sd3_memory.py"), "--path", str(source),
                        "--write-only"], check=True)
    path = models_dir / "checkpoints" / source.name
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        os.link(source, path)
    return path


def ensure_sd35_files(models_dir: Path) -> Path:
    """bench/sd3_files.py's SD3.5 medium files (written once) hard-linked into the models folder."""
    from sd3_files import write_sd35_medium
    paths = write_sd35_medium()
    for key, source in paths.items():
        path = models_dir / ("checkpoints" if key == "checkpoint" else "text_encoders") / source.name
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            os.link(source, path)
    return models_dir / "checkpoints" / paths["checkpoint"].name


def linked_checkpoint(models_dir: Path, source: Path, folder: str = "checkpoints") -> Path:
    """An existing checkpoint hard-linked into the models folder (a symlink across file systems)."""
    if not source.exists():
        raise SystemExit(f"{source} does not exist")
    path = models_dir / folder / source.name
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(source, path)
        except OSError:
            path.symlink_to(source.resolve())
    return path


# --- the shared models folder ----------------------------------------------------------------------

def ensure_checkpoint(models_dir: Path, dtype_name: str) -> Path:
    """Write the full-size random SD1.5-layout checkpoint once (streamed; about 2 GB in fp16)."""
    path = models_dir / "checkpoints" / f"{CHECKPOINT_STEM}_{dtype_name}.safetensors"
    if path.exists():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    sys.path.insert(0, str(ROOT))
    import torch

    from models.testing import CheckpointSpec, sd15_unet_config, write_random_checkpoint
    from models.vae import VAEConfig
    dtype = {"fp16": torch.float16, "fp32": torch.float32, "bf16": torch.bfloat16}[dtype_name]
    started = time.perf_counter()
    partial = path.with_suffix(".partial.safetensors")
    write_random_checkpoint(partial, CheckpointSpec(family="sd1", unet=sd15_unet_config(), vae=VAEConfig(),
                                                    dtype=dtype))
    partial.rename(path)
    print(f"wrote {path} ({path.stat().st_size / 2**30:.2f} GiB) in {time.perf_counter() - started:.0f} s",
          flush=True)
    return path


@dataclass
class PromptTiming:
    size: int
    steps: int
    seed: int
    prompt_s: float
    node_s: dict[str, float]                       # from the executing messages
    server_node_s: dict[str, float] | None = None  # Plexus's own per-node timing, when the history has it
    peak_rss_mib: float | None = None


class TimedServer(Server):
    """A server that runs the timed txt2img prompt on one checkpoint."""

    def __init__(self, spec: ServerSpec, work: Path, model_paths: Path, env: dict[str, str], checkpoint: str,
                 log_path: Path, *, family: str = "sd1", port: int | None = None):
        super().__init__(spec, work, model_paths, env, log_path, port=port)
        self.checkpoint = checkpoint
        self.family = family

    def run_prompt(self, size: int, steps: int, seed: int, timeout_s: float,
                   positive: str = POSITIVE) -> PromptTiming:
        if self.family in ("sd3", "sd35", "flux"):
            make = {"sd3": sd3_prompt, "sd35": sd35_prompt, "flux": flux_prompt}[self.family]
            prompt = make(size, steps, seed, self.checkpoint, positive)
        else:
            prompt = txt2img_prompt(size, steps, seed, self.checkpoint)
        done = self.submit(prompt, timeout_s)
        plexus = done.history.get("plexus") or {}
        return PromptTiming(size=size, steps=steps, seed=seed, prompt_s=done.done_at - done.posted,
                            node_s=node_durations(done.events), server_node_s=plexus.get("node_timings_s"),
                            peak_rss_mib=peak_rss_mib(self.process.pid))


# --- one side: start, cold prompt, warm pairs, stop ------------------------------------------------

@dataclass
class SideResult:
    label: str
    command: list[str]
    startup_s: float | None = None
    cold: PromptTiming | None = None
    # size -> {"lo", "hi" (PromptTiming as dicts), "s_per_step", "vae_decode_s"}
    warm: dict[int, dict[str, Any]] = field(default_factory=dict)
    peak_rss_mib: float | None = None
    text_encode_s: float | None = None             # CLIPTextEncode of a new prompt on warm models (--family sd3)
    system: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    log: str | None = None


def torch_version(python: Path, env: dict[str, str]) -> str | None:
    """The interpreter's torch version (asked in a subprocess, outside every timing)."""
    try:
        done = subprocess.run([str(python), "-c", "import torch; print(torch.__version__)"], env=env,
                              capture_output=True, text=True, timeout=120, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout.strip() or None


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f} s"


def anon_rss_gib(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("RssAnon:")) / 2 ** 20


def watch_rss(server: Server, cap_gib: float, stop: threading.Event, hit: list) -> None:
    """Kill the server when its anonymous resident set passes `cap_gib` (file pages are reclaimable)."""
    while not stop.wait(0.2):
        process = server.process
        if process is None or process.poll() is not None:
            continue
        try:
            rss = anon_rss_gib(process.pid)
        except (OSError, StopIteration):
            continue
        if rss > cap_gib:
            hit.append(rss)
            process.kill()
            return


def measure(spec: ServerSpec, args: argparse.Namespace, work: Path, model_paths: Path,
            env: dict[str, str], checkpoint: str, log_path: Path, port: int | None = None) -> SideResult:
    server = TimedServer(spec, work, model_paths, env, checkpoint, log_path, family=args.family, port=port)
    result = SideResult(spec.label, server.command, log=str(log_path))
    stop, hit = threading.Event(), []
    if args.rss_cap_gib:
        threading.Thread(target=watch_rss, args=(server, args.rss_cap_gib, stop, hit), daemon=True).start()
    lo, hi = args.steps
    torch_used = torch_version(spec.python, env)
    try:
        result.startup_s = server.start(args.start_timeout_s)
        print(f"[{spec.label}] first answer after {result.startup_s:.2f} s", flush=True)
        result.system = {k: server.system_stats().get(k) for k in
                         ("comfyui_version", "plexus_version", "pytorch_version", "python_version")}
        result.system["torch"] = torch_used
        result.cold = server.run_prompt(args.sizes[0], lo, seed=1, timeout_s=args.prompt_timeout_s)
        print(f"[{spec.label}] cold prompt {args.sizes[0]}² x{lo}: {result.cold.prompt_s:.2f} s", flush=True)
        for index, size in enumerate(args.sizes):
            seed = 100 + index
            if args.warmup_steps and index > 0:  # the cold run already ran at the first size
                server.run_prompt(size, args.warmup_steps, seed=seed + 50, timeout_s=args.prompt_timeout_s)
            runs = {n: server.run_prompt(size, n, seed=seed, timeout_s=args.prompt_timeout_s)
                    for n in (lo, hi)}
            s_per_step = (runs[hi].prompt_s - runs[lo].prompt_s) / (hi - lo)
            decode = [r.node_s.get(VAE_DECODE_NODE) for r in runs.values()]
            decode = [d for d in decode if d is not None]
            result.warm[size] = {"lo": asdict(runs[lo]), "hi": asdict(runs[hi]), "s_per_step": s_per_step,
                                 "vae_decode_s": min(decode) if decode else None}
            print(f"[{spec.label}] {size}²: {runs[lo].prompt_s:.2f} s x{lo}, {runs[hi].prompt_s:.2f} s x{hi} "
                  f"-> {s_per_step:.3f} s/step; VAE decode {_seconds(result.warm[size]['vae_decode_s'])}",
                  flush=True)
        if args.family in ("sd3", "sd35", "flux"):
            run = server.run_prompt(args.sizes[0], 1, seed=7, timeout_s=args.prompt_timeout_s,
                                    positive="an old stone bridge over a river in autumn, morning fog")
            result.text_encode_s = run.node_s.get(TEXT_ENCODE_NODE)
            towers = "CLIP-L + T5-XXL" if args.family == "flux" else "CLIP-L + CLIP-G + T5-XXL"
            if args.family == "sd35" and run.node_s is not None and not sd35_has_t5():
                towers = "CLIP-L + CLIP-G, no T5-XXL file"
            print(f"[{spec.label}] text encode ({towers}, warm): "
                  f"{_seconds(result.text_encode_s)}", flush=True)
    except (PromptFailed, RuntimeError, OSError, KeyError) as exc:
        result.error = f"{type(exc).__name__}: {exc}"
        if hit:
            result.error = f"killed: anonymous RSS {hit[0]:.1f} GiB passed --rss-cap-gib {args.rss_cap_gib} ({result.error})"
        print(f"[{spec.label}] FAILED: {result.error}\n--- log tail ---\n{server.log_tail()}", flush=True)
    finally:
        stop.set()
        result.peak_rss_mib = server.stop()
    return result


# --- report ----------------------------------------------------------------------------------------

def rows(result: SideResult, sizes: list[int], family: str = "sd1") -> dict[str, float | None]:
    out: dict[str, float | None] = {"start to first answer (s)": result.startup_s,
                                    "first prompt, cold (s)": result.cold.prompt_s if result.cold else None}
    for size in sizes:
        warm = result.warm.get(size, {})
        out[f"{size}² warm s/step"] = warm.get("s_per_step")
        out[f"{size}² VAE decode (s)"] = warm.get("vae_decode_s")
    if family in ("sd3", "sd35", "flux"):
        out["text encode, warm (s)"] = result.text_encode_s
    out["peak RSS (MiB)"] = result.peak_rss_mib
    return out


def print_table(results: list[SideResult], sizes: list[int], family: str = "sd1") -> None:
    """One column per server, then one ratio column per Plexus variant against ComfyUI."""
    table = {r.label: rows(r, sizes, family) for r in results}
    labels = [r.label for r in results]
    ratios = [label for label in labels if label.startswith("plexus")] if "comfyui" in labels else []
    width = max(12, *(len(label) + 2 for label in labels))
    header = f"{'':28}" + "".join(f"{label:>{width}}" for label in labels)
    header += "".join(f"{label + '/C':>{width + 2}}" for label in ratios)
    print("\n" + header)
    for name in next(iter(table.values())):
        line = f"{name:28}"
        for label in labels:
            value = table[label][name]
            line += f"{value:{width}.3f}" if value is not None else f"{'-':>{width}}"
        for label in ratios:
            p, c = table[label][name], table["comfyui"][name]
            line += f"{p / c:{width + 2}.2f}" if p is not None and c else f"{'-':>{width + 2}}"
        print(line)
    print("torch: " + ", ".join(f"{r.label} {r.system.get('torch')}" for r in results))
    for r in results:
        if r.error:
            print(f"\n{r.label} failed: {r.error}")


# --- main ------------------------------------------------------------------------------------------

def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--peer-dir", type=Path, help="a ComfyUI checkout (with its own virtual environment)")
    parser.add_argument("--peer-python", type=Path,
                        help="the peer's python (default: a venv found in or beside --peer-dir)")
    parser.add_argument("--plexus-python", type=Path, default=Path(sys.executable))
    parser.add_argument("--only", choices=("plexus", "peer"), help="measure one side only")
    parser.add_argument("--plexus-fp32", action="store_true",
                        help="also run Plexus with --force-fp32 (column plexus-fp32), against the same peer run")
    parser.add_argument("--sizes", type=int, nargs="+", default=[256, 512])
    parser.add_argument("--steps", type=int, nargs=2, default=[4, 10], metavar=("LOW", "HIGH"),
                        help="step counts of the two warm runs (the cold run uses LOW)")
    parser.add_argument("--warmup-steps", type=int, default=1,
                        help="an unmeasured run at each new size before the pair (0: none)")
    parser.add_argument("--smoke", action="store_true", help="256² only, steps 1 and 2, no warm-up run")
    parser.add_argument("--ckpt-dtype", choices=("fp16", "fp32", "bf16"), default="fp16")
    parser.add_argument("--family", choices=("sd1", "sd3", "sd35", "sdxl", "flux"), default="sd1",
                        help="sd3: the SD3 medium all-in-one file and the SD3 graph; sd35: the SD3.5 medium files and "
                             "its TripleCLIPLoader graph; sdxl: an SDXL base file "
                             "and the default graph; flux: the reduced-depth FLUX.1 [dev] files and the FLUX "
                             "graph (see above)")
    parser.add_argument("--checkpoint", type=Path,
                        help="an existing checkpoint to run (hard-linked into the models folder); default: "
                             "written per family (sdxl: the random SDXL base file named above)")
    parser.add_argument("--sd3-checkpoint", type=Path, default=SD3_CHECKPOINT,
                        help="the SD3 medium random file (written there by bench/sd3_memory.py when absent)")
    parser.add_argument("--port-base", type=int, help="first of the ports the servers listen on (one each)")
    parser.add_argument("--plexus-arg", dest="plexus_args", action="append", default=[],
                        help="a flag for the Plexus server(s) only (repeatable), e.g. --plexus-arg=--novram")
    parser.add_argument("--rss-cap-gib", type=float, help="kill a server whose anonymous RSS passes this")
    parser.add_argument("--models-dir", type=Path,
                        help="reuse this models folder (the checkpoint is written there once); "
                             "default: a temp one")
    parser.add_argument("--threads", type=int, help="OMP/MKL threads for both servers")
    parser.add_argument("--start-timeout-s", type=float, default=300)
    parser.add_argument("--prompt-timeout-s", type=float, default=3600)
    parser.add_argument("--json", type=Path, help="where to write the results (default bench/results/)")
    args = parser.parse_args(argv)
    if args.smoke:
        args.sizes, args.steps, args.warmup_steps = [256], [1, 2], 0
    if args.steps[1] <= args.steps[0]:
        parser.error("--steps LOW HIGH needs HIGH > LOW")
    if args.only != "plexus" and args.peer_dir is None:
        if args.only == "peer":
            parser.error("--only peer needs --peer-dir")
        print("no --peer-dir: measuring Plexus only", flush=True)
        args.only = "plexus"
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    specs: list[ServerSpec] = []
    if args.only != "peer":
        specs.append(ServerSpec("plexus", args.plexus_python, ROOT, list(args.plexus_args)))
        if args.plexus_fp32:
            specs.append(ServerSpec("plexus-fp32", args.plexus_python, ROOT, ["--force-fp32", *args.plexus_args]))
    if args.only != "plexus":
        peer_dir = args.peer_dir.resolve()
        if not (peer_dir / "main.py").exists():
            raise SystemExit(f"{peer_dir} is not a ComfyUI checkout (no main.py)")
        peer_python = (args.peer_python or find_peer_python(peer_dir)).absolute()
        specs.append(ServerSpec("comfyui", peer_python, peer_dir))

    env = server_env(args.threads)

    out = args.json or RESULTS / f"compare-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="plexus-compare-") as tmp:
        work = Path(tmp)
        models_dir = (args.models_dir or work / "models").resolve()
        if args.family == "flux":
            checkpoint = ensure_flux_files(models_dir, args.checkpoint)
        elif args.checkpoint is not None or args.family == "sdxl":
            checkpoint = linked_checkpoint(models_dir, args.checkpoint or SDXL_CHECKPOINT)
        elif args.family == "sd3":
            checkpoint = ensure_sd3_checkpoint(models_dir, args.sd3_checkpoint)
        elif args.family == "sd35":
            checkpoint = ensure_sd35_files(models_dir)
        else:
            checkpoint = ensure_checkpoint(models_dir, args.ckpt_dtype)
        model_paths = write_model_paths(work, models_dir, ("checkpoints", "loras", "embeddings", "vae",
                                                           "diffusion_models", "text_encoders"))
        results = [measure(spec, args, work, model_paths, env, checkpoint.name,
                           out.with_name(f"{out.stem}-{spec.label}.log"),
                           port=args.port_base + i if args.port_base else None) for i, spec in enumerate(specs)]

    print_table(results, args.sizes, args.family)
    out.write_text(json.dumps({
        "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "host": platform.node(), "cpu_count": os.cpu_count(),
        "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "checkpoint": checkpoint.name, "results": [asdict(r) for r in results],
    }, indent=1), encoding="utf-8")
    print(f"\nresults: {out}")
    return 1 if any(r.error for r in results) else 0


if __name__ == "__main__":
    raise SystemExit(main())
