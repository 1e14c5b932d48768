"""SD1.5 cases: every sampler and scheduler, batches, KSamplerAdvanced splits, img2img, both inpainting
styles, weighted / long prompts, embeddings, clip skip, area and mask conditioning, LoRA.

All on a full-size random-weight SD1.5 checkpoint (fp16 file, the LDM layout of `models.testing`), 64 px,
3-6 steps.
"""
from __future__ import annotations

from pathlib import Path

from . import Case, Family, ModelFile
from .graph import Graph, test_image_png

CHECKPOINT = "fidelity_sd15_random_fp16_s0.safetensors"
LORA = "fidelity_sd15_kohya_r32_s1.safetensors"
EMBEDDING = "fidelity_sd15_emb2_s3.safetensors"
SIZE = 64
POSITIVE = "a photograph of a lighthouse on a cliff at dusk, detailed, warm light"
NEGATIVE = "blurry, low quality"
LONG_PROMPT = ", ".join(["a lighthouse on a rocky cliff above a stormy sea at dusk with warm light",
                         "seagulls circling the lamp", "waves breaking on black rocks", "a narrow path",
                         "an old keeper's cottage with a red door", "clouds lit orange and violet",
                         "a fishing boat far away", "oil painting, highly detailed, dramatic lighting"] * 2)
IMAGE = "fidelity_pattern_64.png"
# Samplers Plexus offers (ComfyUI 0.8.0's list) that 0.3.64 does not have: no peer image to compare with.
PEER_LACKS = frozenset({"exp_heun_2_x0", "exp_heun_2_x0_sde"})
IMAGE_WITH_MASK = "fidelity_pattern_mask_64.png"


def write_checkpoint(path: Path) -> None:
    import torch

    from models.testing import CheckpointSpec, sd15_unet_config, write_random_checkpoint
    from models.vae import VAEConfig
    write_random_checkpoint(path, CheckpointSpec(family="sd1", unet=sd15_unet_config(), vae=VAEConfig(),
                                                 dtype=torch.float16, seed=0))


def write_lora(path: Path) -> None:
    from lora import write_kohya_lora   # bench/lora.py
    write_kohya_lora(path)


def write_embedding(path: Path) -> None:
    """A two-vector textual inversion (A1111 safetensors layout: `emb_params` [2, 768])."""
    import torch
    from safetensors.torch import save_file
    generator = torch.Generator().manual_seed(3)
    save_file({"emb_params": torch.randn((2, 768), generator=generator) * 0.02}, str(path))


def inputs() -> dict[str, bytes]:
    return {IMAGE: test_image_png(SIZE), IMAGE_WITH_MASK: test_image_png(SIZE, with_alpha_mask=True)}


def sample_nodes(g: Graph, *, positive: str = POSITIVE, negative: str = NEGATIVE, clip_skip: int | None = None,
                 lora: tuple[float, float] | None = None, checkpoint: str = CHECKPOINT):
    """Checkpoint (+ LoRA, + clip skip) and the two prompts: (loader, model link, positive, negative)."""
    ckpt = g.add("CheckpointLoaderSimple", ckpt_name=checkpoint)
    model, clip = ckpt[0], ckpt[1]
    if lora is not None:
        loaded = g.add("LoraLoader", model=model, clip=clip, lora_name=LORA, strength_model=lora[0],
                       strength_clip=lora[1])
        model, clip = loaded[0], loaded[1]
    if clip_skip is not None:
        clip = g.add("CLIPSetLastLayer", clip=clip, stop_at_clip_layer=clip_skip)[0]
    pos = g.add("CLIPTextEncode", text=positive, clip=clip)
    neg = g.add("CLIPTextEncode", text=negative, clip=clip)
    return ckpt, model, pos[0], neg[0]


def ksampler(g: Graph, model, positive, negative, latent, *, sampler: str = "euler", scheduler: str = "normal",
             steps: int = 4, cfg: float = 5.0, seed: int = 1, denoise: float = 1.0):
    return g.add("KSampler", model=model, positive=positive, negative=negative, latent_image=latent, seed=seed,
                 steps=steps, cfg=cfg, sampler_name=sampler, scheduler=scheduler, denoise=denoise)


def decode_save(g: Graph, ckpt, samples, prefix: str = "fidelity") -> None:
    image = g.add("VAEDecode", samples=samples, vae=ckpt[2])
    g.add("SaveImage", images=image[0], filename_prefix=prefix)


def txt2img(*, batch: int = 1, pick: int | None = None, size: int = SIZE, **options) -> Graph:
    sampling = {k: options.pop(k) for k in ("sampler", "scheduler", "steps", "cfg", "seed") if k in options}
    g = Graph()
    ckpt, model, pos, neg = sample_nodes(g, **options)
    latent = g.add("EmptyLatentImage", width=size, height=size, batch_size=batch)
    samples = ksampler(g, model, pos, neg, latent[0], **sampling)[0]
    if pick is not None:
        samples = g.add("LatentFromBatch", samples=samples, batch_index=pick, length=1)[0]
    decode_save(g, ckpt, samples)
    return g


def advanced_split(first: str, second: str, *, steps: int = 6, switch: int = 3, scheduler: str = "normal") -> Graph:
    """Two KSamplerAdvanced passes: the first adds noise, stops at `switch` and returns the leftover noise;
    the second adds none and finishes with another sampler."""
    g = Graph()
    ckpt, model, pos, neg = sample_nodes(g)
    latent = g.add("EmptyLatentImage", width=SIZE, height=SIZE, batch_size=1)
    common = dict(model=model, positive=pos, negative=neg, noise_seed=5, steps=steps, cfg=5.0, scheduler=scheduler)
    one = g.add("KSamplerAdvanced", add_noise="enable", sampler_name=first, latent_image=latent[0], start_at_step=0,
                end_at_step=switch, return_with_leftover_noise="enable", **common)
    two = g.add("KSamplerAdvanced", add_noise="disable", sampler_name=second, latent_image=one[0],
                start_at_step=switch, end_at_step=10000, return_with_leftover_noise="disable", **common)
    decode_save(g, ckpt, two[0])
    return g


def img2img(*, sampler: str = "euler", scheduler: str = "normal", denoise: float = 0.6, steps: int = 5) -> Graph:
    g = Graph()
    ckpt, model, pos, neg = sample_nodes(g)
    image = g.add("LoadImage", image=IMAGE)
    latent = g.add("VAEEncode", pixels=image[0], vae=ckpt[2])
    decode_save(g, ckpt, ksampler(g, model, pos, neg, latent[0], sampler=sampler, scheduler=scheduler,
                                  denoise=denoise, steps=steps)[0])
    return g


def inpaint(style: str, *, sampler: str = "euler", scheduler: str = "normal", denoise: float = 1.0,
            steps: int = 5) -> Graph:
    """`style` "encode": VAEEncodeForInpaint (grow_mask_by 6); "noise_mask": VAEEncode + SetLatentNoiseMask."""
    g = Graph()
    ckpt, model, pos, neg = sample_nodes(g)
    image = g.add("LoadImage", image=IMAGE_WITH_MASK)
    if style == "encode":
        latent = g.add("VAEEncodeForInpaint", pixels=image[0], vae=ckpt[2], mask=image[1], grow_mask_by=6)
    else:
        encoded = g.add("VAEEncode", pixels=image[0], vae=ckpt[2])
        latent = g.add("SetLatentNoiseMask", samples=encoded[0], mask=image[1])
    decode_save(g, ckpt, ksampler(g, model, pos, neg, latent[0], sampler=sampler, scheduler=scheduler,
                                  denoise=denoise, steps=steps)[0])
    return g


def area(kind: str, size: int = 96) -> Graph:
    """A global prompt combined with a second prompt limited to part of the image (96 px: areas are at
    least 64 px wide; `area_strength` also reaches past the image edge, so the area is clamped)."""
    g = Graph()
    ckpt, model, pos, neg = sample_nodes(g)
    clip = ckpt[1]
    other = g.add("CLIPTextEncode", text="a red sailing boat on the water", clip=clip)[0]
    if kind == "area":
        limited = g.add("ConditioningSetArea", conditioning=other, width=64, height=72, x=24, y=16, strength=1.0)[0]
    elif kind == "area_strength":
        limited = g.add("ConditioningSetArea", conditioning=other, width=64, height=64, x=48, y=40, strength=1.6)[0]
    elif kind == "area_percentage":
        limited = g.add("ConditioningSetAreaPercentage", conditioning=other, width=0.5, height=0.75, x=0.25,
                        y=0.125, strength=1.0)[0]
    else:  # mask (kind = "mask" / "mask_bounds")
        image = g.add("LoadImage", image=IMAGE_WITH_MASK)
        limited = g.add("ConditioningSetMask", conditioning=other, mask=image[1], strength=1.0,
                        set_cond_area="mask bounds" if kind == "mask_bounds" else "default")[0]
    combined = g.add("ConditioningCombine", conditioning_1=pos, conditioning_2=limited)[0]
    latent = g.add("EmptyLatentImage", width=size, height=size, batch_size=1)
    decode_save(g, ckpt, ksampler(g, model, combined, neg, latent[0], steps=4)[0])
    return g


def cases() -> list[Case]:
    from sampling.samplers import SAMPLERS
    from sampling.schedules import SCHEDULERS
    image_inputs = inputs()
    out: list[Case] = []

    def case(name: str, graph: Graph, note: str = "", uses_images: bool = False) -> None:
        out.append(Case(f"sd15/{name}", graph.prompt(), image_inputs if uses_images else {}, note))

    for sampler in (s for s in SAMPLERS if s not in PEER_LACKS):
        case(f"sampler/{sampler}", txt2img(sampler=sampler, scheduler="normal", steps=4))
    for scheduler in SCHEDULERS:
        case(f"scheduler/{scheduler}", txt2img(sampler="euler", scheduler=scheduler, steps=4))
    case("scheduler/karras+dpmpp_2m", txt2img(sampler="dpmpp_2m", scheduler="karras", steps=5))
    case("scheduler/exponential+euler_ancestral", txt2img(sampler="euler_ancestral", scheduler="exponential"))
    for sampler in ("euler", "euler_ancestral", "dpmpp_2m_sde", "ddpm"):
        case(f"batch2/{sampler}", txt2img(sampler=sampler, batch=2, steps=4))
        case(f"batch2/{sampler}/LatentFromBatch1", txt2img(sampler=sampler, batch=2, pick=1, steps=4))
    case("advanced/euler_ancestral>dpmpp_2m", advanced_split("euler_ancestral", "dpmpp_2m"))
    case("advanced/euler>heun", advanced_split("euler", "heun"))
    case("advanced/sa_solver>euler", advanced_split("sa_solver", "euler"),
         note="ComfyUI 0.3.64's sa_solver, ending above sigma 0 (leftover noise), returns its state one step "
              "before the last sigma; Plexus returns the prediction at the last sigma (docs/fidelity.md)")
    case("advanced/dpmpp_2m_sde>euler_ancestral/karras",
         advanced_split("dpmpp_2m_sde", "euler_ancestral", scheduler="karras"))
    case("img2img/euler/0.6", img2img(), uses_images=True)
    case("img2img/dpmpp_2m/karras/0.5", img2img(sampler="dpmpp_2m", scheduler="karras", denoise=0.5),
         uses_images=True)
    case("img2img/euler_ancestral/0.7", img2img(sampler="euler_ancestral", denoise=0.7), uses_images=True)
    case("inpaint/VAEEncodeForInpaint/euler", inpaint("encode"), uses_images=True)
    case("inpaint/VAEEncodeForInpaint/ddim", inpaint("encode", sampler="ddim", scheduler="ddim_uniform"),
         uses_images=True)
    case("inpaint/SetLatentNoiseMask/euler", inpaint("noise_mask"), uses_images=True)
    case("inpaint/SetLatentNoiseMask/ddim", inpaint("noise_mask", sampler="ddim", scheduler="ddim_uniform"),
         uses_images=True)
    case("inpaint/SetLatentNoiseMask/euler_ancestral/0.8",
         inpaint("noise_mask", sampler="euler_ancestral", denoise=0.8), uses_images=True)
    case("prompt/weighted", txt2img(positive="a (photograph:1.3) of a ((lighthouse)) on a [cliff], (dusk:0.7)"))
    case("prompt/escaped", txt2img(positive=r"a \(lighthouse\) (on a cliff:1.2) at dusk"))
    case("prompt/long", txt2img(positive=LONG_PROMPT))
    case("prompt/embedding", txt2img(positive=f"a photograph of embedding:{EMBEDDING.rsplit('.', 1)[0]} at dusk"))
    case("prompt/embedding_weighted",
         txt2img(positive=f"a photograph of (embedding:{EMBEDDING.rsplit('.', 1)[0]}:1.2) at dusk"))
    case("prompt/empty_negative", txt2img(negative=""))
    case("clip_skip/-1", txt2img(clip_skip=-1))
    case("clip_skip/-2", txt2img(clip_skip=-2))
    case("clip_skip/-3/long", txt2img(clip_skip=-3, positive=LONG_PROMPT))
    for kind in ("area", "area_strength", "area_percentage"):
        case(f"conditioning/{kind}", area(kind))
    case("conditioning/mask", area("mask"), uses_images=True)
    case("conditioning/mask_bounds", area("mask_bounds"), uses_images=True)
    case("lora/1.0", txt2img(lora=(1.0, 1.0)))
    case("lora/0.7+clip0.4", txt2img(lora=(0.7, 0.4)))
    case("size/96", txt2img(size=96))
    return out


FAMILY = Family(
    name="sd15",
    models=(ModelFile("checkpoints", CHECKPOINT, write_checkpoint), ModelFile("loras", LORA, write_lora),
            ModelFile("embeddings", EMBEDDING, write_embedding)),
    cases=cases,
)
