"""The key correspondences between the LDM UNet layout (``input_blocks.N.0.in_layers.0.weight``) and the diffusers
one (``down_blocks.X.resnets.I.norm1.weight``) that ComfyUI exposes as ``comfy.utils`` tables and packs combine
into their own converters (Advanced-ControlNet's SVD ControlNet): per attention wrapper, per transformer block,
per resnet block (LDM name -> diffusers name) and the model-level (LDM, diffusers) pairs. Facts of the two key
layouts, written out here; Plexus's own converters are under models/convert/."""
from __future__ import annotations

_WB = ("weight", "bias")

UNET_MAP_ATTENTIONS = {f"{module}.{p}" for module in ("proj_in", "proj_out", "norm") for p in _WB}

TRANSFORMER_BLOCKS = (
    {f"norm{i}.{p}" for i in (1, 2, 3) for p in _WB}
    | {f"attn{i}.to_{w}.weight" for i in (1, 2) for w in ("q", "k", "v")}
    | {f"attn{i}.to_out.0.{p}" for i in (1, 2) for p in _WB}
    | {f"ff.net.0.proj.{p}" for p in _WB}
    | {f"ff.net.2.{p}" for p in _WB}
)

_RESNET_MODULES = (("in_layers.0", "norm1"), ("in_layers.2", "conv1"), ("emb_layers.1", "time_emb_proj"),
                   ("out_layers.0", "norm2"), ("out_layers.3", "conv2"), ("skip_connection", "conv_shortcut"))
UNET_MAP_RESNET = {f"{ldm}.{p}": f"{diffusers}.{p}" for ldm, diffusers in _RESNET_MODULES for p in _WB}

_BASIC_MODULES = (("label_emb.0.0", "class_embedding.linear_1"), ("label_emb.0.2", "class_embedding.linear_2"),
                  ("label_emb.0.0", "add_embedding.linear_1"), ("label_emb.0.2", "add_embedding.linear_2"),
                  ("input_blocks.0.0", "conv_in"), ("out.0", "conv_norm_out"), ("out.2", "conv_out"),
                  ("time_embed.0", "time_embedding.linear_1"), ("time_embed.2", "time_embedding.linear_2"))
UNET_MAP_BASIC = {(f"{ldm}.{p}", f"{diffusers}.{p}") for ldm, diffusers in _BASIC_MODULES for p in _WB}
