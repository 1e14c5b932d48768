"""SD2.1-v cases (v-prediction, OpenCLIP-H text tower whose default output is the penultimate layer), on a
full-size random-weight SD2.1 checkpoint (fp16) whose `output_blocks.11.1.transformer_blocks.0.norm1.bias`
is drawn wide enough (std 0.2) that both ComfyUI and Plexus read it as v-prediction; 64 px, 4-5 steps.
"""
from __future__ import annotations

from pathlib import Path

from . import Case, Family, ModelFile
from .sd15 import decode_save, ksampler, sample_nodes, txt2img
from .graph import Graph

CHECKPOINT = "fidelity_sd21v_random_fp16_s0.safetensors"
V_KEY = "model.diffusion_model.output_blocks.11.1.transformer_blocks.0.norm1.bias"


def write_checkpoint(path: Path) -> None:
    import torch

    from models.testing import CheckpointSpec, write_random_checkpoint
    from models.unet import UNetConfig
    from models.vae import VAEConfig
    unet = UNetConfig(context_dim=1024, num_heads=-1, head_dim=64, use_linear_in_transformer=True,
                      upcast_attention=True)
    write_random_checkpoint(path, CheckpointSpec(family="sd2", unet=unet, vae=VAEConfig(), dtype=torch.float16,
                                                 seed=0, std_overrides={V_KEY: 0.2}))


def cases() -> list[Case]:
    out: list[Case] = []

    def case(name: str, graph: Graph) -> None:
        out.append(Case(f"sd21v/{name}", graph.prompt()))

    case("euler/normal", txt2img(checkpoint=CHECKPOINT, sampler="euler", steps=4))
    case("dpmpp_2m/karras", txt2img(checkpoint=CHECKPOINT, sampler="dpmpp_2m", scheduler="karras", steps=5))
    case("euler_ancestral/normal", txt2img(checkpoint=CHECKPOINT, sampler="euler_ancestral", steps=4))
    case("ddim/ddim_uniform", txt2img(checkpoint=CHECKPOINT, sampler="ddim", scheduler="ddim_uniform", steps=4))
    case("uni_pc/simple", txt2img(checkpoint=CHECKPOINT, sampler="uni_pc", scheduler="simple", steps=4))
    case("clip_skip/-1", txt2img(checkpoint=CHECKPOINT, clip_skip=-1))
    case("clip_skip/-2", txt2img(checkpoint=CHECKPOINT, clip_skip=-2))
    case("batch2/euler_ancestral/LatentFromBatch1",
         txt2img(checkpoint=CHECKPOINT, sampler="euler_ancestral", batch=2, pick=1))
    g = Graph()
    ckpt, model, pos, neg = sample_nodes(g, checkpoint=CHECKPOINT)
    latent = g.add("EmptyLatentImage", width=64, height=96, batch_size=1)
    decode_save(g, ckpt, ksampler(g, model, pos, neg, latent[0], sampler="heun", steps=3)[0])
    case("heun/64x96", g)
    return out


FAMILY = Family(name="sd21v", models=(ModelFile("checkpoints", CHECKPOINT, write_checkpoint),), cases=cases)
