"""Full-size random SD3.5 medium files in the published layouts, written once (about 11.5 GB in all).

    .venv/bin/python bench/sd3_files.py [--dir /tmp/plexus-sd35-medium]   # check `df -h /` first

- `sd3.5_medium-random.safetensors`: MM-DiT-X (24 joint blocks 1536 wide, QK RMS-norm, dual attention in
  blocks 0-12, 384² position grid) + the 16-channel VAE, bf16, no text encoders: the layout of
  tests/data/manifests/sd35_medium.json (the published file holds these tensors only);
- `clip_l.safetensors`, `clip_g.safetensors` (fp16) and `t5xxl_fp8_e4m3fn.safetensors`: the standalone text
  encoders ComfyUI's SD3.5 example graph loads through TripleCLIPLoader, in the key layout the SD3 files use
  with their prefixes stripped.

A file is written only while the disk keeps MARGIN_BYTES free after it (the disk is shared); one that does not
fit is left out with a message, and bench/compare.py --family sd35 then runs without it (T5-XXL absent:
DualCLIPLoader type sd3 instead of TripleCLIPLoader, said in its output). compare.py hard-links the files into
its models folder. Random weights from models/testing.py.
"""
from __future__ import annotations

import argparse
import shutil
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SD35_DIR = Path("/tmp/plexus-sd35-medium")
SD35_CHECKPOINT = "sd3.5_medium-random.safetensors"
MARGIN_BYTES = 4 * 2 ** 30
SD35_TEXT = {"clip_l": "clip_l.safetensors", "clip_g": "clip_g.safetensors", "t5xxl": "t5xxl_fp8_e4m3fn.safetensors"}


def full_text_configs() -> dict:
    """The full-size CLIP-L, CLIP-G and T5-XXL configs SD3 / SD3.5 use."""
    from models.text import ClipTextConfig
    from models.text.t5 import T5Config
    return {"clip_l": ClipTextConfig.of_kind("clip_l"),
            "clip_g": ClipTextConfig.of_kind("clip_g", hidden_size=1280, num_layers=32, num_heads=20,
                                             intermediate_size=5120, projection_dim=1280),
            "t5xxl": T5Config()}


def sd35_medium_mmdit():
    from models.mmdit import MMDiTConfig
    return MMDiTConfig(pos_embed_max_size=384, qk_norm=True, dual_attention_blocks=tuple(range(13)))


def write_sd35_medium(directory: Path = SD35_DIR) -> dict[str, Path]:
    """Write the files that are missing (and fit, see MARGIN_BYTES); returns {"checkpoint" | kind: path} of
    the files there."""
    sys.path.insert(0, str(ROOT))
    import torch

    from models.testing import Sd3CheckpointSpec, write_random_sd3_checkpoint, write_random_text_encoder
    from models.vae import VAEConfig
    directory.mkdir(parents=True, exist_ok=True)
    paths = {"checkpoint": directory / SD35_CHECKPOINT, **{k: directory / v for k, v in SD35_TEXT.items()}}
    dtypes = {"clip_l": torch.float16, "clip_g": torch.float16, "t5xxl": torch.float8_e4m3fn}
    sizes = {"checkpoint": 5_107_089_320, "clip_l": 246_144_152, "clip_g": 1_389_382_176, "t5xxl": 4_900_000_000}
    for key, path in list(paths.items()):
        if path.exists():
            continue
        free = shutil.disk_usage(directory).free
        if free < sizes[key] + MARGIN_BYTES:
            print(f"not written: {path.name} needs {sizes[key] / 2**30:.1f} GiB and {free / 2**30:.1f} GiB are free "
                  f"(a margin of {MARGIN_BYTES / 2**30:.0f} GiB is kept)", flush=True)
            del paths[key]
            continue
        started = time.perf_counter()
        partial = path.with_suffix(".partial.safetensors")
        if key == "checkpoint":
            vae = VAEConfig(z_channels=16, embed_dim=16, has_quant_conv=False)
            write_random_sd3_checkpoint(partial, Sd3CheckpointSpec(sd35_medium_mmdit(), vae, dtype=torch.bfloat16,
                                                                   seed=35))
        else:
            write_random_text_encoder(partial, key, full_text_configs()[key], dtypes[key], seed=36)
        partial.rename(path)
        print(f"wrote {path} ({path.stat().st_size / 2**30:.2f} GiB) in {time.perf_counter() - started:.0f} s",
              flush=True)
    return paths


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dir", type=Path, default=SD35_DIR)
    write_sd35_medium(parser.parse_args().dir)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
