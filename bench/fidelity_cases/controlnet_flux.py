"""FLUX ControlNet cases: the FLUX [dev] txt2img graph of fidelity_cases/flux.py (its reduced-depth transformer,
full T5-XXL fp8, CLIP-L and ae files, shared through the same names) with a FLUX ControlNet applied through
ControlNetLoader + ControlNetApplyAdvanced (its `vae` input for the latent-hint nets): InstantX's layout
(diffusers FluxControlNetModel names), a Union-Pro net with SetUnionControlNetType, alimama's inpainting layout
through ControlNetInpaintingAliMamaApply, and XLabs' (BFL names, the hint image itself).

The ControlNets are full width (ComfyUI's detection fixes hidden_size 3072 and the text / pooled widths) at
reduced depth, written by models.testing.write_random_flux_controlnet in bf16: InstantX / Union-Pro /
inpainting 1 double + 1 single block (about 0.9 GB each), XLabs 1 double block (0.6 GB). 64 px, 3 steps.
"""
from __future__ import annotations

from pathlib import Path

from . import Case, Family, ModelFile
from . import flux as base
from .graph import Graph, test_image_png

INSTANTX = "fidelity_flux_cn_instantx_d1s1_random_bf16_s0.safetensors"
UNION = "fidelity_flux_cn_union_pro_d1s1_random_bf16_s1.safetensors"
INPAINT = "fidelity_flux_cn_inpaint_d1s1_random_bf16_s2.safetensors"
XLABS = "fidelity_flux_cn_xlabs_d1_random_bf16_s3.safetensors"
HINT = "fidelity_flux_cn_hint_64.png"
HINT_WITH_MASK = "fidelity_flux_cn_hint_mask_64.png"


def _writer(layout: str, seed: int, **extra):
    def write(path: Path) -> None:
        import dataclasses

        import torch

        from models.flux import FluxConfig
        from models.testing import tiny_flux_controlnet_config, write_random_flux_controlnet
        config = tiny_flux_controlnet_config(layout=layout, **extra)
        full = FluxConfig(depth=config.flux.depth, depth_single_blocks=config.flux.depth_single_blocks)
        write_random_flux_controlnet(path, dataclasses.replace(config, flux=full), layout=layout, dtype=torch.bfloat16,
                                     seed=seed)
    return write


def controlled(net: str, *, strength: float = 0.8, union_type: str | None = None, inpaint: bool = False,
               window: tuple[float, float] = (0.0, 1.0), steps: int = 3) -> Graph:
    g = Graph()
    model, clip, vae = base.loaders(g)
    pos = g.add("CLIPTextEncode", text=base.POSITIVE, clip=clip)[0]
    pos = g.add("FluxGuidance", conditioning=pos, guidance=3.5)[0]
    neg = g.add("CLIPTextEncode", text="", clip=clip)[0]
    image = g.add("LoadImage", image=HINT_WITH_MASK if inpaint else HINT)
    control = g.add("ControlNetLoader", control_net_name=net)[0]
    if union_type is not None:
        control = g.add("SetUnionControlNetType", control_net=control, type=union_type)[0]
    inputs = dict(positive=pos, negative=neg, control_net=control, image=image[0], strength=strength,
                  start_percent=window[0], end_percent=window[1], vae=vae)
    if inpaint:
        applied = g.add("ControlNetInpaintingAliMamaApply", mask=image[1], **inputs)
    else:
        applied = g.add("ControlNetApplyAdvanced", **inputs)
    latent = g.add("EmptySD3LatentImage", width=base.SIZE, height=base.SIZE, batch_size=1)[0]
    samples = g.add("KSampler", model=model, positive=applied[0], negative=applied[1], latent_image=latent, seed=1,
                    steps=steps, cfg=1.0, sampler_name="euler", scheduler="simple", denoise=1.0)
    base.decode_save(g, vae, samples[0])
    return g


def cases() -> list[Case]:
    images = {HINT: test_image_png(base.SIZE), HINT_WITH_MASK: test_image_png(base.SIZE, with_alpha_mask=True)}
    return [
        Case("controlnet_flux/instantx/0.8", controlled(INSTANTX).prompt(), images),
        Case("controlnet_flux/instantx/window_0_0.5", controlled(INSTANTX, strength=1.0, window=(0.0, 0.5)).prompt(),
             images),
        Case("controlnet_flux/union_pro/depth", controlled(UNION, union_type="depth").prompt(), images),
        Case("controlnet_flux/inpaint/AliMama", controlled(INPAINT, inpaint=True).prompt(), images),
        Case("controlnet_flux/xlabs/0.8", controlled(XLABS).prompt(), images),
    ]


FAMILY = Family(name="controlnet_flux", models=(
    ModelFile("diffusion_models", base.DEV, base.write_dev), ModelFile("text_encoders", base.T5, base.write_t5),
    ModelFile("text_encoders", base.CLIP_L, base.write_clip_l), ModelFile("vae", base.VAE, base.write_vae),
    ModelFile("controlnet", INSTANTX, _writer("diffusers", 0, double=1, single=1)),
    ModelFile("controlnet", UNION, _writer("diffusers", 1, double=1, single=1, union_modes=10)),
    ModelFile("controlnet", INPAINT, _writer("diffusers", 2, double=1, single=1, hint_channels=17)),
    ModelFile("controlnet", XLABS, _writer("xlabs", 3, double=1, single=0))), cases=cases)
