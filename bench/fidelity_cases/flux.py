"""FLUX.1 cases on random-weight files in the real layouts, loaded as FLUX workflows load them (UNETLoader,
DualCLIPLoader type flux, VAELoader): the FLUX.1 templates' txt2img (CLIPTextEncode + FluxGuidance +
KSampler, and SamplerCustomAdvanced with BasicGuider / ModelSamplingFlux), CLIPTextEncodeFlux,
FluxDisableGuidance, cfg > 1 with a negative prompt, img2img, a kohya-named FLUX LoRA, Kontext reference
latents (one, two with each FluxKontextMultiReferenceLatentMethod, FluxKontextImageScale), [schnell] in
ComfyUI's scaled fp8 form, Fill (InpaintModelConditioning) and Depth / Canny (InstructPixToPixConditioning).

The transformers are full width (ComfyUI's detection fixes hidden_size 3072, 24 heads, context 4096 and
counts the blocks from the keys: comfy/model_detection.py), at reduced depth: [dev] 1 double + 2 single
blocks (bf16, 1.3 GB), [schnell] 1 + 1 (scaled fp8, 0.5 GB), Fill and Depth 1 + 1 (bf16, 1.0 GB each). The
text encoders are full size, because ComfyUI builds T5-XXL from a fixed 24-layer config and tells it apart
by `encoder.block.23.*`: T5-XXL in fp8 e4m3fn (4.8 GB, computed per layer in fp32 on both sides) and CLIP-L
in fp16. The VAE is the full-size FLUX ae layout (16 channels, no quant convs) in fp16. About 9 GB on disk
in all: delete the `fidelity_flux*` and `fidelity_t5xxl*` files from --models-dir when done. 64 px, 3-5
steps.
"""
from __future__ import annotations

from pathlib import Path

from . import Case, Family, ModelFile
from .graph import Graph, test_image_png

DEV = "fidelity_flux_dev_d1s2_random_bf16_s0.safetensors"
SCHNELL = "fidelity_flux_schnell_d1s1_random_scaledfp8_s1.safetensors"
FILL = "fidelity_flux_fill_d1s1_random_bf16_s3.safetensors"
DEPTH = "fidelity_flux_depth_d1s1_random_bf16_s4.safetensors"
T5 = "fidelity_t5xxl_random_fp8_e4m3fn_s0.safetensors"
CLIP_L = "fidelity_flux_clip_l_random_fp16_s0.safetensors"
VAE = "fidelity_flux_ae_random_fp16_s0.safetensors"
LORA = "fidelity_flux_kohya_r8_s2.safetensors"
DEV_FULL_FP8 = "flux1_dev_full_random_fp8_e4m3fn_s0.safetensors"    # bench/compare.py --family flux --full
IMAGE = "fidelity_flux_pattern_64.png"
IMAGE_WITH_MASK = "fidelity_flux_pattern_mask_64.png"
SIZE = 64
POSITIVE = "a photograph of a lighthouse on a cliff at dusk, detailed, warm light"
NEGATIVE = "blurry, low quality"


def write_dev(path: Path) -> None:
    import torch

    from models.flux import FluxConfig
    from models.testing import write_random_flux
    write_random_flux(path, FluxConfig(depth=1, depth_single_blocks=2), dtype=torch.bfloat16, seed=0)


def write_dev_full_fp8(path: Path) -> None:
    """FLUX.1 [dev] at full depth (19 double + 38 single blocks, 11.9 B parameters) with every tensor in
    fp8 e4m3fn, as the published flux1-dev-fp8 files hold it: 11.9 GB, streamed one tensor at a time."""
    import torch

    from models.flux import FluxConfig
    from models.testing import write_random_flux
    write_random_flux(path, FluxConfig(), dtype=torch.float8_e4m3fn, seed=0)


def write_schnell(path: Path) -> None:
    from models.flux import FluxConfig
    from models.testing import write_random_flux
    write_random_flux(path, FluxConfig(depth=1, depth_single_blocks=1, guidance_embed=False), scaled_fp8=True,
                      seed=1)


def write_fill(path: Path) -> None:
    """FLUX.1 Fill's layout: img_in 384 wide (noisy latent 16 + masked-image latent 16 + mask 64, x 2 x 2)."""
    import torch

    from models.flux import FluxConfig
    from models.testing import write_random_flux
    write_random_flux(path, FluxConfig(in_channels=384, depth=1, depth_single_blocks=1), dtype=torch.bfloat16,
                      seed=3)


def write_depth(path: Path) -> None:
    """FLUX.1 Depth / Canny's layout: img_in 128 wide (noisy latent 16 + control latent 16, x 2 x 2)."""
    import torch

    from models.flux import FluxConfig
    from models.testing import write_random_flux
    write_random_flux(path, FluxConfig(in_channels=128, depth=1, depth_single_blocks=1), dtype=torch.bfloat16,
                      seed=4)


def write_t5(path: Path) -> None:
    import torch

    from models.testing import write_random_text_encoder
    from models.text.t5 import T5Config
    write_random_text_encoder(path, "t5xxl", T5Config(), torch.float8_e4m3fn, seed=0)


def write_clip_l(path: Path) -> None:
    import torch

    from models.testing import text_encoder_config, write_random_text_encoder
    write_random_text_encoder(path, "clip_l", text_encoder_config("sd1"), torch.float16, seed=0)


def write_vae(path: Path) -> None:
    import torch

    from models.testing import write_random_vae
    from models.vae import VAEConfig
    write_random_vae(path, VAEConfig(z_channels=16, embed_dim=16, has_quant_conv=False), torch.float16, seed=0)


def write_lora(path: Path) -> None:
    """A kohya-named rank-8 LoRA on the [dev] file's first double block (image qkv, text MLP) and its
    second single block's linear2, with alphas."""
    import torch
    from safetensors.torch import save_file
    g = torch.Generator().manual_seed(2)
    targets = {"double_blocks_0_img_attn_qkv": (3072, 9216), "double_blocks_0_txt_mlp_0": (3072, 12288),
               "single_blocks_1_linear2": (3072 + 12288, 3072)}
    tensors = {}
    for name, (fan_in, fan_out) in targets.items():
        tensors[f"lora_unet_{name}.lora_down.weight"] = torch.randn(8, fan_in, generator=g) / fan_in ** 0.5
        tensors[f"lora_unet_{name}.lora_up.weight"] = torch.randn(fan_out, 8, generator=g) * 0.05
        tensors[f"lora_unet_{name}.alpha"] = torch.tensor(4.0)
    save_file({k: v.to(torch.float16) for k, v in tensors.items()}, str(path))


def loaders(g: Graph, unet: str = DEV, lora: float | None = None):
    model = g.add("UNETLoader", unet_name=unet, weight_dtype="default")[0]
    if lora is not None:
        model = g.add("LoraLoaderModelOnly", model=model, lora_name=LORA, strength_model=lora)[0]
    clip = g.add("DualCLIPLoader", clip_name1=T5, clip_name2=CLIP_L, type="flux")[0]
    vae = g.add("VAELoader", vae_name=VAE)[0]
    return model, clip, vae


def decode_save(g: Graph, vae, samples) -> None:
    image = g.add("VAEDecode", samples=samples, vae=vae)
    g.add("SaveImage", images=image[0], filename_prefix="fidelity_flux")


def txt2img(*, unet: str = DEV, encoder: str = "plain", guidance: float | None = 3.5, sampler: str = "euler",
            scheduler: str = "simple", steps: int = 4, cfg: float = 1.0, shift: bool = False,
            lora: float | None = None, denoise: float = 1.0) -> Graph:
    """The FLUX dev template's KSampler graph; `encoder` "flux": CLIPTextEncodeFlux, "plain": CLIPTextEncode
    then FluxGuidance (`guidance` None: FluxDisableGuidance). `denoise` < 1: img2img from the test image."""
    g = Graph()
    model, clip, vae = loaders(g, unet, lora)
    if encoder == "flux":
        pos = g.add("CLIPTextEncodeFlux", clip=clip, clip_l=POSITIVE, t5xxl=POSITIVE, guidance=guidance)[0]
    else:
        pos = g.add("CLIPTextEncode", text=POSITIVE, clip=clip)[0]
        pos = (g.add("FluxGuidance", conditioning=pos, guidance=guidance) if guidance is not None
               else g.add("FluxDisableGuidance", conditioning=pos))[0]
    neg = g.add("CLIPTextEncode", text=NEGATIVE if cfg > 1 else "", clip=clip)[0]
    if shift:
        model = g.add("ModelSamplingFlux", model=model, max_shift=1.15, base_shift=0.5, width=SIZE,
                      height=SIZE)[0]
    if denoise < 1.0:
        image = g.add("LoadImage", image=IMAGE)
        latent = g.add("VAEEncode", pixels=image[0], vae=vae)[0]
    else:
        latent = g.add("EmptySD3LatentImage", width=SIZE, height=SIZE, batch_size=1)[0]
    samples = g.add("KSampler", model=model, positive=pos, negative=neg, latent_image=latent, seed=1, steps=steps,
                    cfg=cfg, sampler_name=sampler, scheduler=scheduler, denoise=denoise)
    decode_save(g, vae, samples[0])
    return g


def custom_advanced(*, sampler: str = "euler", scheduler: str = "simple", steps: int = 4) -> Graph:
    """The FLUX dev template's SamplerCustomAdvanced graph: ModelSamplingFlux, BasicGuider, RandomNoise."""
    g = Graph()
    model, clip, vae = loaders(g)
    model = g.add("ModelSamplingFlux", model=model, max_shift=1.15, base_shift=0.5, width=SIZE, height=SIZE)[0]
    pos = g.add("CLIPTextEncode", text=POSITIVE, clip=clip)[0]
    pos = g.add("FluxGuidance", conditioning=pos, guidance=3.5)[0]
    guider = g.add("BasicGuider", model=model, conditioning=pos)[0]
    noise = g.add("RandomNoise", noise_seed=3)[0]
    chosen = g.add("KSamplerSelect", sampler_name=sampler)[0]
    sigmas = g.add("BasicScheduler", model=model, scheduler=scheduler, steps=steps, denoise=1.0)[0]
    latent = g.add("EmptySD3LatentImage", width=SIZE, height=SIZE, batch_size=1)[0]
    out = g.add("SamplerCustomAdvanced", noise=noise, guider=guider, sampler=chosen, sigmas=sigmas,
                latent_image=latent)
    decode_save(g, vae, out[0])
    return g


def edit(kind: str, *, method: str | None = None, steps: int = 3) -> Graph:
    """The FLUX.1 Fill / Depth / Kontext templates' graphs at 64 px: "fill" (InpaintModelConditioning on the
    masked image, guidance 30), "depth" (InstructPixToPixConditioning, guidance 10), "kontext" (one
    ReferenceLatent), "kontext2" (two, with FluxKontextMultiReferenceLatentMethod `method` when given),
    "kontext_scale" (FluxKontextImageScale, then back to 64 px)."""
    g = Graph()
    unet = {"fill": FILL, "depth": DEPTH}.get(kind, DEV)
    model, clip, vae = loaders(g, unet)
    pos = g.add("CLIPTextEncode", text=POSITIVE, clip=clip)[0]
    neg = g.add("CLIPTextEncode", text="", clip=clip)[0]
    pos = g.add("FluxGuidance", conditioning=pos, guidance={"fill": 30.0, "depth": 10.0}.get(kind, 2.5))[0]
    image = g.add("LoadImage", image=IMAGE_WITH_MASK if kind == "fill" else IMAGE)
    if kind == "fill":
        cond = g.add("InpaintModelConditioning", positive=pos, negative=neg, vae=vae, pixels=image[0],
                     mask=image[1], noise_mask=True)
        pos, neg, latent = cond[0], cond[1], cond[2]
    elif kind == "depth":
        cond = g.add("InstructPixToPixConditioning", positive=pos, negative=neg, vae=vae, pixels=image[0])
        pos, neg, latent = cond[0], cond[1], cond[2]
    else:
        pixels = image[0]
        if kind == "kontext_scale":
            pixels = g.add("FluxKontextImageScale", image=pixels)[0]
            pixels = g.add("ImageScale", image=pixels, upscale_method="bilinear", width=SIZE, height=48,
                           crop="disabled")[0]
        first = g.add("VAEEncode", pixels=pixels, vae=vae)[0]
        pos = g.add("ReferenceLatent", conditioning=pos, latent=first)[0]
        if kind == "kontext2":
            inverted = g.add("ImageInvert", image=image[0])[0]
            second = g.add("VAEEncode", pixels=inverted, vae=vae)[0]
            pos = g.add("ReferenceLatent", conditioning=pos, latent=second)[0]
            if method is not None:
                pos = g.add("FluxKontextMultiReferenceLatentMethod", conditioning=pos,
                            reference_latents_method=method)[0]
        latent = g.add("EmptySD3LatentImage", width=SIZE, height=SIZE, batch_size=1)[0]
    samples = g.add("KSampler", model=model, positive=pos, negative=neg, latent_image=latent, seed=1, steps=steps,
                    cfg=1.0, sampler_name="euler", scheduler="simple", denoise=1.0)
    decode_save(g, vae, samples[0])
    return g


def cases() -> list[Case]:
    images = {IMAGE: test_image_png(SIZE), IMAGE_WITH_MASK: test_image_png(SIZE, with_alpha_mask=True)}
    return [
        Case("flux/dev/CLIPTextEncode+FluxGuidance/euler/simple", txt2img().prompt()),
        Case("flux/dev/SamplerCustomAdvanced/ModelSamplingFlux/euler/simple", custom_advanced().prompt()),
        Case("flux/dev/CLIPTextEncodeFlux/ModelSamplingFlux/euler/beta",
             txt2img(encoder="flux", guidance=2.5, scheduler="beta", shift=True).prompt()),
        Case("flux/dev/FluxDisableGuidance/euler/simple", txt2img(guidance=None, steps=3).prompt()),
        Case("flux/dev/cfg2/dpmpp_2m/simple", txt2img(cfg=2.0, sampler="dpmpp_2m", steps=3).prompt()),
        Case("flux/dev/img2img/euler/0.6", txt2img(denoise=0.6, steps=5).prompt(), images),
        Case("flux/dev/lora/kohya/1.0", txt2img(lora=1.0, steps=3).prompt()),
        Case("flux/kontext/ReferenceLatent/euler", edit("kontext").prompt(), images),
        Case("flux/kontext/two_references/offset", edit("kontext2").prompt(), images),
        Case("flux/kontext/two_references/index", edit("kontext2", method="index").prompt(), images),
        Case("flux/kontext/two_references/uxo", edit("kontext2", method="uxo/uno").prompt(), images),
        Case("flux/kontext/FluxKontextImageScale", edit("kontext_scale").prompt(), images),
        Case("flux/schnell/scaled_fp8/euler/simple", txt2img(unet=SCHNELL, steps=3).prompt()),
        Case("flux/fill/InpaintModelConditioning/euler", edit("fill").prompt(), images),
        Case("flux/depth/InstructPixToPixConditioning/euler", edit("depth").prompt(), images),
    ]


FAMILY = Family(name="flux", models=(
    ModelFile("diffusion_models", DEV, write_dev), ModelFile("diffusion_models", SCHNELL, write_schnell),
    ModelFile("diffusion_models", FILL, write_fill), ModelFile("diffusion_models", DEPTH, write_depth),
    ModelFile("text_encoders", T5, write_t5), ModelFile("text_encoders", CLIP_L, write_clip_l),
    ModelFile("vae", VAE, write_vae), ModelFile("loras", LORA, write_lora)), cases=cases)
