"""Tiny random-weight SD checkpoints in the real layout, and an engine harness with them in models/checkpoints."""
from __future__ import annotations

import shutil
from pathlib import Path

from models.testing import CheckpointSpec, tiny_unet_config, write_random_checkpoint
from models.vae import VAEConfig

TINY_NAME = "tiny-sd15.safetensors"
TINY_INPAINT_NAME = "tiny-sd15-inpainting.safetensors"


# 8 pixels per latent cell like the real VAE, so EmptyLatentImage's sizes decode to the requested pixels
TINY_VAE = VAEConfig(ch=32, ch_mult=(1, 1, 2, 2), num_res_blocks=1)


def write_tiny(path: Path, family: str = "sd1", in_channels: int = 4) -> Path:
    spec = CheckpointSpec(family, tiny_unet_config(family, in_channels), TINY_VAE)
    return write_random_checkpoint(path, spec)


def install_checkpoint(source: Path, checkpoints_dir: Path, name: str) -> Path:
    checkpoints_dir.mkdir(parents=True, exist_ok=True)
    target = checkpoints_dir / name
    shutil.copyfile(source, target)
    return target
