"""GLIGEN: GLIGENLoader / GLIGENTextBoxApply, and the gated-attention patch sampling puts in the UNet.

    gligen = load_gligen_file(path, manager)
    positive = text_box(positive, clip, gligen, "a red ball", width=256, height=256, x=64, y=128)

GLIGENTextBoxApply stores ComfyUI's option on every entry: `"gligen": ("position", GLIGEN, [(pooled
text embedding [1, 768], height, width, y, x) in latent cells, ...])`, boxes accumulating over chained
nodes. When sampling, sampling.guidance carries the option as the entry's `model_patch`; the negative's
area-less entries without one get the positive's (ComfyUI's apply_empty_x_to_equal_area, `share_with_uncond`,
so they batch together); the GLIGEN models load beside the UNet (`gligen_models`); and for each model call
the batch's boxes become entity tokens and a `middle_patch` (models/unet_patches: between self- and
cross-attention of every transformer block) that runs the block's gated self-attention
(`transformer_options_for`). A "position" entry with no boxes runs the null entities (ComfyUI's set_empty).
"""
from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from execution.errors import PlexusError
from model_management import ModelPart
from models import checkpoint as checkpoint_loader
from models.detection import detect_gligen
from models.files import load_state_dict
from models.gligen import Gligen, fuser_key_map, gligen_blocks

from .loading import _dtype_for, attention_setting, cached_load, load_dtype_for
from .objects import ManagedHandle

LATENT_CELL_PX = 8


class GligenModel(ManagedHandle):
    """GLIGEN: a models.gligen.Gligen (position net + gated blocks)."""


def load_gligen_file(path: str | os.PathLike, manager: Any) -> GligenModel:
    path = Path(path)

    def load() -> tuple:
        with load_state_dict(path) as source:
            shapes = source.shapes()
            config = detect_gligen(shapes)
            key_map = fuser_key_map(shapes, gligen_blocks(shapes))
            dtype = load_dtype_for(manager, ModelPart.DIFFUSION) or \
                checkpoint_loader._stored_float_dtype(source, next(iter(key_map.values())))
            module = checkpoint_loader.build_module(lambda: Gligen(config, attention_setting(manager)), key_map,
                                                    source, dtype, "GLIGEN")
            source.release_all()
        handle = GligenModel(module, manager=manager, name=f"{path.name} (GLIGEN)", source_key=str(path))
        manager.register(handle, dtype=_dtype_for(manager, ModelPart.DIFFUSION))
        return (handle,)

    return cached_load(manager, "gligen", path, load)[0]


def _pooled_text(clip: Any, text: str) -> Tensor:
    """The unprojected pooled text embedding [1, C] of the CLIP's first tower (ComfyUI's
    return_pooled="unprojected")."""
    if clip is None:
        raise PlexusError("invalid_input", "GLIGENTextBoxApply: the clip input is None", "connect a CLIP")
    clip.manager.load_models_for([clip])
    tower = clip.towers[0]
    if tower.config.projection_dim:
        raise PlexusError("invalid_input", f"GLIGEN needs the unprojected pooled output; this CLIP's "
                          f"{tower.kind} tower has a text projection", "use the SD1.x checkpoint's CLIP-L")
    _, pooled = tower.encode(text, clip_skip=clip.clip_skip, embeddings=clip.embedding_lookup)
    return pooled.float().cpu()


def text_box(conditioning: list, clip: Any, gligen: GligenModel, text: str, *, width: int, height: int,
             x: int, y: int) -> list:
    """GLIGENTextBoxApply: a box (pixels) with its text added to every entry's GLIGEN boxes."""
    if not isinstance(gligen, GligenModel):
        raise PlexusError("invalid_input", "gligen_textbox_model is not a GLIGEN model loaded by Plexus",
                          f"got {type(gligen).__name__}; connect a GLIGENLoader")
    pooled = _pooled_text(clip, text)
    if pooled.shape[-1] != gligen.module.config.text_width:
        raise PlexusError("invalid_input", f"this GLIGEN model takes {gligen.module.config.text_width}-wide text "
                          f"embeddings, the CLIP gives {pooled.shape[-1]}", "use the SD1.x CLIP it was made for")
    box = (pooled, height // LATENT_CELL_PX, width // LATENT_CELL_PX, y // LATENT_CELL_PX, x // LATENT_CELL_PX)
    out = []
    for cond, options in conditioning:
        previous = list(options["gligen"][2]) if "gligen" in options else []
        out.append([cond, {**options, "gligen": ("position", gligen, previous + [box])}])
    return out


# --- sampling support (diffusion.ksampler) ----------------------------------------------------------------

def share_with_uncond(positive: Sequence, negative: Sequence | None) -> Sequence | None:
    """The negative with the positive's GLIGEN options on its area-less entries that have none, unless one
    already has one (ComfyUI apply_empty_x_to_equal_area for "gligen")."""
    if not negative:
        return negative
    found = [o["gligen"] for _, o in positive if "area" not in o and o.get("gligen") is not None]
    free = [i for i, (_, o) in enumerate(negative) if "area" not in o and o.get("gligen") is None]
    if not found or not free or any(o.get("gligen") is not None for _, o in negative if "area" not in o):
        return negative
    out = [list(entry) for entry in negative]
    for k, value in enumerate(found):
        i = free[k % len(free)]
        out[i] = [negative[i][0], {**negative[i][1], "gligen": value}]
    return out


def gligen_models(*conditionings: Iterable | None) -> list[GligenModel]:
    seen: dict[int, GligenModel] = {}
    for conditioning in conditionings:
        for entry in conditioning or ():
            value = entry[1].get("gligen") if len(entry) > 1 else None
            if value is not None and isinstance(value[1], GligenModel):
                seen.setdefault(id(value[1].shared), value[1])
    return list(seen.values())


def transformer_options_for(value: tuple, x_shape: Sequence[int], transformer_options: dict) -> dict:
    """`transformer_options` plus the middle patch of this batch's GLIGEN boxes (x_shape: the latent batch)."""
    kind, gligen, params = value
    if not isinstance(gligen, GligenModel):
        raise PlexusError("invalid_input", "a conditioning's 'gligen' option holds no GLIGEN model loaded by Plexus")
    module: Gligen = gligen.module
    _, _, h, w = x_shape
    boxes, embeddings = [], []
    if kind == "position":
        for pooled, box_h, box_w, box_y, box_x in params:
            boxes.append((box_x / w, box_y / h, (box_x + box_w) / w, (box_y + box_h) / h))
            embeddings.append(pooled)
    with torch.inference_mode():
        entities = module.entities(boxes, embeddings, x_shape[0])                       # [B, 30, D]

    def middle_patch(x: Tensor, extra_options: dict) -> Tensor:
        index = extra_options["transformer_index"]
        if index >= len(module.fusers):
            raise PlexusError("invalid_input", f"this GLIGEN model has {len(module.fusers)} gated blocks, the UNet "
                              f"more transformer blocks", "use it with the SD1.x model it was made for")
        return module.fusers[index](x, entities.to(device=x.device, dtype=x.dtype))

    patches = dict(transformer_options.get("patches") or {})
    patches["middle_patch"] = [*(patches.get("middle_patch") or []), middle_patch]
    return {**transformer_options, "patches": patches}
