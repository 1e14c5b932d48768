"""FLUX Redux cases: the FLUX [dev] txt2img graph of fidelity_cases/flux.py (its reduced-depth transformer, full
T5-XXL fp8, CLIP-L and ae files, shared through the same names) with the FLUX Redux template's image prompt:
CLIPVisionLoader (SigLIP so400m/14 @ 384), CLIPVisionEncode, StyleModelLoader (Redux) and StyleModelApply
(multiply, and attn_bias at 0.5).

The vision tower is full size (ComfyUI picks its SigLIP config from the 27-layer layout and the 729 positions:
comfy/clip_vision.py) in fp16 (0.86 GB), the Redux MLP full size (1152 -> 12288 -> 4096) in fp16 (0.13 GB), both
in the released files' key layouts (models.testing_vision). 64 px, 3 steps.
"""
from __future__ import annotations

from pathlib import Path

from . import Case, Family, ModelFile
from . import flux as base
from .graph import Graph, test_image_png

SIGLIP = "fidelity_siglip_so400m_384_random_fp16_s0.safetensors"
REDUX = "fidelity_flux_redux_random_fp16_s1.safetensors"
IMAGE = "fidelity_redux_reference_96.png"


def write_siglip(path: Path) -> None:
    import torch

    from models.clip_vision import ClipVisionConfig
    from models.testing_vision import write_random_clip_vision
    config = ClipVisionConfig(hidden_size=1152, num_layers=27, num_heads=16, intermediate_size=4304,
                              activation="gelu_pytorch_tanh", image_size=384, patch_size=14, projection_dim=None,
                              is_siglip=True)
    write_random_clip_vision(path, config, dtype=torch.float16, seed=0)


def write_redux(path: Path) -> None:
    import torch

    from models.style_model import StyleModelConfig
    from models.testing_vision import write_random_style_model
    write_random_style_model(path, StyleModelConfig("redux", in_width=1152, out_width=4096), seed=1, dtype=torch.float16)


def styled(*, strength: float = 1.0, strength_type: str = "multiply", crop: str = "center", steps: int = 3) -> Graph:
    g = Graph()
    model, clip, vae = base.loaders(g)
    pos = g.add("CLIPTextEncode", text=base.POSITIVE, clip=clip)[0]
    pos = g.add("FluxGuidance", conditioning=pos, guidance=3.5)[0]
    neg = g.add("CLIPTextEncode", text="", clip=clip)[0]
    vision = g.add("CLIPVisionLoader", clip_name=SIGLIP)[0]
    image = g.add("LoadImage", image=IMAGE)[0]
    encoded = g.add("CLIPVisionEncode", clip_vision=vision, image=image, crop=crop)[0]
    style = g.add("StyleModelLoader", style_model_name=REDUX)[0]
    pos = g.add("StyleModelApply", conditioning=pos, style_model=style, clip_vision_output=encoded, strength=strength,
                strength_type=strength_type)[0]
    latent = g.add("EmptySD3LatentImage", width=base.SIZE, height=base.SIZE, batch_size=1)[0]
    samples = g.add("KSampler", model=model, positive=pos, negative=neg, latent_image=latent, seed=1, steps=steps,
                    cfg=1.0, sampler_name="euler", scheduler="simple", denoise=1.0)
    base.decode_save(g, vae, samples[0])
    return g


def cases() -> list[Case]:
    images = {IMAGE: test_image_png(96)}
    return [
        Case("redux_flux/multiply/1.0/center", styled().prompt(), images),
        Case("redux_flux/attn_bias/0.5/none", styled(strength=0.5, strength_type="attn_bias", crop="none").prompt(),
             images),
    ]


FAMILY = Family(name="redux_flux", models=(
    ModelFile("diffusion_models", base.DEV, base.write_dev), ModelFile("text_encoders", base.T5, base.write_t5),
    ModelFile("text_encoders", base.CLIP_L, base.write_clip_l), ModelFile("vae", base.VAE, base.write_vae),
    ModelFile("clip_vision", SIGLIP, write_siglip), ModelFile("style_models", REDUX, write_redux)), cases=cases)
