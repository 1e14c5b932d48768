"""unCLIP: SD2.1 unCLIP checkpoints, unCLIPConditioning, and the image-embedding ADM vector sampling adds.

    model, clip, vae, vision = load_unclip_checkpoint(path, manager)       # unCLIPCheckpointLoader
    positive = unclip_conditioning(positive, vision_output, strength=1.0, noise_augmentation=0.1)

unCLIPConditioning appends `{"clip_vision_output", "strength", "noise_augmentation"}` to an entry's
"unclip_conditioning" list (ComfyUI's key and shape). When sampling starts (diffusion.ksampler._conds),
`with_adm` turns the list into the vector models.unclip computes: for an SD2.1 unCLIP UNet (variant
"unclip") it is the entry's `y` (entries without images get zeros, as ComfyUI's SD21UNCLIP.encode_adm);
for SDXL (Revision) its first `pooled` values replace the entry's pooled_output before the size
embeddings are added (model_base.sdxl_pooled). The noise is seeded from the sampler seed.
"""
from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from execution.errors import PlexusError
from models.detection import UNCLIP_VISION_PREFIX
from models.files import load_state_dict
from models.sdxl import SIZE_EMBED_DIM
from models.unclip import (REVISION_MERGE_AUGMENTATION, SD21_MERGE_AUGMENTATION, ImageEmbedding, NoiseAugmentor,
                           unclip_adm)

from .clip_vision import ClipVisionOutput, load_clip_vision_file
from .loading import load_checkpoint_file

UNCLIP_KEY = "unclip_conditioning"
# ADM width minus the pooled vector: the size embeddings of SDXL base (6) and refiner (5)
SDXL_SIZE_WIDTHS = {"sdxl": 6 * SIZE_EMBED_DIM, "sdxl_refiner": 5 * SIZE_EMBED_DIM}


def load_unclip_checkpoint(path: str | os.PathLike, manager: Any, *, embedding_dirs: Sequence = ()) -> tuple:
    """(MODEL, CLIP, VAE, CLIP_VISION) of a checkpoint; CLIP_VISION is its bundled vision tower
    (`embedder.model.visual.*`), None when the file has none (as ComfyUI)."""
    path = Path(path)
    model, clip, vae = load_checkpoint_file(path, manager, embedding_dirs=embedding_dirs)
    with load_state_dict(path) as source:
        has_tower = any(k.startswith(UNCLIP_VISION_PREFIX) for k in source.shapes())
    vision = load_clip_vision_file(path, manager) if has_tower else None
    return model, clip, vae, vision


def unclip_conditioning(conditioning: list, clip_vision_output: ClipVisionOutput, *, strength: float,
                        noise_augmentation: float) -> list:
    """unCLIPConditioning: the image appended to every entry's "unclip_conditioning" (strength 0: unchanged)."""
    if strength == 0:
        return conditioning
    if getattr(clip_vision_output, "image_embeds", None) is None:
        raise PlexusError("invalid_input", "clip_vision_output has no image_embeds",
                          "connect a CLIPVisionEncode output")
    item = {"clip_vision_output": clip_vision_output, "strength": strength, "noise_augmentation": noise_augmentation}
    return [[entry[0], {**entry[1], UNCLIP_KEY: [*entry[1].get(UNCLIP_KEY, []), item]}] for entry in conditioning]


def _embeddings(options: dict) -> list[ImageEmbedding]:
    return [ImageEmbedding(item["clip_vision_output"].image_embeds, float(item["strength"]),
                           float(item["noise_augmentation"])) for item in options.get(UNCLIP_KEY) or ()]


def with_adm(model_config: Any, conditioning: list | None, *, seed: int) -> list | None:
    """`conditioning` with the unCLIP vector applied for this model (see the module notes), else unchanged."""
    if conditioning is None or model_config is None:
        return conditioning
    family = getattr(model_config, "family", None)
    if getattr(model_config, "variant", None) == "unclip":
        adm = model_config.unet.adm_in_channels
        augmentor = NoiseAugmentor(adm // 2)

        def y_for(options: dict) -> torch.Tensor:
            embeddings = _embeddings(options)
            if not embeddings:
                return torch.zeros(1, adm)
            return unclip_adm(embeddings, augmentor, seed=seed, merge_augmentation=SD21_MERGE_AUGMENTATION)
        return [[entry[0], {**entry[1], "y": y_for(entry[1])}] for entry in conditioning]
    if family in SDXL_SIZE_WIDTHS:                                          # Revision
        pooled_width = model_config.unet.adm_in_channels - SDXL_SIZE_WIDTHS[family]
        augmentor = NoiseAugmentor(pooled_width)
        out = []
        for entry in conditioning:
            embeddings = _embeddings(entry[1])
            if embeddings:
                vector = unclip_adm(embeddings, augmentor, seed=seed, merge_augmentation=REVISION_MERGE_AUGMENTATION)
                entry = [entry[0], {**entry[1], "pooled_output": vector[:, :pooled_width]}]
            out.append(entry)
        return out
    return conditioning
