"""Image quality: how far default-mode images are from `--force-fp32` images on the sampler test matrix.

    .venv/bin/python bench/quality.py                          # full matrix, 256x256, 4 steps, full-size SD1.5 layout
    .venv/bin/python bench/quality.py --tiny                   # the same matrix on a few-MB random checkpoint
    .venv/bin/python bench/quality.py --samplers euler dpmpp_2m --schedulers normal --steps 2
    .venv/bin/python bench/quality.py --tiny-sdxl              # the matrix on a few-MB SDXL-layout checkpoint
    .venv/bin/python bench/quality.py --int8                   # `--int8-unet` images against the default (bf16) ones
    flock /tmp/plexus-heavy.lock .venv/bin/python bench/quality.py --size 128 \
        --model /work/peer/bench-models/checkpoints/sdxl_random_fp16_s0_sdxl-helper.safetensors   # full-size SDXL

The prompt is bench/txt2img.py's (CheckpointLoaderSimple -> CLIPTextEncode x2 -> EmptyLatentImage ->
KSampler (cfg 7) -> VAEDecode -> PreviewImage), with the sampler and scheduler of each matrix pair. It runs
in-process through the app main.py builds (bench/memory.py's `Runner`): once with no precision flag (the
default dtype policy: on a CPU with native bf16 the UNet computes in bf16) and once with `--force-fp32`, each
with its own ModelManager, the same seed and the same prompt. Each precision loads the checkpoint once and
renders the whole matrix (the executor caches the loader and the text encodings; only KSampler, VAEDecode and
PreviewImage run per pair), then is released before the other precision starts.

A bench-only output node, ImageStats, also reports whether the decoded float image is finite (a NaN
would be saved as black pixels) and its range: `is_all_finite` is false, and the exit status 1, when any
image of either precision is not.

Per pair the two PNGs PreviewImage wrote (uint8, as saved) are compared: `max_abs` and `mean_abs` pixel
difference on the 0..255 scale and `psnr_db` (10*log10(255^2 / MSE); null when the images are identical).
`overall` holds the max of `max_abs`, the mean of `mean_abs` (every image has the same size, so it is the mean
over all pixels) and the min of `psnr_db`. `dtypes` records what each precision computed in, as the
ModelManager reports it, so a result can be read against the dtype policy of its day.

With random weights the UNet's predictions are meaningless, so the distance measures how closely the two
precisions agree on the same computation, which is what the quality target asks for. Results: a table on
stdout and bench/results/quality.json (bench/results/ is git-ignored; the full-size checkpoint
bench/results/sd15-random-fp16.safetensors is written by bench/txt2img.py's `write_checkpoint` when missing,
the tiny one by `write_tiny_checkpoint`).
"""
from __future__ import annotations

import argparse
import gc
import json
import math
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from memory import Runner  # bench scripts import each other by file name
from txt2img import DEFAULT_CHECKPOINT, RESULTS, write_checkpoint
from txt2img import prompt_for as txt2img_prompt

TINY_CHECKPOINT = RESULTS / "sd15-tiny-random.safetensors"
TINY_SDXL_CHECKPOINT = RESULTS / "sdxl-tiny-random.safetensors"
CKPT_NAME = "quality.safetensors"

# the sampler families of the quality target, each with both schedulers
MATRIX_SAMPLERS = ("euler", "euler_ancestral", "heun", "dpm_2", "dpmpp_2m", "dpmpp_2m_sde", "dpmpp_sde",
                   "dpmpp_3m_sde", "uni_pc", "ddim", "lcm")
MATRIX_SCHEDULERS = ("normal", "karras")


def matrix_pairs(samplers, schedulers) -> tuple[tuple[str, str], ...]:
    """Every (sampler, scheduler) combination, sampler-major."""
    return tuple((sampler, scheduler) for sampler in samplers for scheduler in schedulers)


SAMPLER_MATRIX = matrix_pairs(MATRIX_SAMPLERS, MATRIX_SCHEDULERS)

# precision name -> main.py flags
PRECISIONS = {"default": [], "force_fp32": ["--force-fp32"]}
# --int8: the opt-in int8 weight mode (`--int8-unet`, models/int8_weights.py) against the default (bf16) images
INT8_PRECISIONS = {"int8_unet": ["--int8-unet"], "default": []}


@dataclass(frozen=True)
class PixelDistance:
    """How far two uint8 images are apart on the 0..255 scale."""

    max_abs: int
    mean_abs: float
    psnr_db: float | None          # None: the images are identical (infinite PSNR)


def pixel_distance(a: np.ndarray, b: np.ndarray) -> PixelDistance:
    """Max / mean absolute difference and PSNR of two uint8 images of the same shape."""
    if a.shape != b.shape or a.dtype != np.uint8 or b.dtype != np.uint8:
        raise ValueError(f"expected two uint8 images of one shape, got {a.dtype}{a.shape} and {b.dtype}{b.shape}")
    diff = a.astype(np.int32) - b.astype(np.int32)
    mse = float(np.mean(diff.astype(np.float64) ** 2))
    psnr = None if mse == 0 else 10.0 * math.log10(255.0 ** 2 / mse)
    return PixelDistance(int(np.abs(diff).max()), float(np.abs(diff).mean()), psnr)


def overall_distance(distances: list[PixelDistance]) -> PixelDistance:
    """The worst max, the mean of the means (equal-sized images) and the worst PSNR of a matrix."""
    psnrs = [d.psnr_db for d in distances if d.psnr_db is not None]
    return PixelDistance(max(d.max_abs for d in distances),
                         float(np.mean([d.mean_abs for d in distances])),
                         min(psnrs) if psnrs else None)


def write_tiny_checkpoint(path: Path) -> Path:
    """A few-MB random checkpoint in the SD1.5 layout: models.testing's tiny UNet and text tower, and a
    VAE that still downsamples 8x (four levels), so EmptyLatentImage's sizes decode to the requested pixels."""
    from models.testing import CheckpointSpec, tiny_unet_config, write_random_checkpoint
    from models.vae import VAEConfig

    path.parent.mkdir(parents=True, exist_ok=True)
    spec = CheckpointSpec("sd1", tiny_unet_config("sd1"), VAEConfig(ch=32, ch_mult=(1, 1, 2, 2), num_res_blocks=1))
    return write_random_checkpoint(path, spec)


def write_tiny_sdxl_checkpoint(path: Path) -> Path:
    """A few-MB random checkpoint in the SDXL base layout (models.testing's tiny SDXL UNet with the real
    2816-wide label_emb, 2-layer CLIP-L and bigG towers, fp16 on disk as the real file) and the 8x VAE above."""
    import torch

    from models.testing import tiny_sdxl_text_configs, tiny_sdxl_unet_config, write_sdxl_checkpoint
    from models.vae import VAEConfig

    path.parent.mkdir(parents=True, exist_ok=True)
    return write_sdxl_checkpoint(path, tiny_sdxl_unet_config(), text=tiny_sdxl_text_configs(),
                                 vae=VAEConfig(ch=32, ch_mult=(1, 1, 2, 2), num_res_blocks=1), dtype=torch.float16)


class ImageStats:
    """A bench-only output node (classic protocol) that reports the decoded float IMAGE before it is
    quantised to uint8: whether every value is finite (a NaN turns into black pixels in the PNG, so the
    saved file cannot tell) and its range."""

    RETURN_TYPES = ()
    FUNCTION = "run"
    OUTPUT_NODE = True
    CATEGORY = "bench"

    @classmethod
    def INPUT_TYPES(cls) -> dict:
        return {"required": {"images": ("IMAGE",)}}

    def run(self, images) -> dict:
        import torch

        finite = images[torch.isfinite(images)]
        return {"ui": {"image_stats": [{"is_finite": bool(finite.numel() == images.numel()),
                                        "min": float(finite.min()) if finite.numel() else None,
                                        "max": float(finite.max()) if finite.numel() else None}]}}


def matrix_prompt(sampler: str, scheduler: str, size: int, steps: int, seed: int) -> dict:
    """bench/txt2img.py's prompt with one matrix pair, loading CKPT_NAME, plus ImageStats (node "8") on the
    decoded image."""
    prompt = txt2img_prompt(size, steps, seed)
    prompt["1"]["inputs"]["ckpt_name"] = CKPT_NAME
    prompt["5"]["inputs"].update(sampler_name=sampler, scheduler=scheduler)
    prompt["8"] = {"class_type": "ImageStats", "inputs": {"images": ["6", 0]}}
    return prompt


def ui_of(result, node_id: str) -> dict:
    ui = result.outputs[node_id]
    return ui.get("ui") or ui


def read_preview(runner: Runner, result) -> np.ndarray:
    """The one PNG the prompt's PreviewImage (node "7") wrote, as a uint8 [H, W, 3] array."""
    from PIL import Image

    entries = ui_of(result, "7")["images"]
    if len(entries) != 1:
        raise ValueError(f"expected one preview image, got {entries}")
    entry = entries[0]
    path = runner.app.folders.temp / entry.get("subfolder", "") / entry["filename"]
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"), dtype=np.uint8).copy()


def render_matrix(flags: list[str], checkpoint: Path, pairs: list[tuple[str, str]], size: int, steps: int,
                  seed: int) -> tuple[dict[tuple[str, str], np.ndarray], dict[str, str], dict[tuple[str, str], dict]]:
    """Every pair's image from one app built with `flags`: (uint8 images, {model: dtype}, {pair: ImageStats'
    report plus the prompt's seconds}).

    The checkpoint is loaded once for the whole matrix; afterwards the app's cache and models are released
    and no node services stay installed (the next precision installs its own)."""
    from nodes import services

    runner = Runner(flags, {CKPT_NAME: checkpoint})
    runner.app.registry.register("ImageStats", ImageStats, python_module="bench.quality")
    images, stats = {}, {}
    try:
        for sampler, scheduler in pairs:
            result, timing = runner.execute(matrix_prompt(sampler, scheduler, size, steps, seed))
            images[(sampler, scheduler)] = read_preview(runner, result)
            stats[(sampler, scheduler)] = {**ui_of(result, "8")["image_stats"][0], "seconds": timing["total_s"]}
        dtypes = {m["name"]: m["dtype"] for m in runner.manager_report()["models"]}
    finally:
        runner.app.engine.clear_cache()
        runner.app.engine.close()
        services.install(None)
        del runner
        gc.collect()
    return images, dtypes, stats


def compare_precisions(checkpoint: Path, pairs: list[tuple[str, str]], *, size: int, steps: int,
                       seed: int = 1, precisions: dict[str, list[str]] = PRECISIONS) -> dict:
    """Render the matrix in each precision and compare default against `--force-fp32`, pair by pair.

    Returns the JSON-ready report: settings, `dtypes` per precision, one row per pair (the distance, and per
    precision the float image's `is_finite`, `min`, `max` and the prompt's `seconds`), `overall`, and `images` ({precision: {"sampler/scheduler": uint8 array}}, left out of the JSON)."""
    rendered = {name: render_matrix(flags, checkpoint, pairs, size, steps, seed) for name, flags in precisions.items()}
    candidate, reference = precisions          # the first is compared against the second
    rows, distances = [], []
    for pair in pairs:
        distance = pixel_distance(rendered[candidate][0][pair], rendered[reference][0][pair])
        distances.append(distance)
        rows.append({"sampler": pair[0], "scheduler": pair[1], **asdict(distance),
                     **{name: r[2][pair] for name, r in rendered.items()}})
    return {"checkpoint": str(checkpoint), "size": size, "steps": steps, "seed": seed,
            "compared": [candidate, reference],
            "dtypes": {name: r[1] for name, r in rendered.items()}, "pairs": rows,
            "overall": asdict(overall_distance(distances)),
            "is_all_finite": all(r[2][pair]["is_finite"] for r in rendered.values() for pair in pairs),
            "images": {name: {"/".join(pair): image for pair, image in r[0].items()} for name, r in rendered.items()}}


def print_table(report: dict) -> None:
    def psnr(value: float | None) -> str:
        return "identical" if value is None else f"{value:.2f}"

    for name, dtypes in report["dtypes"].items():
        print(f"{name}: " + ", ".join(f"{model} {dtype}" for model, dtype in dtypes.items()))
    candidate, reference = report["compared"]
    print(f"{'sampler':16} {'scheduler':10} {'max |d|':>8} {'mean |d|':>9} {'PSNR dB':>10} {'s ' + candidate:>12} "
          f"{'s ' + reference:>12}")
    for row in report["pairs"]:
        is_finite = row[candidate]["is_finite"] and row[reference]["is_finite"]
        print(f"{row['sampler']:16} {row['scheduler']:10} {row['max_abs']:8d} {row['mean_abs']:9.3f} "
              f"{psnr(row['psnr_db']):>10} {row[candidate]['seconds']:12.1f} {row[reference]['seconds']:12.1f}"
              f"{'' if is_finite else '  NON-FINITE'}")
    o = report["overall"]
    print(f"{'overall':27} {o['max_abs']:8d} {o['mean_abs']:9.3f} {psnr(o['psnr_db']):>10}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=None,
                        help=f"checkpoint to render with (default {DEFAULT_CHECKPOINT.relative_to(ROOT)}, "
                             "written when missing)")
    parser.add_argument("--tiny", action="store_true", help="use a few-MB random checkpoint (a quick check)")
    parser.add_argument("--tiny-sdxl", action="store_true", help="use a few-MB random SDXL-layout checkpoint")
    parser.add_argument("--samplers", nargs="+", default=list(MATRIX_SAMPLERS), metavar="NAME")
    parser.add_argument("--schedulers", nargs="+", default=list(MATRIX_SCHEDULERS), metavar="NAME")
    parser.add_argument("--size", type=int, default=256, help="image width and height in pixels")
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--int8", action="store_true",
                        help="compare `--int8-unet` images against the default (bf16) ones instead of default "
                             "against --force-fp32")
    parser.add_argument("--json", type=Path, default=RESULTS / "quality.json", help="where to write the report")
    args = parser.parse_args()
    if sum((args.tiny, args.tiny_sdxl, args.model is not None)) > 1:
        parser.error("--tiny, --tiny-sdxl and --model pick different checkpoints; pass only one")
    checkpoint = args.model or (TINY_CHECKPOINT if args.tiny else TINY_SDXL_CHECKPOINT if args.tiny_sdxl
                                else DEFAULT_CHECKPOINT)
    if not checkpoint.is_file():
        if args.model:
            parser.error(f"--model {checkpoint}: no such file")
        started = time.perf_counter()
        writer = write_tiny_checkpoint if args.tiny else write_tiny_sdxl_checkpoint if args.tiny_sdxl \
            else write_checkpoint
        writer(checkpoint)
        print(f"wrote {checkpoint} in {time.perf_counter() - started:.0f} s", flush=True)
    pairs = list(matrix_pairs(args.samplers, args.schedulers))
    started = time.perf_counter()
    report = compare_precisions(checkpoint.resolve(), pairs, size=args.size, steps=args.steps, seed=args.seed,
                                precisions=INT8_PRECISIONS if args.int8 else PRECISIONS)
    report.pop("images")
    report["total_s"] = round(time.perf_counter() - started, 1)
    print_table(report)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=2))
    print(f"wrote {args.json} ({report['total_s']} s)")
    if not report["is_all_finite"]:
        print("NON-FINITE values in a decoded image (see the rows marked above)")
    return 0 if report["is_all_finite"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
