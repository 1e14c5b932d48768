"""CONDITIONING: ComfyUI's list of `[cross_attention [1, T, C], {options}]` entries, and what nodes do to it.

Options used here (ComfyUI's keys): `pooled_output` [1, P], `area` ((h, w, y, x) in latent cells or
("percentage", h, w, y, x)), `strength`, `mask` [B, H, W], `mask_strength`, `set_area_to_bounds`,
`start_percent` / `end_percent` (sampling progress, 0 = first step), `concat_latent_image` and
`concat_mask` (inpainting models). Every function returns new lists and dicts; inputs are never changed.
"""
from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor

from models.text import sd3 as sd3_text

from . import vae_ops
from .hooks import encodes_with_clip_hooks
from .objects import TextEncoders

log = logging.getLogger("plexus.diffusion")

Conditioning = list[list[Any]]


@encodes_with_clip_hooks      # SetClipHooks' hooks (diffusion.hooks)
def encode_text(clip: TextEncoders, text: str) -> Conditioning:
    """Prompt text -> `[[cond [1, 77k, C], {"pooled_output": [1, P]}]]` (towers concatenated on C)."""
    if clip is None:
        raise ValueError("the clip input is None: the checkpoint has no text encoder; load one with "
                         "CLIPLoader")
    clip.manager.load_models_for([clip])
    if getattr(clip.module, "layout", None) == "sd3":
        return encode_sd3(clip, {kind: text for kind in sd3_text.SD3_KINDS})
    if getattr(clip.module, "layout", None) == "flux":
        from . import flux
        return flux.encode(clip, text, text)
    conds, pooled = [], None
    for tower in clip.towers:
        cond, pooled = tower.encode(text, clip_skip=clip.clip_skip, embeddings=clip.lookup_for(tower))
        conds.append(cond)
    if len(conds) > 1:        # SDXL: CLIP-L and bigG side by side, cut to the shorter (ComfyUI SDXLClipModel)
        cut = min(c.shape[1] for c in conds)
        conds = [torch.cat([c[:, :cut] for c in conds], dim=-1)]
    cond = conds[0]
    return [[cond.cpu(), {"pooled_output": pooled.cpu()}]]


def set_values(conditioning: Conditioning, values: Mapping[str, Any]) -> Conditioning:
    """Each entry with `values` merged into a copy of its options."""
    return [[entry[0], {**entry[1], **values}] for entry in conditioning]


def combine(first: Conditioning, second: Conditioning) -> Conditioning:
    return list(first) + list(second)


def _first(conditioning: Conditioning, what: str) -> list[Any]:
    if len(conditioning) > 1:
        log.warning("%s: conditioning_from has %d entries; only the first is used", what, len(conditioning))
    return conditioning[0]


def average(to: Conditioning, source: Conditioning, to_strength: float) -> Conditioning:
    """to * s + from * (1 - s), the `from` tokens cut or zero-padded to each entry's length."""
    cond_from, options_from = _first(source, "ConditioningAverage")
    pooled_from = options_from.get("pooled_output")
    out = []
    for cond_to, options in to:
        t0 = cond_from[:, :cond_to.shape[1]]
        if t0.shape[1] < cond_to.shape[1]:
            t0 = torch.cat([t0, t0.new_zeros(1, cond_to.shape[1] - t0.shape[1], cond_to.shape[2])], dim=1)
        mixed = cond_to * to_strength + t0 * (1.0 - to_strength)
        options = dict(options)
        pooled_to = options.get("pooled_output", pooled_from)
        if pooled_from is not None and pooled_to is not None:
            options["pooled_output"] = pooled_to * to_strength + pooled_from * (1.0 - to_strength)
        out.append([mixed, options])
    return out


def concat(to: Conditioning, source: Conditioning) -> Conditioning:
    """Each entry's tokens followed by the first `from` entry's tokens."""
    cond_from = _first(source, "ConditioningConcat")[0]
    return [[torch.cat([cond, cond_from], dim=1), dict(options)] for cond, options in to]


def zero_out(conditioning: Conditioning) -> Conditioning:
    out = []
    for cond, options in conditioning:
        options = {k: torch.zeros_like(v) if k in ("pooled_output", "conditioning_lyrics") and v is not None else v
                   for k, v in options.items()}
        out.append([torch.zeros_like(cond), options])
    return out


def set_area(conditioning: Conditioning, width: int, height: int, x: int, y: int, strength: float,
             downscale: int = 8) -> Conditioning:
    """An area in pixels, stored in latent cells (h, w, y, x)."""
    area = (height // downscale, width // downscale, y // downscale, x // downscale)
    return set_values(conditioning, {"area": area, "strength": strength, "set_area_to_bounds": False})


def set_area_percentage(conditioning: Conditioning, width: float, height: float, x: float, y: float,
                        strength: float) -> Conditioning:
    return set_values(conditioning, {"area": ("percentage", height, width, y, x), "strength": strength,
                                     "set_area_to_bounds": False})


def set_mask(conditioning: Conditioning, mask: Tensor, strength: float, is_area_set_to_bounds: bool) -> Conditioning:
    if mask.ndim < 3:
        mask = mask.unsqueeze(0)
    return set_values(conditioning, {"mask": mask, "set_area_to_bounds": is_area_set_to_bounds,
                                     "mask_strength": strength})


def set_timestep_range(conditioning: Conditioning, start: float, end: float) -> Conditioning:
    return set_values(conditioning, {"start_percent": start, "end_percent": end})


def set_inpaint_inputs(conditionings: Sequence[Conditioning], concat_latent: Tensor, mask: Tensor) \
        -> list[Conditioning]:
    """What an inpainting model (9 input channels) concatenates to its input: the masked image's latent
    and the mask."""
    return [set_values(c, {"concat_latent_image": concat_latent, "concat_mask": mask}) for c in conditionings]


def inpaint_model_conditioning(positive: Conditioning, negative: Conditioning, vae, pixels: Tensor, mask: Tensor,
                               is_noise_mask: bool = True) -> tuple[Conditioning, Conditioning, dict]:
    """InpaintModelConditioning: both conditionings carry the greyed-out image's latent and the mask;
    the LATENT is the original image (with the mask as noise_mask when `is_noise_mask`)."""
    concat_latent, concat_mask, latent = vae_ops.inpaint_model_conditioning(vae, pixels, mask, is_noise_mask)
    positive, negative = set_inpaint_inputs([positive, negative], concat_latent, concat_mask)
    return positive, negative, latent


def instruct_pix2pix_conditioning(positive: Conditioning, negative: Conditioning, vae, pixels: Tensor) \
        -> tuple[Conditioning, Conditioning, dict]:
    """InstructPixToPixConditioning (InstructPix2Pix, FLUX.1 Depth / Canny): both conditionings carry the
    image's latent as the model's concat input; the LATENT is zeros of that latent's shape."""
    concat_latent = vae_ops.instruct_pix2pix_latent(vae, pixels)
    positive, negative = (set_values(c, {"concat_latent_image": concat_latent}) for c in (positive, negative))
    return positive, negative, {"samples": torch.zeros_like(concat_latent)}


def encode_sd3(clip: TextEncoders, texts: Mapping[str, str], *, empty_padding: bool = True) -> Conditioning:
    """SD3 conditioning from one prompt per tower (CLIPTextEncodeSD3): context [1, T, 4096] and pooled
    [1, 2048] (models.text.sd3). Without `empty_padding` an empty prompt drops its tower's tokens; CLIP-L
    and CLIP-G are then padded with empty chunks to the same number of chunks, as ComfyUI does."""
    clip.manager.load_models_for([clip])
    towers = dict(clip.module.towers)
    lookup = clip.embedding_lookup
    tokens = {}
    for kind, text in texts.items():
        if kind not in towers or (text == "" and not empty_padding):
            tokens[kind] = []
        else:
            tower = towers[kind]
            tokens[kind] = tower.tokenize(text) if kind == "t5xxl" else tower.tokenize(text, clip.lookup_for(tower))
    if "clip_l" in towers and "clip_g" in towers and len(tokens["clip_l"]) != len(tokens["clip_g"]):
        for kind, other in (("clip_l", "clip_g"), ("clip_g", "clip_l")):
            while len(tokens[kind]) < len(tokens[other]):
                tokens[kind] = tokens[kind] + towers[kind].tokenize("")
    cond, pooled = sd3_text.encode(towers, tokens, clip_skip=clip.clip_skip, embeddings=lookup)
    return [[cond, {"pooled_output": pooled}]]
