"""SDXL conditioning for sampling: each CONDITIONING entry gets the ADM vector `y` its UNet's label_emb takes.

ComfyUI computes the vector per entry when sampling starts (model_base.SDXL / SDXLRefiner.encode_adm) from
the entry's options: `pooled_output` (bigG's pooled text embedding, required), `width` / `height` (default
768 each: what a plain CLIPTextEncode gives), `crop_w` / `crop_h` (0), `target_width` / `target_height`
(default width / height) for the base; the refiner takes `aesthetic_score` instead of the target size,
6.0 for positive and 2.5 for negative prompts unless CLIPTextEncodeSDXLRefiner set it. The embedding
itself is models.sdxl (Podell et al. 2023, sec. 2.2).
"""
from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from models.sdxl import SIZE_EMBED_DIM, base_adm, refiner_adm

SDXL_FAMILIES = ("sdxl", "sdxl_refiner")
DEFAULT_SIZE = 768                              # ComfyUI's width/height when the conditioning names none
DEFAULT_AESTHETIC = {"positive": 6.0, "negative": 2.5}


def needs_adm(model_config: Any) -> bool:
    return getattr(model_config, "family", None) in SDXL_FAMILIES


def adm_vector(model_config: Any, options: dict, prompt_type: str) -> Tensor:
    """y [1, adm_in_channels] for one conditioning entry's options."""
    pooled = options.get("pooled_output")
    if pooled is None:
        raise ValueError("SDXL conditioning has no pooled_output: encode the prompt with an SDXL CLIP "
                         "(the checkpoint's, or DualCLIPLoader type sdxl)")
    width, height = int(options.get("width", DEFAULT_SIZE)), int(options.get("height", DEFAULT_SIZE))
    crops = dict(crop_w=int(options.get("crop_w", 0)), crop_h=int(options.get("crop_h", 0)))
    if model_config.family == "sdxl_refiner":
        score = float(options.get("aesthetic_score", DEFAULT_AESTHETIC.get(prompt_type, 6.0)))
        y = refiner_adm(pooled.float(), width=width, height=height, aesthetic_score=score, **crops)
    else:
        y = base_adm(pooled.float(), width=width, height=height, **crops,
                     target_width=int(options.get("target_width", width)),
                     target_height=int(options.get("target_height", height)))
    expected = model_config.unet.adm_in_channels
    if y.shape[1] != expected:
        raise ValueError(f"SDXL pooled_output is {pooled.shape[1]} wide; this UNet's label_emb takes "
                         f"{expected} = pooled + size embeddings of {SIZE_EMBED_DIM} (is the CLIP the model's?)")
    return y


def with_adm(model_config: Any, conditioning: list | None, prompt_type: str) -> list | None:
    """`conditioning` with `y` added to every entry's options when the model is SDXL (else unchanged)."""
    if conditioning is None or not needs_adm(model_config):
        return conditioning
    return [[entry[0], {**entry[1], "y": adm_vector(model_config, entry[1], prompt_type)}] for entry in conditioning]


def _tower(clip: Any, kind: str, node: str):
    if clip is None:
        raise ValueError(f"{node}: the clip input is None; load an SDXL checkpoint or DualCLIPLoader type sdxl")
    towers = {t.kind: t for t in clip.towers}
    if kind not in towers:
        raise ValueError(f"{node} needs an SDXL CLIP with a {kind} tower; this CLIP has {sorted(towers)}")
    return towers[kind]


def encode_sdxl(clip: Any, text_g: str, text_l: str, *, width: int, height: int, crop_w: int, crop_h: int,
                target_width: int, target_height: int) -> list:
    """CLIPTextEncodeSDXL: text_l through CLIP-L, text_g through bigG; the shorter prompt is padded with
    empty 77-token chunks to the longer one's count (ComfyUI nodes.CLIPTextEncodeSDXL); pooled from bigG."""
    clip_l, big_g = _tower(clip, "clip_l", "CLIPTextEncodeSDXL"), _tower(clip, "open_clip_g", "CLIPTextEncodeSDXL")
    clip.manager.load_models_for([clip])
    chunks_l = clip_l.tokenize(text_l, clip.embedding_lookup)
    chunks_g = big_g.tokenize(text_g, clip.embedding_lookup)
    for chunks, tower, other in ((chunks_l, clip_l, chunks_g), (chunks_g, big_g, chunks_l)):
        while len(chunks) < len(other):
            chunks.append([(t, 1.0) for t in tower.empty_chunk()])
    cond_l, _ = clip_l.encode(chunks_l, clip_skip=clip.clip_skip)
    cond_g, pooled = big_g.encode(chunks_g, clip_skip=clip.clip_skip)
    cut = min(cond_l.shape[1], cond_g.shape[1])
    cond = torch.cat([cond_l[:, :cut], cond_g[:, :cut]], dim=-1)
    options = {"pooled_output": pooled.cpu(), "width": width, "height": height, "crop_w": crop_w, "crop_h": crop_h,
               "target_width": target_width, "target_height": target_height}
    return [[cond.cpu(), options]]


def encode_sdxl_refiner(clip: Any, text: str, *, ascore: float, width: int, height: int) -> list:
    """CLIPTextEncodeSDXLRefiner: the prompt through the refiner's bigG, with its aesthetic score and size."""
    big_g = _tower(clip, "open_clip_g", "CLIPTextEncodeSDXLRefiner")
    clip.manager.load_models_for([clip])
    cond, pooled = big_g.encode(text, clip_skip=clip.clip_skip, embeddings=clip.embedding_lookup)
    return [[cond.cpu(), {"pooled_output": pooled.cpu(), "aesthetic_score": ascore, "width": width,
                          "height": height}]]
