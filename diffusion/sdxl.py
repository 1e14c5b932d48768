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

from .hooks import encodes_with_clip_hooks

SDXL_FAMILIES = ("sdxl", "sdxl_refiner")
DEFAULT_SIZE = 768                              # width/height when neither the conditioning nor the latent says
DEFAULT_AESTHETIC = {"positive": 6.0, "negative": 2.5}


def needs_adm(model_config: Any) -> bool:
    return getattr(model_config, "family", None) in SDXL_FAMILIES


def adm_vector(model_config: Any, options: dict, prompt_type: str,
               latent_shape: tuple[int, ...] | None = None) -> Tensor:
    """y [1, adm_in_channels] for one conditioning entry's options. Width and height the entry does not
    name (a plain CLIPTextEncode) are the latent's size in pixels, 8 per latent pixel (ComfyUI's
    samplers.encode_model_conds), or 768 without a latent."""
    pooled = options.get("pooled_output")
    if pooled is None:
        raise ValueError("SDXL conditioning has no pooled_output: encode the prompt with an SDXL CLIP "
                         "(the checkpoint's, or DualCLIPLoader type sdxl)")
    default_w, default_h = (latent_shape[-1] * 8, latent_shape[-2] * 8) if latent_shape else (DEFAULT_SIZE, DEFAULT_SIZE)
    width, height = int(options.get("width", default_w)), int(options.get("height", default_h))
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


def with_adm(model_config: Any, conditioning: list | None, prompt_type: str,
             latent_shape: tuple[int, ...] | None = None) -> list | None:
    """`conditioning` with `y` added to every entry's options when the model is SDXL (else unchanged)."""
    if conditioning is None or not needs_adm(model_config):
        return conditioning
    return [[entry[0], {**entry[1], "y": adm_vector(model_config, entry[1], prompt_type, latent_shape)}]
            for entry in conditioning]


BIG_G_KINDS = ("open_clip_g", "clip_g")          # bigG from a checkpoint (OpenCLIP layout) or a clip_g file (HF)


def _tower(clip: Any, kind: str, node: str):
    if clip is None:
        raise ValueError(f"{node}: the clip input is None; load an SDXL checkpoint or DualCLIPLoader type sdxl")
    towers = {t.kind: t for t in clip.towers}
    wanted = BIG_G_KINDS if kind == "open_clip_g" else (kind,)
    found = [towers[k] for k in wanted if k in towers]
    if not found:
        raise ValueError(f"{node} needs an SDXL CLIP with a {kind} tower; this CLIP has {sorted(towers)}")
    return found[0]


@encodes_with_clip_hooks      # SetClipHooks' hooks (diffusion.hooks)
def encode_sdxl(clip: Any, text_g: str, text_l: str, *, width: int, height: int, crop_w: int, crop_h: int,
                target_width: int, target_height: int) -> list:
    """CLIPTextEncodeSDXL: text_l through CLIP-L, text_g through bigG; the shorter prompt is padded with
    empty 77-token chunks to the longer one's count (ComfyUI nodes.CLIPTextEncodeSDXL); pooled from bigG."""
    clip_l, big_g = _tower(clip, "clip_l", "CLIPTextEncodeSDXL"), _tower(clip, "open_clip_g", "CLIPTextEncodeSDXL")
    clip.manager.load_models_for([clip])
    chunks_l = clip_l.tokenize(text_l, clip.lookup_for(clip_l))
    chunks_g = big_g.tokenize(text_g, clip.lookup_for(big_g))
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


@encodes_with_clip_hooks
def encode_sdxl_refiner(clip: Any, text: str, *, ascore: float, width: int, height: int) -> list:
    """CLIPTextEncodeSDXLRefiner: the prompt through the refiner's bigG, with its aesthetic score and size."""
    big_g = _tower(clip, "open_clip_g", "CLIPTextEncodeSDXLRefiner")
    clip.manager.load_models_for([clip])
    cond, pooled = big_g.encode(text, clip_skip=clip.clip_skip, embeddings=clip.lookup_for(big_g))
    return [[cond.cpu(), {"pooled_output": pooled.cpu(), "aesthetic_score": ascore, "width": width,
                          "height": height}]]


# --- standalone text encoder files (DualCLIPLoader type sdxl) ----------------------------------------------

def text_encoder_kind_of(shapes: dict[str, tuple[int, ...]]) -> tuple[str, str]:
    """(kind, key prefix) of a standalone CLIP-L / bigG file: OpenCLIP layout (`transformer.resblocks.`,
    optionally under `model.`) is bigG; in the HF layout (`text_model.`) bigG is the tower 1280 wide or
    projecting to 1280 (the pooled width label_emb takes), CLIP-L the other."""
    from models.errors import UnknownModelError
    for prefix in ("", "model."):
        if prefix + "token_embedding.weight" in shapes and prefix + "transformer.resblocks.0.ln_1.weight" in shapes:
            width = shapes[prefix + "token_embedding.weight"][1]
            if width == 1024:
                raise UnknownModelError("an OpenCLIP ViT-H (SD2.x) text encoder is not an SDXL tower",
                                        "SDXL needs CLIP-L (768) and bigG (1280)")
            return "open_clip_g", prefix
    if "text_model.embeddings.token_embedding.weight" not in shapes:
        raise UnknownModelError("not a CLIP-L or CLIP-G (bigG) text encoder file",
                                "no text_model.embeddings.token_embedding.weight and no OpenCLIP resblocks")
    width = shapes["text_model.embeddings.token_embedding.weight"][1]
    projection = shapes.get("text_projection.weight", (0,))[0]
    return ("clip_g" if 1280 in (width, projection) else "clip_l"), ""


def load_sdxl_text_encoder_files(paths: list, manager: Any, *, embedding_dirs=()) -> Any:
    """DualCLIPLoader type sdxl: a clip_l and a clip_g file, in either order, as one SDXL CLIP (CLIP-L first,
    run penultimate without final norm, as in a checkpoint)."""
    from pathlib import Path

    from model_management import ModelPart
    from models.errors import ModelError
    from models.files import load_state_dict
    from models.text import CLIP_L_PENULTIMATE, load_text_encoder

    from . import loading
    paths = [Path(p) for p in paths]

    def load() -> tuple:
        encoders = {}
        for path in paths:
            with load_state_dict(path) as source:
                kind, prefix = text_encoder_kind_of(source.shapes())
                state = {k[len(prefix):]: source[k] for k in source if k.startswith(prefix)}
                behaviour = CLIP_L_PENULTIMATE if kind == "clip_l" else {}
                encoders[kind] = load_text_encoder(kind, state, **behaviour,
                                                   dtype=loading.load_dtype_for(manager, ModelPart.TEXT_ENCODER))
                source.release_all()
        g = [k for k in BIG_G_KINDS if k in encoders]
        if "clip_l" not in encoders or not g:
            raise ModelError("DualCLIPLoader type sdxl needs one clip_l and one clip_g file",
                             f"got {', '.join(sorted(encoders)) or 'nothing'} from {', '.join(p.name for p in paths)}")
        ordered = [encoders["clip_l"], encoders[g[0]]]
        return (loading.wrap_text_encoders(ordered, manager, source_key="+".join(str(p) for p in paths)),)

    handle = loading.cached_load(manager, "text_encoder_sdxl", paths[0], load,
                                 tuple(loading._file_key("second", p) for p in paths[1:]))[0]
    return loading.with_embeddings(handle, embedding_dirs)
