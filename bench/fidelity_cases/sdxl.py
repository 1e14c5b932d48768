"""SDXL base cases on a full-size random-weight SDXL base checkpoint (fp16, the layout of
`models.testing.write_sdxl_checkpoint`: CLIP-L in HF layout, bigG in OpenCLIP layout, label_emb 2816):
CLIPTextEncodeSDXL (default and non-default size inputs), plain CLIPTextEncode on the SDXL CLIP, and a
base -> refiner-like hand-off with two KSamplerAdvanced on the same model; 64 px, 2-4 steps.
"""
from __future__ import annotations

from pathlib import Path

from . import Case, Family, ModelFile
from .graph import Graph
from .sd15 import NEGATIVE, POSITIVE, decode_save

CHECKPOINT = "fidelity_sdxl_base_random_fp16_s0.safetensors"
SIZE = 64


def write_checkpoint(path: Path) -> None:
    import torch

    from models.testing import SDXL_UNET_CONFIGS, write_sdxl_checkpoint
    write_sdxl_checkpoint(path, SDXL_UNET_CONFIGS["base"], dtype=torch.float16, seed=0)


def encode_sdxl(g: Graph, clip, text: str, *, size: tuple[int, int] = (1024, 1024),
                crop: tuple[int, int] = (0, 0), target: tuple[int, int] = (1024, 1024)):
    return g.add("CLIPTextEncodeSDXL", clip=clip, width=size[0], height=size[1], crop_w=crop[0], crop_h=crop[1],
                 target_width=target[0], target_height=target[1], text_g=text, text_l=text)[0]


def txt2img(*, encoder: str = "sdxl", sampler: str = "euler", scheduler: str = "normal", steps: int = 3,
            cfg: float = 5.0, width: int = SIZE, height: int = SIZE, **sizes) -> Graph:
    g = Graph()
    ckpt = g.add("CheckpointLoaderSimple", ckpt_name=CHECKPOINT)
    if encoder == "sdxl":
        pos, neg = encode_sdxl(g, ckpt[1], POSITIVE, **sizes), encode_sdxl(g, ckpt[1], NEGATIVE, **sizes)
    else:
        pos = g.add("CLIPTextEncode", text=POSITIVE, clip=ckpt[1])[0]
        neg = g.add("CLIPTextEncode", text=NEGATIVE, clip=ckpt[1])[0]
    latent = g.add("EmptyLatentImage", width=width, height=height, batch_size=1)
    samples = g.add("KSampler", model=ckpt[0], positive=pos, negative=neg, latent_image=latent[0], seed=1,
                    steps=steps, cfg=cfg, sampler_name=sampler, scheduler=scheduler, denoise=1.0)
    decode_save(g, ckpt, samples[0])
    return g


def two_pass(*, steps: int = 4, switch: int = 3) -> Graph:
    """Base -> refiner hand-off as SDXL workflows do it, on the base model twice (a second full-size file
    would double the run): the first pass stops at `switch` with the leftover noise, the second (its own
    CLIPTextEncodeSDXL conditioning at another size) adds none and finishes."""
    g = Graph()
    ckpt = g.add("CheckpointLoaderSimple", ckpt_name=CHECKPOINT)
    latent = g.add("EmptyLatentImage", width=SIZE, height=SIZE, batch_size=1)
    pos, neg = encode_sdxl(g, ckpt[1], POSITIVE), encode_sdxl(g, ckpt[1], NEGATIVE)
    one = g.add("KSamplerAdvanced", model=ckpt[0], positive=pos, negative=neg, add_noise="enable", noise_seed=5,
                steps=steps, cfg=5.0, sampler_name="euler", scheduler="normal", latent_image=latent[0],
                start_at_step=0, end_at_step=switch, return_with_leftover_noise="enable")
    pos2 = encode_sdxl(g, ckpt[1], POSITIVE, size=(2048, 2048), target=(1024, 1024))
    neg2 = encode_sdxl(g, ckpt[1], NEGATIVE, size=(2048, 2048), target=(1024, 1024))
    two = g.add("KSamplerAdvanced", model=ckpt[0], positive=pos2, negative=neg2, add_noise="disable", noise_seed=5,
                steps=steps, cfg=5.0, sampler_name="dpmpp_2m", scheduler="normal", latent_image=one[0],
                start_at_step=switch, end_at_step=10000, return_with_leftover_noise="disable")
    decode_save(g, ckpt, two[0])
    return g


def cases() -> list[Case]:
    return [
        Case("sdxl/CLIPTextEncodeSDXL/euler/normal", txt2img().prompt()),
        Case("sdxl/CLIPTextEncode/dpmpp_2m/karras",
             txt2img(encoder="plain", sampler="dpmpp_2m", scheduler="karras").prompt()),
        Case("sdxl/CLIPTextEncode/euler/normal", txt2img(encoder="plain").prompt()),
        Case("sdxl/CLIPTextEncodeSDXL/dpmpp_2m/karras", txt2img(sampler="dpmpp_2m", scheduler="karras").prompt()),
        Case("sdxl/CLIPTextEncodeSDXL/sizes/64x96",
             txt2img(height=96, size=(832, 1216), crop=(16, 32), target=(768, 1024), steps=2).prompt()),
        Case("sdxl/KSamplerAdvanced/base_to_refiner_like", two_pass().prompt()),
    ]


FAMILY = Family(name="sdxl", models=(ModelFile("checkpoints", CHECKPOINT, write_checkpoint),), cases=cases)
