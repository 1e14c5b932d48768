"""The demo checkpoint main.py writes on first start when models/checkpoints is empty: a small SD1.5-layout
checkpoint with random weights (it draws noise-like pictures, not images of anything), so a fresh install
can run examples/txt2img_api.json end to end in seconds on a CPU."""
from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from models.testing import CheckpointSpec, write_random_checkpoint
from models.unet import UNetConfig
from models.vae import VAEConfig

DEMO_CHECKPOINT_NAME = "plexus-demo-sd15-random.safetensors"
# 8 pixels per latent cell like the real SD VAE, so every workflow's sizes work unchanged
DEMO_VAE = VAEConfig(ch=32, ch_mult=(1, 1, 2, 2), num_res_blocks=1)
# three levels, one res block each, attention only at 1/2 and 1/4 of the latent size (fast at 256x256 on a CPU)
DEMO_UNET = UNetConfig(model_channels=32, channel_mult=(1, 2, 2), num_res_blocks=(1, 1, 1), transformer_depth=(0, 1, 1),
                       transformer_depth_middle=1, transformer_depth_output=(1, 1, 1, 1, 0, 0), context_dim=32,
                       num_heads=4)


def write_demo_checkpoint(folder: Path) -> Path:
    """Write the demo checkpoint into `folder` (atomically: a partial file never appears under its name)."""
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / DEMO_CHECKPOINT_NAME
    scratch = Path(tempfile.mkdtemp(prefix=".plexus-demo-", dir=folder.parent))
    try:
        partial = write_random_checkpoint(scratch / DEMO_CHECKPOINT_NAME, _spec())
        partial.replace(target)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return target


def _spec() -> CheckpointSpec:
    return CheckpointSpec("sd1", DEMO_UNET, DEMO_VAE)
