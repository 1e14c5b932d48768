"""CheckpointLoader (ComfyUI's deprecated "Load Checkpoint With Config"): the checkpoint loaded from its
tensors, as CheckpointLoaderSimple loads it, then an LDM inference config's settings applied
(storage/ldm_config.py reads them: v-prediction, the text encoder's last layer)."""
from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from .loading import load_checkpoint_file
from .model_patches import with_discrete_sampling


def apply_ldm_settings(model: Any, clip: Any, settings: Any) -> tuple[Any, Any]:
    """(MODEL, CLIP) with `settings` (a storage.ldm_config.LdmSettings: `v_prediction`, `clip_layer`) applied
    to clones; the cached originals stay as they are."""
    if settings.v_prediction:
        model = with_discrete_sampling(model, "v_prediction")   # ComfyUI: the DDPM table, v prediction
    if settings.clip_layer is not None and clip is not None:
        clip = clip.with_clip_skip(settings.clip_layer)
    return model, clip


def load_checkpoint_with_config(settings: Any, ckpt_path: str | os.PathLike, manager: Any, *,
                                embedding_dirs: Sequence = ()) -> tuple:
    """CheckpointLoader: (MODEL, CLIP, VAE) of the checkpoint with the config's settings applied."""
    model, clip, vae = load_checkpoint_file(ckpt_path, manager, embedding_dirs=embedding_dirs)
    model, clip = apply_ldm_settings(model, clip, settings)
    return model, clip, vae
