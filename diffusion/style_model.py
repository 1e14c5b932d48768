"""STYLE_MODEL: StyleModelLoader / StyleModelApply (T2I style adapter, FLUX Redux).

    style = load_style_model_file(path, manager)
    conditioning = apply_style_model(conditioning, style, vision_output, strength=1.0, strength_type="multiply")

The style model turns CLIP_VISION_OUTPUT's last_hidden_state into tokens ([B, T, context]); all images'
tokens are laid end to end ([1, B*T, context]) and appended to every entry's text tokens (ComfyUI
nodes.StyleModelApply). strength_type "multiply" scales the tokens; "attn_bias" leaves them and, when
strength != 1 (or an entry already carries one), builds ComfyUI's float16 `attention_mask` [B, n, n] over
text + style (+ reference-image) tokens with log(strength) in the columns of the style tokens. FLUX reads
it (diffusion.flux resizes it to the latent's token grid, models.flux adds it to every joint attention's
scores); the UNets and MM-DiT ignore it, as ComfyUI's do.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from execution.errors import PlexusError
from model_management import ModelPart
from models import checkpoint as checkpoint_loader
from models.detection import detect_style_model
from models.files import load_state_dict
from models.style_model import style_model_for

from .loading import _dtype_for, cached_load, load_dtype_for
from .objects import ManagedHandle

STRENGTH_TYPES = ("multiply", "attn_bias")


class StyleModel(ManagedHandle):
    """STYLE_MODEL: models.style_model.StyleAdapter or ReduxEncoder."""

    def get_cond(self, clip_vision_output: Any) -> Tensor:
        """Tokens [B, T, context] of the output's last_hidden_state (ComfyUI StyleModel.get_cond)."""
        self.manager.load_models_for([self])
        features = clip_vision_output.last_hidden_state
        config = self.module.config
        if features.shape[-1] != config.in_width:
            raise PlexusError("invalid_input", f"this style model takes CLIP vision features {config.in_width} "
                              f"wide, the clip_vision_output has {features.shape[-1]}",
                              "use the CLIP vision model the style model was trained with (ViT-L/14 for the "
                              "T2I style adapter, SigLIP for FLUX Redux)")
        with torch.inference_mode():
            return self.module(features.to(self.manager.device)).float().cpu()


def load_style_model_file(path: str | os.PathLike, manager: Any) -> StyleModel:
    path = Path(path)

    def load() -> tuple:
        with load_state_dict(path) as source:
            config = detect_style_model(source.shapes())
            dtype = load_dtype_for(manager, ModelPart.DIFFUSION) or \
                checkpoint_loader._stored_float_dtype(source, next(iter(source.shapes())))
            module = checkpoint_loader.build_module(lambda: style_model_for(config), {k: k for k in source.shapes()},
                                                    source, dtype, "style model")
            source.release_all()
        handle = StyleModel(module, manager=manager, name=f"{path.name} ({config.kind})", source_key=str(path))
        manager.register(handle, dtype=_dtype_for(manager, ModelPart.DIFFUSION))
        return (handle,)

    return cached_load(manager, "style_model", path, load)[0]


def apply_style_model(conditioning: list, style_model: StyleModel, clip_vision_output: Any, *, strength: float,
                      strength_type: str = "multiply") -> list:
    """StyleModelApply (see the module notes)."""
    if not isinstance(style_model, StyleModel):
        raise PlexusError("invalid_input", "style_model is not a style model loaded by Plexus",
                          f"got {type(style_model).__name__}; connect a StyleModelLoader")
    if strength_type not in STRENGTH_TYPES:
        raise PlexusError("invalid_input", f"strength_type must be one of {list(STRENGTH_TYPES)}, not {strength_type!r}")
    tokens = style_model.get_cond(clip_vision_output)
    tokens = tokens.flatten(0, 1).unsqueeze(0)                              # [B, T, C] -> [1, B*T, C]
    if strength_type == "multiply":
        tokens = tokens * strength
    out = []
    for text, options in conditioning:
        options = dict(options)
        if "attention_mask" in options or (strength_type == "attn_bias" and strength != 1.0):
            bias = strength if strength_type == "attn_bias" else 1.0
            options["attention_mask"] = _extended_mask(options, text, tokens.shape[1], bias)
            options["attention_mask_img_shape"] = options.get("attention_mask_img_shape", (1, 1))
        out.append([torch.cat([text, tokens.to(text)], dim=1), options])
    return out


def _extended_mask(options: dict, text: Tensor, n_style: int, bias: float) -> Tensor:
    """The entry's mask over [text, reference image] grown by the style tokens between them, whose columns
    get log(bias) for the text and image rows (ComfyUI's quadrant copy; float16 as there)."""
    ref_h, ref_w = options.get("attention_mask_img_shape", (1, 1))
    n_ref, n_txt = ref_h * ref_w, text.shape[1]
    mask = options.get("attention_mask")
    if mask is None:
        mask = torch.zeros((text.shape[0], n_txt + n_ref, n_txt + n_ref), dtype=torch.float16)
    if mask.dtype == torch.bool:
        mask = torch.log(mask.to(torch.float16))                            # True -> 0, False -> -inf
    n = n_txt + n_style + n_ref
    grown = torch.zeros((text.shape[0], n, n), dtype=torch.float16)
    s = n_txt + n_style
    grown[:, :n_txt, :n_txt] = mask[:, :n_txt, :n_txt]
    grown[:, :n_txt, s:] = mask[:, :n_txt, n_txt:]
    grown[:, s:, :n_txt] = mask[:, n_txt:, :n_txt]
    grown[:, s:, s:] = mask[:, n_txt:, n_txt:]
    log_bias = torch.log(torch.tensor([bias]))                              # log(0) = -inf: style tokens masked
    grown[:, :n_txt, n_txt:s] = log_bias
    grown[:, s:, n_txt:s] = log_bias
    return grown.to(text.device)
