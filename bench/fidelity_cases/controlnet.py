"""ControlNet and T2I-Adapter cases on the full-size random SD1.5 checkpoint of the sd15 family: a full-size
random SD1.5 ControlNet in lllyasviel's layout (`control_model.*`) and the same weights in diffusers' layout,
a full-size T2I-Adapter (TencentARC layout, 1-channel hint); ControlNetApplyAdvanced with strength and
windows, two stacked, the deprecated ControlNetApply. 64 px, 4 steps.
"""
from __future__ import annotations

from pathlib import Path

from . import Case, Family, ModelFile
from .graph import Graph, test_image_png
from .sd15 import CHECKPOINT, SIZE, decode_save, ksampler, sample_nodes, write_checkpoint

CONTROLNET = "fidelity_cn_sd15_ldm_fp16_s0.safetensors"
CONTROLNET_DIFFUSERS = "fidelity_cn_sd15_diffusers_fp16_s0.safetensors"
CONTROLNET_OTHER = "fidelity_cn_sd15_bare_fp16_s1.safetensors"
T2I = "fidelity_t2i_sd15_full_fp16_s0.safetensors"
HINT = "fidelity_pattern_64.png"


def _controlnet_writer(layout: str, seed: int):
    def write(path: Path) -> None:
        import torch

        from models.controlnet import ControlNetConfig
        from models.testing import sd15_unet_config, write_random_controlnet
        write_random_controlnet(path, ControlNetConfig(unet=sd15_unet_config()), layout=layout,
                                dtype=torch.float16, seed=seed)
    return write


def write_t2i(path: Path) -> None:
    import torch

    from models.t2i_adapter import T2IAdapterConfig
    from models.testing import write_random_t2i_adapter
    write_random_t2i_adapter(path, T2IAdapterConfig(in_channels=64), dtype=torch.float16, seed=0)


def controlled(controls: list[tuple[str, float, float, float]], *, old_apply: bool = False) -> Graph:
    g = Graph()
    ckpt, model, pos, neg = sample_nodes(g)
    hint = g.add("LoadImage", image=HINT)
    for name, strength, start, end in controls:
        net = g.add("ControlNetLoader", control_net_name=name)
        if old_apply:
            pos = g.add("ControlNetApply", conditioning=pos, control_net=net[0], image=hint[0], strength=strength)[0]
            continue
        applied = g.add("ControlNetApplyAdvanced", positive=pos, negative=neg, control_net=net[0], image=hint[0],
                        strength=strength, start_percent=start, end_percent=end)
        pos, neg = applied[0], applied[1]
    latent = g.add("EmptyLatentImage", width=SIZE, height=SIZE, batch_size=1)
    decode_save(g, ckpt, ksampler(g, model, pos, neg, latent[0], steps=4)[0])
    return g


def cases() -> list[Case]:
    inputs = {HINT: test_image_png(SIZE)}
    table = {
        "controlnet/ldm/full": controlled([(CONTROLNET, 1.0, 0.0, 1.0)]),
        "controlnet/diffusers/strength_window": controlled([(CONTROLNET_DIFFUSERS, 0.6, 0.2, 0.8)]),
        "controlnet/stacked": controlled([(CONTROLNET, 0.8, 0.0, 1.0), (CONTROLNET_OTHER, 0.5, 0.0, 0.6)]),
        "controlnet/apply_old": controlled([(CONTROLNET, 0.9, 0.0, 1.0)], old_apply=True),
        "t2i/full": controlled([(T2I, 1.0, 0.0, 1.0)]),
    }
    return [Case(name, g.prompt(), inputs) for name, g in table.items()]


FAMILY = Family(
    name="controlnet",
    models=(ModelFile("checkpoints", CHECKPOINT, write_checkpoint),
            ModelFile("controlnet", CONTROLNET, _controlnet_writer("control_model", 0)),
            ModelFile("controlnet", CONTROLNET_DIFFUSERS, _controlnet_writer("diffusers", 0)),
            ModelFile("controlnet", CONTROLNET_OTHER, _controlnet_writer("bare", 1)),
            ModelFile("controlnet", T2I, write_t2i)),
    cases=cases,
)
