"""LoRA module names of FLUX.1 -> Plexus weight keys (the BFL single-file names of models/flux.py).

- BFL layout: kohya sd-scripts' FLUX LoRAs underscore it under `lora_unet_`
  (`lora_unet_double_blocks_0_img_attn_qkv`); ComfyUI-style files use it dotted under `diffusion_model.`.
- diffusers' FluxTransformer2DModel names under `transformer.` (optionally below PEFT's
  `base_model.model.`): `transformer.transformer_blocks.0.attn.to_out.0`.

As for MM-DiT (models/lora/mmdit_keys.py), diffusers names that address a slice of a fused BFL weight
(to_q / to_k / to_v of `img_attn.qkv`, the q / k / v / proj_mlp rows of `single_blocks.N.linear1`) and
the final norm's (scale, shift)-swapped adaLN are left to the loader's unmatched report. Correspondences:
diffusers' `convert_flux_transformer_checkpoint_to_diffusers`, read for facts.
"""
from __future__ import annotations

from collections.abc import Iterable

from models.lora.mmdit_keys import transformer_lora_names

_TOP = {"img_in": "x_embedder", "txt_in": "context_embedder", "final_layer.linear": "proj_out",
        "time_in.in_layer": "time_text_embed.timestep_embedder.linear_1",
        "time_in.out_layer": "time_text_embed.timestep_embedder.linear_2",
        "vector_in.in_layer": "time_text_embed.text_embedder.linear_1",
        "vector_in.out_layer": "time_text_embed.text_embedder.linear_2",
        "guidance_in.in_layer": "time_text_embed.guidance_embedder.linear_1",
        "guidance_in.out_layer": "time_text_embed.guidance_embedder.linear_2"}
_DOUBLE = {"img_mod.lin": "norm1.linear", "txt_mod.lin": "norm1_context.linear", "img_attn.proj": "attn.to_out.0",
           "txt_attn.proj": "attn.to_add_out", "img_mlp.0": "ff.net.0.proj", "img_mlp.2": "ff.net.2",
           "txt_mlp.0": "ff_context.net.0.proj", "txt_mlp.2": "ff_context.net.2"}
_SINGLE = {"modulation.lin": "norm.linear", "linear2": "proj_out"}


def _diffusers_modules(config) -> dict[str, str]:
    out = dict(_TOP)
    for i in range(config.depth):
        out |= {f"double_blocks.{i}.{b}": f"transformer_blocks.{i}.{d}" for b, d in _DOUBLE.items()}
    for i in range(config.depth_single_blocks):
        out |= {f"single_blocks.{i}.{b}": f"single_transformer_blocks.{i}.{d}" for b, d in _SINGLE.items()}
    return out


def flux_lora_names(config, weight_keys: Iterable[str], prefix: str = "") -> dict[str, str]:
    """{LoRA module name: weight key} for a FLUX transformer whose state-dict keys start with `prefix`."""
    return transformer_lora_names(weight_keys, prefix, _diffusers_modules(config))
