"""Random-weight files in the real layouts of the image-side adapters, for tests: CLIP vision towers (Hugging
Face and OpenCLIP layouts), SD2.1 unCLIP checkpoints (UNet with label_emb + the bundled OpenCLIP tower),
style models (T2I style adapter, FLUX Redux) and GLIGEN position nets. Values come from
models.testing.random_tensor (deterministic per key and seed)."""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path

import torch
from torch import Tensor

from models.clip_vision import ClipVisionConfig, ClipVisionModel
from models.testing import (CheckpointSpec, checkpoint_tensors, module_layout, random_tensor,
                            write_safetensors_streaming)


def tiny_clip_vision_config(*, is_siglip: bool = False, projection_dim: int | None = 48) -> ClipVisionConfig:
    """A 3-layer tower 128 wide on 56 x 56 images (4 x 4 patches of 14), as detection reads it back."""
    from models.detection import detect_clip_vision
    config = ClipVisionConfig(hidden_size=128, num_layers=3, num_heads=2, intermediate_size=256, activation="gelu",
                              image_size=56, patch_size=14, projection_dim=None if is_siglip else projection_dim,
                              is_siglip=is_siglip)
    return detect_clip_vision(module_layout(ClipVisionModel, config, ""))     # SigLIP eps / mean / std


def random_clip_vision_state(config: ClipVisionConfig, seed: int = 0, dtype: torch.dtype = torch.float32) \
        -> dict[str, Tensor]:
    shapes = module_layout(ClipVisionModel, config, "")
    return {k: _value(k, s, dtype, seed) for k, s in shapes.items()}


def _value(key: str, shape: tuple[int, ...], dtype: torch.dtype, seed: int) -> Tensor:
    if key.endswith(("class_embedding", "position_embedding.weight")):
        return random_tensor(key, shape, dtype, seed, std=0.02)
    return random_tensor(key, shape, dtype, seed)


def hf_to_open_clip_visual(state: Mapping[str, Tensor], prefix: str = "visual.") -> dict[str, Tensor]:
    """The inverse of models.convert.clip_vision.open_clip_to_hf: HF names -> OpenCLIP `visual.*`."""
    from models.convert.clip_vision import _OPEN_CLIP_LAYER, _OPEN_CLIP_TOP
    top = {hf: oc for oc, hf in _OPEN_CLIP_TOP.items()}
    layer_names = {hf: oc for oc, hf in _OPEN_CLIP_LAYER.items()}
    out: dict[str, Tensor] = {}
    layers = {int(k.split(".")[3]) for k in state if k.startswith("vision_model.encoder.layers.")}
    for key, value in state.items():
        if key in top:
            out[prefix + top[key]] = value
        elif key == "visual_projection.weight":
            out[prefix + "proj"] = value.t().contiguous()
    for n in layers:
        base = f"vision_model.encoder.layers.{n}."
        for param in ("weight", "bias"):
            out[f"{prefix}transformer.resblocks.{n}.attn.in_proj_{param}"] = torch.cat(
                [state[f"{base}self_attn.{p}_proj.{param}"] for p in "qkv"])
            for hf, oc in layer_names.items():
                out[f"{prefix}transformer.resblocks.{n}.{oc}.{param}"] = state[f"{base}{hf}.{param}"]
    return out


def write_random_clip_vision(path: str | Path, config: ClipVisionConfig, *, layout: str = "hf", seed: int = 0,
                             dtype: torch.dtype = torch.float32) -> Path:
    """A clip_vision file: "hf" (`vision_model.*`, plus a `position_ids` buffer as transformers saves it)
    or "open_clip" (`visual.*`)."""
    state = random_clip_vision_state(config, seed, dtype)
    if layout == "open_clip":
        state = hf_to_open_clip_visual(state)
    elif layout == "hf":
        state["vision_model.embeddings.position_ids"] = torch.arange(config.num_positions).unsqueeze(0)
    else:
        raise ValueError(f"unknown CLIP vision layout {layout!r}; 'hf' or 'open_clip'")
    _write(path, state)
    return Path(path)


def _write(path: str | Path, state: Mapping[str, Tensor]) -> None:
    write_safetensors_streaming(path, {k: (tuple(v.shape), v.dtype) for k, v in state.items()},
                                lambda k: state[k])


# --- SD2.1 unCLIP ------------------------------------------------------------------------------------------

def tiny_unclip_unet_config(image_embed_dim: int):
    """tiny_unet_config("sd2") with label_emb taking [noised image embedding, noise-level embedding]."""
    from models.testing import tiny_unet_config
    return replace(tiny_unet_config("sd2"), adm_in_channels=2 * image_embed_dim)


def write_unclip_checkpoint(path: str | Path, vision: ClipVisionConfig, vae, *, seed: int = 0) -> Path:
    """An SD2.1-unclip-layout file: the SD2 checkpoint layout with `label_emb`, the OpenCLIP vision tower
    under `embedder.model.visual.*` and the noise augmentor's schedule buffers (`noise_augmentor.*`)."""
    from models.unclip import NoiseAugmentor
    spec = CheckpointSpec("sd2", tiny_unclip_unet_config(vision.projection_dim), vae, seed=seed)
    layout, make = checkpoint_tensors(spec)
    extra = hf_to_open_clip_visual(random_clip_vision_state(vision, seed + 1), "embedder.model.visual.")
    extra.update({f"noise_augmentor.{k}": v for k, v in NoiseAugmentor(vision.projection_dim).buffers_for_file().items()})
    layout.update({k: (tuple(v.shape), v.dtype) for k, v in extra.items()})
    write_safetensors_streaming(path, layout, lambda k: extra[k] if k in extra else make(k))
    return Path(path)


# --- style models ------------------------------------------------------------------------------------------

def write_random_style_model(path: str | Path, config, *, seed: int = 0, dtype: torch.dtype = torch.float32) -> Path:
    """A StyleModelLoader file (models.style_model.StyleModelConfig: T2I style adapter or FLUX Redux)."""
    from models.style_model import style_model_for
    shapes = module_layout(lambda c: style_model_for(c), config, "")
    state = {k: random_tensor(k, s, dtype, seed, std=0.1 if k == "style_embedding" else None)
             for k, s in shapes.items()}
    _write(path, state)
    return Path(path)


# --- GLIGEN ------------------------------------------------------------------------------------------------

def unet_transformer_blocks(unet_config) -> list[str]:
    """The UNet's transformer-block paths (`input_blocks.1.1.transformer_blocks.0`, ...) in forward order."""
    from models.unet import UNetModel
    with torch.device("meta"):
        unet = UNetModel(unet_config)
    return [f"{name}.{i}" for name, module in unet.named_modules() if name.endswith("transformer_blocks")
            for i in range(len(module))]


def gligen_config_for(unet_config, text_width: int):
    from models.gligen import GligenConfig
    from models.unet import UNetModel
    with torch.device("meta"):
        unet = UNetModel(unet_config)
    widths = tuple(block.attn1.to_q.in_features for name, module in unet.named_modules()
                   if name.endswith("transformer_blocks") for block in module)
    return GligenConfig(fuser_widths=widths, entity_width=768, text_width=text_width)


def write_random_gligen(path: str | Path, unet_config, *, text_width: int, seed: int = 0, alpha: float | None = None,
                        prefix: str = "", dtype: torch.dtype = torch.float32) -> Path:
    """A GLIGEN file for `unet_config` in the released layout (`<block>.fuser.*`, `position_net.*`);
    `alpha`: the gates' value (None: random around 1; 0: the blocks add nothing)."""
    from models.gligen import Gligen
    config = gligen_config_for(unet_config, text_width)
    shapes = module_layout(Gligen, config, "")
    blocks = unet_transformer_blocks(unet_config)
    state = {}
    for key, shape in shapes.items():
        if key.startswith("fusers."):
            _, index, rest = key.split(".", 2)
            file_key = f"{prefix}{blocks[int(index)]}.fuser.{rest}"
        else:
            file_key = prefix + key
        value = random_tensor(key, shape, dtype, seed)
        if alpha is not None and key.endswith(("alpha_attn", "alpha_dense")):
            value = torch.full(shape, alpha, dtype=dtype)
        state[file_key] = value
    _write(path, state)
    return Path(path)
