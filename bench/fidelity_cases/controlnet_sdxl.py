"""SDXL ControlNet cases on the full-size random SDXL base checkpoint of the sdxl family: a full-size random
SDXL ControlNet in diffusers' layout (how SDXL ControlNets are published); a "mid" SDXL ControlNet (the
diffusers controlnet-*-sdxl-1.0-mid shape: one transformer layer in each level-2 block and the middle; ComfyUI
reads diffusers-layout SDXL nets only in its listed shapes) in lllyasviel's `control_model.*` layout and the
same weights in diffusers' layout; a union ControlNet (xinsir ControlNet++ layout:
`task_embedding`, the hint-fusion transformer) with SetUnionControlNetType; a Stability control-LoRA
(`lora_controlnet`, rank 8) on the base model; and two of them stacked. 64 px, 3 steps, CLIPTextEncodeSDXL.
"""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from . import Case, Family, ModelFile
from .graph import Graph, test_image_png
from .sd15 import NEGATIVE, POSITIVE, decode_save
from .sdxl import CHECKPOINT, SIZE, encode_sdxl, write_checkpoint

CN_FULL = "fidelity_cn_sdxl_diffusers_fp16_s0.safetensors"
CN_MID = "fidelity_cn_sdxl_mid_ldm_fp16_s1.safetensors"
CN_MID_DIFFUSERS = "fidelity_cn_sdxl_mid_diffusers_fp16_s1.safetensors"
CN_UNION = "fidelity_cn_sdxl_union_mid_fp16_s2.safetensors"
CONTROL_LORA = "fidelity_control_lora_sdxl_r8_fp16_s3.safetensors"
HINT = "fidelity_pattern_64.png"


def _unet(mid: bool):
    from models.testing import SDXL_UNET_CONFIGS
    base = SDXL_UNET_CONFIGS["base"]
    if not mid:
        return base
    return replace(base, transformer_depth=(0, 0, 0, 0, 1, 1), transformer_depth_middle=1)


def _controlnet_writer(layout: str, seed: int, *, mid: bool, union: int = 0):
    def write(path: Path) -> None:
        import torch

        from models.controlnet import ControlNetConfig
        from models.testing import write_random_controlnet
        write_random_controlnet(path, ControlNetConfig(unet=_unet(mid), union_control_types=union), layout=layout,
                                dtype=torch.float16, seed=seed)
    return write


def write_control_lora(path: Path) -> None:
    import torch

    from models.testing import write_random_control_lora
    write_random_control_lora(path, _unet(False), rank=8, dtype=torch.float16, seed=3)


def controlled(controls: list[tuple], steps: int = 3) -> Graph:
    """controls: (file, strength, start, end[, union type])."""
    g = Graph()
    ckpt = g.add("CheckpointLoaderSimple", ckpt_name=CHECKPOINT)
    pos, neg = encode_sdxl(g, ckpt[1], POSITIVE), encode_sdxl(g, ckpt[1], NEGATIVE)
    hint = g.add("LoadImage", image=HINT)
    for name, strength, start, end, *union in controls:
        net = g.add("ControlNetLoader", control_net_name=name)[0]
        if union:
            net = g.add("SetUnionControlNetType", control_net=net, type=union[0])[0]
        applied = g.add("ControlNetApplyAdvanced", positive=pos, negative=neg, control_net=net, image=hint[0],
                        strength=strength, start_percent=start, end_percent=end)
        pos, neg = applied[0], applied[1]
    latent = g.add("EmptyLatentImage", width=SIZE, height=SIZE, batch_size=1)
    samples = g.add("KSampler", model=ckpt[0], positive=pos, negative=neg, latent_image=latent[0], seed=3,
                    steps=steps, cfg=5.0, sampler_name="euler", scheduler="normal", denoise=1.0)
    decode_save(g, ckpt, samples[0])
    return g


def cases() -> list[Case]:
    inputs = {HINT: test_image_png(SIZE)}
    table = {
        "controlnet_sdxl/diffusers/full": controlled([(CN_FULL, 1.0, 0.0, 1.0)]),
        "controlnet_sdxl/control_model/mid_window": controlled([(CN_MID, 0.7, 0.1, 0.8)]),
        "controlnet_sdxl/diffusers/mid_window": controlled([(CN_MID_DIFFUSERS, 0.7, 0.1, 0.8)]),
        "controlnet_sdxl/union/depth": controlled([(CN_UNION, 0.9, 0.0, 1.0, "depth")]),
        "controlnet_sdxl/union/auto": controlled([(CN_UNION, 0.9, 0.0, 1.0, "auto")]),
        "controlnet_sdxl/control_lora": controlled([(CONTROL_LORA, 1.0, 0.0, 1.0)]),
        "controlnet_sdxl/stacked": controlled([(CN_FULL, 0.8, 0.0, 1.0), (CONTROL_LORA, 0.6, 0.0, 0.7)]),
    }
    return [Case(name, g.prompt(), inputs) for name, g in table.items()]


FAMILY = Family(
    name="controlnet_sdxl",
    models=(ModelFile("checkpoints", CHECKPOINT, write_checkpoint),
            ModelFile("controlnet", CN_FULL, _controlnet_writer("diffusers", 0, mid=False)),
            ModelFile("controlnet", CN_MID, _controlnet_writer("control_model", 1, mid=True)),
            ModelFile("controlnet", CN_MID_DIFFUSERS, _controlnet_writer("diffusers", 1, mid=True)),
            ModelFile("controlnet", CN_UNION, _controlnet_writer("diffusers", 2, mid=True, union=8)),
            ModelFile("controlnet", CONTROL_LORA, write_control_lora)),
    cases=cases,
)
