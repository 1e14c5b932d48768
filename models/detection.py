"""Which model a checkpoint holds, from its keys and shapes alone (never its file name).

`detect(shapes)` is a pure function over `{key: shape}`; it returns the whole `ModelConfig` (family,
prediction type, UNet and VAE configs, latent format, text-encoder slots) or raises an error that says
what was found. Every number is read from shapes, so a tiny test model in the real layout takes the same
path as a full-size file; the tests run it on the real key manifests in tests/data/manifests/.

SD3 / SD3.5 (MM-DiT) files are recognised by `x_embedder.proj.weight` under the diffusion-model prefix and
described by `detect_mmdit`; SD3.5 large and large-turbo have the same layout (turbo is a distillation of
the same 38-block network), so they are one variant here.

The one thing keys cannot tell is SD2.x 512-base (eps) from 768-v (v): the files have identical layouts.
`detect` answers "v" (the SD2.x file most users have, and what ComfyUI and A1111 conclude for real 768-v
weights); the checkpoint loader then applies ComfyUI's weight statistic via `sniff_sd2_prediction`, and an
explicit `prediction_override` beats both.

SDXL and the files built on it are told apart by `label_emb`'s input width (2816: base and its fine-tunes,
SSD-1B, Segmind Vega; 2560: the refiner), as ComfyUI's supported_models does; the UNet sizes (depth lists,
channels, context) are read from shapes like any other. v-prediction SDXL fine-tunes mark themselves
with a `v_pred` key, zero-terminal-SNR ones also with `ztsnr` (ComfyUI supported_models.SDXL.model_type).
"""
from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, replace

from models.errors import UnknownModelError, UnsupportedModelError, summarise_keys
from models.mmdit import MMDiTConfig
from models.unet import UNetConfig
from models.vae import VAEConfig

Shapes = Mapping[str, tuple[int, ...]]

UNET_PREFIX = "model.diffusion_model."
VAE_PREFIX = "first_stage_model."
EMA_PREFIX = "model_ema."

# Latent scale of the SD1/SD2 VAE: chosen so that latents have unit variance (Rombach et al. 2022, sec. 4.3.2
# and the `scale_factor: 0.18215` of Stability's v1/v2-inference yaml files).
SD_LATENT_SCALE = 0.18215
# SDXL's VAE (same layout, retrained): `scale_factor: 0.13025` in Stability's sd_xl_base.yaml (generative-models).
SDXL_LATENT_SCALE = 0.13025
# label_emb input width -> (family, text towers): pooled bigG 1280 + 6 (base) or 5 (refiner) x 256 size embeddings
SDXL_ADM_FAMILIES = {2816: "sdxl", 2560: "sdxl_refiner"}
# ComfyUI's names (supported_models) for the known SDXL-base shapes, by input transformer depths
SDXL_ARCHITECTURES = {(0, 0, 2, 2, 10, 10): "SDXL", (0, 0, 2, 2, 4, 4): "SSD1B", (0, 0, 1, 1, 2, 2): "Segmind_Vega"}

# ComfyUI (supported_models.SD20.model_type) calls a 4-channel SD2 UNet v-prediction when the std of this
# bias exceeds 0.09; A1111 reaches the same verdict for the published files by running the model.
# For other depths we probe the same tensor of the last output block that has a transformer.
SD2_V_STD_THRESHOLD = 0.09


@dataclass(frozen=True)
class TextEncoderSlot:
    kind: str          # "clip_l" | "open_clip_h" | "open_clip_g" | "clip_g" | "t5xxl" (models.text kinds)
    prefix: str        # key prefix in the checkpoint, stripped before the encoder sees its state dict
    behaviour: tuple[tuple[str, object], ...] = ()   # models.text.load_text_encoder overrides (SDXL's CLIP-L)


@dataclass(frozen=True)
class ModelConfig:
    family: str                    # "sd1" | "sd2" | "sdxl" | "sdxl_refiner" | "sd3" (SD3 and SD3.5)
    variant: str                   # "base" | "inpaint" | "in<N>"; SD3: see `mmdit_variant`
    prediction_type: str           # "eps" | "v" | "flow"
    unet: UNetConfig | MMDiTConfig  # the diffusion model's config (an MM-DiT for "sd3")
    vae: VAEConfig
    latent_channels: int
    latent_scale_factor: float
    latent_shift: float = 0.0      # SD3's VAE has one (0.0609); SD1/SD2 none: latent_in = (z - shift) * scale
    latent_downscale: int = 8      # pixels per latent cell
    text_encoders: tuple[TextEncoderSlot, ...] = ()
    unet_prefix: str = UNET_PREFIX
    vae_prefix: str = VAE_PREFIX
    has_ema: bool = False          # the file carries `model_ema.*` shadows of the UNet
    zero_terminal_snr: bool = False  # `ztsnr` key: the sigma table is rescaled to zero terminal SNR
    architecture: str = ""         # ComfyUI's model class name where it names a shape ("SDXL", "SSD1B", ...)


def detect(shapes: Shapes) -> ModelConfig:
    """Full configuration of a single-file SD checkpoint from its key -> shape map."""
    if is_mmdit(shapes, UNET_PREFIX):
        return detect_sd3(shapes)
    if is_flux(shapes, UNET_PREFIX):
        return detect_flux_checkpoint(shapes)
    if UNET_PREFIX + "input_blocks.0.0.weight" not in shapes:
        raise UnknownModelError(
            "Unknown checkpoint layout: no LDM UNet (`model.diffusion_model.input_blocks.0.0.weight`) found",
            f"{len(shapes)} tensors; key prefixes found: {summarise_keys(sorted(_prefixes(shapes)))}")
    try:
        unet = detect_unet(shapes, UNET_PREFIX)
    except KeyError as missing:
        raise UnknownModelError(f"Incomplete LDM UNet: no {missing.args[0]}",
                                f"{len(shapes)} tensors; key prefixes found: "
                                f"{summarise_keys(sorted(_prefixes(shapes)))}") from None
    vae = detect_vae(shapes, VAE_PREFIX)
    if unet.adm_in_channels and not is_unclip(shapes, unet):
        return _detect_sdxl(shapes, unet, vae)
    slots = _text_encoder_slots(shapes)
    family = "sd2" if unet.use_linear_in_transformer else "sd1"
    expected_slot = {"sd1": "clip_l", "sd2": "open_clip_h"}[family]
    if slots and slots[0].kind != expected_slot:
        raise UnknownModelError(
            f"Inconsistent checkpoint: its UNet has the {family.upper()} layout but its text encoder is "
            f"{slots[0].kind} (under {slots[0].prefix})")
    if family == "sd2":
        unet = replace(unet, upcast_attention=True)     # fp16 logits overflow (see models/attention.py)
    variant = {4: "base", 9: "inpaint"}.get(unet.in_channels, f"in{unet.in_channels}")
    if unet.adm_in_channels:                            # SD2.1 unCLIP (see is_unclip)
        variant = "unclip"
    prediction = "v" if family == "sd2" and unet.in_channels == 4 else "eps"
    has_ema = any(k.startswith(EMA_PREFIX + "diffusion_model") for k in shapes)
    return ModelConfig(family=family, variant=variant, prediction_type=prediction, unet=unet, vae=vae,
                       latent_channels=vae.embed_dim, latent_scale_factor=SD_LATENT_SCALE,
                       latent_downscale=vae.downscale_factor, text_encoders=tuple(slots), has_ema=has_ema)


# SD2.1 unCLIP (ComfyUI supported_models.SD21UnclipL / SD21UnclipH): label_emb takes the noise-augmented
# CLIP image embedding and its noise-level embedding, 2 x 768 (ViT-L) or 2 x 1024 (ViT-H); the files bundle
# the OpenCLIP vision tower under `embedder.model.visual.`.
UNCLIP_ADM_WIDTHS = {1536: "unclip_l", 2048: "unclip_h"}
UNCLIP_VISION_PREFIX = "embedder.model.visual."


def is_unclip(shapes: Shapes, unet: UNetConfig) -> bool:
    """An SD2.x UNet with label_emb that is not SDXL: it bundles a vision tower, or label_emb has the
    width of SD2.1 unCLIP-L / -H."""
    if not unet.use_linear_in_transformer or any(k.startswith("conditioner.embedders.") for k in shapes):
        return False
    return (unet.adm_in_channels in UNCLIP_ADM_WIDTHS
            or any(k.startswith(UNCLIP_VISION_PREFIX) for k in shapes))


def _detect_sdxl(shapes: Shapes, unet: UNetConfig, vae: VAEConfig) -> ModelConfig:
    family = SDXL_ADM_FAMILIES.get(unet.adm_in_channels)
    if family is None:
        raise UnsupportedModelError(
            f"Checkpoint has a class-conditioned UNet (label_emb input {unet.adm_in_channels}) that is not SDXL",
            "SDXL base files have 2816, the refiner 2560; SD2.1 unCLIP (1536/2048) files need their OpenCLIP text and vision towers")
    slots = _sdxl_text_encoder_slots(shapes, family)
    variant = {4: "base", 9: "inpaint"}.get(unet.in_channels, f"in{unet.in_channels}")
    if family == "sdxl":
        architecture = SDXL_ARCHITECTURES.get(unet.transformer_depth, "SDXL")
    else:
        architecture = "SDXLRefiner"
    return ModelConfig(family=family, variant=variant, prediction_type="v" if "v_pred" in shapes else "eps",
                       unet=unet, vae=vae, latent_channels=vae.embed_dim, latent_scale_factor=SDXL_LATENT_SCALE,
                       latent_downscale=vae.downscale_factor, text_encoders=slots,
                       has_ema=any(k.startswith(EMA_PREFIX + "diffusion_model") for k in shapes),
                       zero_terminal_snr="v_pred" in shapes and "ztsnr" in shapes, architecture=architecture)


def _sdxl_text_encoder_slots(shapes: Shapes, family: str) -> tuple[TextEncoderSlot, ...]:
    """Base: CLIP-L (HF layout) at embedders.0, bigG (OpenCLIP layout) at embedders.1; refiner: bigG alone at
    embedders.0 (sgm's GeneralConditioner numbering; ComfyUI supported_models SDXL / SDXLRefiner)."""
    penultimate = (("default_clip_skip", -2), ("norm_hidden_state", False))   # models.text.CLIP_L_PENULTIMATE
    wanted = ([TextEncoderSlot("clip_l", "conditioner.embedders.0.transformer.", penultimate),
               TextEncoderSlot("open_clip_g", "conditioner.embedders.1.model.")] if family == "sdxl"
              else [TextEncoderSlot("open_clip_g", "conditioner.embedders.0.model.")])
    present = [s for s in wanted if any(k.startswith(s.prefix) for k in shapes)]
    if present and len(present) != len(wanted):
        missing = [s.prefix for s in wanted if s not in present]
        raise UnknownModelError(f"Incomplete {family} checkpoint: a text encoder is missing",
                                f"nothing under {', '.join(missing)}")
    return tuple(present)          # none at all: a UNet+VAE file, text encoders come from a CLIP loader


def sd2_prediction_probe(unet: UNetConfig, prefix: str = UNET_PREFIX) -> str | None:
    """The key ComfyUI sniffs (`output_blocks.11.1.transformer_blocks.0.norm1.bias` at full size)."""
    with_attention = [i for i, d in enumerate(unet.transformer_depth_output) if d]
    return f"{prefix}output_blocks.{with_attention[-1]}.1.transformer_blocks.0.norm1.bias" if with_attention else None


def sniff_sd2_prediction(probe_std: float) -> str:
    """ComfyUI's rule for a 4-channel SD2 UNet, given std(SD2_PREDICTION_PROBE)."""
    return "v" if probe_std > SD2_V_STD_THRESHOLD else "eps"


def _prefixes(shapes: Shapes) -> set[str]:
    return {".".join(k.split(".")[:2]) for k in shapes}


def _block_indices(shapes: Shapes, prefix: str) -> list[int]:
    pattern = re.compile(re.escape(prefix) + r"(\d+)\.")
    return sorted({int(m.group(1)) for k in shapes if (m := pattern.match(k))})


def _transformer_depth(shapes: Shapes, block_prefix: str) -> int:
    pattern = re.compile(re.escape(block_prefix) + r"\d+\.transformer_blocks\.(\d+)\.")
    found = {int(m.group(1)) for k in shapes if (m := pattern.match(k))}
    return max(found) + 1 if found else 0


def detect_unet(shapes: Shapes, prefix: str = UNET_PREFIX) -> UNetConfig:
    """UNetConfig of an LDM-layout UNet whose keys start with `prefix`."""
    p = prefix
    conv_in = shapes[p + "input_blocks.0.0.weight"]                     # [mc, in, 3, 3]
    model_channels, in_channels = conv_in[0], conv_in[1]
    out_channels = shapes[p + "out.2.weight"][0]
    res_per_level: list[int] = [0]
    mults: list[int] = []
    depths: list[int] = []
    for i in _block_indices(shapes, p + "input_blocks.")[1:]:
        b = f"{p}input_blocks.{i}."
        if b + "0.op.weight" in shapes:                                  # downsample: next level
            res_per_level.append(0)
            continue
        out_ch = shapes[b + "0.in_layers.2.weight"][0]
        if res_per_level[-1] == 0:
            mults.append(out_ch // model_channels)
        res_per_level[-1] += 1
        depths.append(_transformer_depth(shapes, b))
    if len(mults) != len(res_per_level):
        raise UnknownModelError("Unknown UNet layout: a resolution level without res blocks",
                                f"levels {res_per_level}")
    output_depths = [_transformer_depth(shapes, f"{p}output_blocks.{i}.")
                     for i in _block_indices(shapes, p + "output_blocks.")]
    if len(output_depths) != sum(n + 1 for n in res_per_level):
        raise UnknownModelError("Unknown UNet layout: output blocks do not mirror input blocks",
                                f"{len(output_depths)} output blocks for res blocks per level {res_per_level}")
    transformer_keys = [k for k in shapes if k.startswith(p) and k.endswith(".attn2.to_k.weight")]
    if not transformer_keys:
        raise UnknownModelError("Unknown UNet layout: no cross-attention (attn2) found",
                                "a text-conditioned LDM UNet was expected")
    context_dim = shapes[transformer_keys[0]][1]
    proj_in = next(shapes[k] for k in shapes if k.startswith(p) and k.endswith(".proj_in.weight"))
    use_linear = len(proj_in) == 2
    if p + "middle_block.1.proj_in.weight" in shapes:
        middle_depth = _transformer_depth(shapes, p + "middle_block.")
    elif p + "middle_block.1.in_layers.0.weight" in shapes:
        middle_depth = 0                                                 # two res blocks, no transformer
    else:
        middle_depth = -1                                                # one res block (SSD-1B, Vega)
    adm = shapes.get(p + "label_emb.0.0.weight", (0, 0))[1]
    return UNetConfig(
        in_channels=in_channels, out_channels=out_channels, model_channels=model_channels,
        channel_mult=tuple(mults), num_res_blocks=tuple(res_per_level), transformer_depth=tuple(depths),
        transformer_depth_middle=middle_depth, adm_in_channels=adm,
        transformer_depth_output=tuple(output_depths), context_dim=context_dim,
        # SD1 uses 8 heads; SD2 fixes the head width at 64 (v2-inference.yaml num_head_channels: 64).
        num_heads=-1 if use_linear else 8, head_dim=64 if use_linear else -1,
        use_linear_in_transformer=use_linear)


def detect_vae(shapes: Shapes, prefix: str = VAE_PREFIX) -> VAEConfig:
    """VAEConfig of an LDM-layout AutoencoderKL whose keys start with `prefix` ("" for standalone files)."""
    p = prefix
    if p + "encoder.conv_in.weight" not in shapes or p + "decoder.conv_in.weight" not in shapes:
        raise UnknownModelError(f"No LDM VAE found under '{p}'",
                                f"expected {p}encoder.conv_in.weight and {p}decoder.conv_in.weight")
    ch, in_channels = shapes[p + "encoder.conv_in.weight"][:2]
    levels = _block_indices(shapes, p + "encoder.down.")
    mults = tuple(shapes[f"{p}encoder.down.{i}.block.0.conv1.weight"][0] // ch for i in levels)
    num_res = len(_block_indices(shapes, p + "encoder.down.0.block."))
    z2 = shapes[p + "encoder.conv_out.weight"][0]
    has_quant = p + "quant_conv.weight" in shapes
    embed_dim = shapes[p + "quant_conv.weight"][0] // 2 if has_quant else z2 // 2
    return VAEConfig(in_channels=in_channels, out_channels=shapes[p + "decoder.conv_out.weight"][0], ch=ch,
                     ch_mult=mults, num_res_blocks=num_res, z_channels=z2 // 2, embed_dim=embed_dim,
                     has_quant_conv=has_quant)


def detect_vae_file(shapes: Shapes) -> tuple[VAEConfig, str]:
    """A standalone VAE file (keys `encoder.*`) or a checkpoint's VAE: the config and the key prefix."""
    for prefix in ("", VAE_PREFIX, "vae."):
        if prefix + "decoder.conv_in.weight" in shapes:
            return detect_vae(shapes, prefix), prefix
    raise UnknownModelError("Not a VAE file: no `decoder.conv_in.weight` found",
                            f"{len(shapes)} tensors; key prefixes found: {summarise_keys(sorted(_prefixes(shapes)))}")


def _text_encoder_slots(shapes: Shapes) -> list[TextEncoderSlot]:
    slots = []
    if any(k.startswith("cond_stage_model.transformer.") for k in shapes):
        slots.append(TextEncoderSlot("clip_l", "cond_stage_model.transformer."))
    if any(k.startswith("cond_stage_model.model.") for k in shapes):
        slots.append(TextEncoderSlot("open_clip_h", "cond_stage_model.model."))
    return slots


# --- SD3 / SD3.5 (MM-DiT) ---------------------------------------------------------------------------------

# SD3's 16-channel VAE: latent_in = (z - 0.0609) * 1.5305 (the `scaling_factor` / `shift_factor` of
# stabilityai/stable-diffusion-3-medium-diffusers vae/config.json; not stored in the file).
SD3_LATENT_SCALE = 1.5305
SD3_LATENT_SHIFT = 0.0609
MMDIT_HEAD_DIM = 64        # every released MM-DiT: width 64 * depth, heads = depth (Esser et al. 2024, sec. 5.1)

# Text encoders bundled in the all-in-one SD3 files (sd3_medium_incl_clips*.safetensors), HF layouts.
SD3_TEXT_SLOTS = (TextEncoderSlot("clip_l", "text_encoders.clip_l.transformer."),
                  TextEncoderSlot("clip_g", "text_encoders.clip_g.transformer."),
                  TextEncoderSlot("t5xxl", "text_encoders.t5xxl.transformer."))


def is_mmdit(shapes: Shapes, prefix: str = UNET_PREFIX) -> bool:
    return prefix + "x_embedder.proj.weight" in shapes and prefix + "joint_blocks.0.x_block.attn.qkv.weight" in shapes


def detect_mmdit(shapes: Shapes, prefix: str = UNET_PREFIX) -> MMDiTConfig:
    """MMDiTConfig of an SD3-layout diffusion model whose keys start with `prefix`.

    Depth is the number of joint blocks (= width / 64 in the released models); the stored position grid is
    pos_embed_max_size^2 tokens; QK-norm shows as `attn.ln_q`; MM-DiT-X blocks carry `x_block.attn2`."""
    p = prefix
    hidden, in_channels, patch, _ = shapes[p + "x_embedder.proj.weight"]           # [D, C, p, p]
    depth = len(_block_indices(shapes, p + "joint_blocks."))
    if hidden % MMDIT_HEAD_DIM:
        raise UnknownModelError(f"Unknown MM-DiT layout: width {hidden} is not a multiple of the 64-wide heads")
    positions = shapes[p + "pos_embed"][1]
    grid = math.isqrt(positions)
    if grid * grid != positions:
        raise UnknownModelError(f"Unknown MM-DiT layout: pos_embed holds {positions} positions, not a square grid")
    out_channels = shapes[p + "final_layer.linear.weight"][0] // (patch * patch)
    dual = tuple(i for i in range(depth) if f"{p}joint_blocks.{i}.x_block.attn2.qkv.weight" in shapes)
    return MMDiTConfig(
        depth=depth, hidden_size=hidden, num_heads=hidden // MMDIT_HEAD_DIM, patch_size=patch,
        in_channels=in_channels, out_channels=out_channels, context_in_dim=shapes[p + "context_embedder.weight"][1],
        adm_in_dim=shapes[p + "y_embedder.mlp.0.weight"][1], pos_embed_max_size=grid,
        qk_norm=p + "joint_blocks.0.x_block.attn.ln_q.weight" in shapes, dual_attention_blocks=dual,
        mlp_ratio=shapes[p + "joint_blocks.0.x_block.mlp.fc1.weight"][0] / hidden)


def mmdit_variant(config: MMDiTConfig) -> str:
    """"sd3_medium", "sd35_medium", "sd35_large" (also large-turbo: same layout), or "mmdit_d<N>"."""
    name = "sd35" if config.qk_norm else "sd3"
    size = {24: "medium", 38: "large"}.get(config.depth)
    return f"{name}_{size}" if size else f"{name}_d{config.depth}"


def sd3_model_config(unet: MMDiTConfig, vae: VAEConfig | None = None,
                     text_encoders: tuple[TextEncoderSlot, ...] = ()) -> ModelConfig:
    vae = vae or VAEConfig(z_channels=16, embed_dim=16, has_quant_conv=False)
    return ModelConfig(family="sd3", variant=mmdit_variant(unet), prediction_type="flow", unet=unet, vae=vae,
                       latent_channels=vae.embed_dim, latent_scale_factor=SD3_LATENT_SCALE,
                       latent_shift=SD3_LATENT_SHIFT, latent_downscale=vae.downscale_factor,
                       text_encoders=text_encoders)


def detect_sd3(shapes: Shapes) -> ModelConfig:
    """A single-file SD3 / SD3.5 checkpoint: MM-DiT, the 16-channel VAE, and whichever of CLIP-L, CLIP-G
    and T5-XXL it bundles."""
    unet = detect_mmdit(shapes, UNET_PREFIX)
    vae = detect_vae(shapes, VAE_PREFIX) if VAE_PREFIX + "decoder.conv_in.weight" in shapes else None
    slots = tuple(s for s in SD3_TEXT_SLOTS if any(k.startswith(s.prefix) for k in shapes))
    return sd3_model_config(unet, vae, slots)


# --- FLUX.1 -----------------------------------------------------------------------------------------------

# FLUX.1's VAE: latent_in = (z - 0.1159) * 0.3611 (`scaling_factor` / `shift_factor` of
# black-forest-labs/FLUX.1-dev vae/config.json; not stored in ae.safetensors).
FLUX_LATENT_SCALE = 0.3611
FLUX_LATENT_SHIFT = 0.1159
FLUX_AXES_128 = (16, 56, 56)      # rotary axes of the released 128-wide heads (BFL flux/util.py configs)
# Text encoders bundled in ComfyUI-saved all-in-one FLUX files; the VAE under `vae.` (ComfyUI
# supported_models.Flux vae_key_prefix / text_encoder_key_prefix).
FLUX_TEXT_SLOTS = (TextEncoderSlot("clip_l", "text_encoders.clip_l.transformer."),
                   TextEncoderSlot("t5xxl", "text_encoders.t5xxl.transformer."))
FLUX_VAE_PREFIXES = ("vae.", VAE_PREFIX)
# img_in input width (C x 2 x 2) -> variant: latent alone; + masked-image latent and 8x8 mask (Fill);
# + control latent (Depth / Canny)
FLUX_VARIANTS = {64: "base", 384: "fill", 128: "control"}


def is_flux(shapes: Shapes, prefix: str = UNET_PREFIX) -> bool:
    return prefix + "img_in.weight" in shapes and prefix + "double_blocks.0.img_attn.qkv.weight" in shapes


def detect_flux(shapes: Shapes, prefix: str = UNET_PREFIX):
    """FluxConfig of a BFL-layout FLUX transformer whose keys start with `prefix`: widths from img_in,
    txt_in and vector_in, heads from the per-head QK-norm scale, depths from the block indices, [dev]
    by guidance_in. The rotary split is not stored: (16, 56, 56) for 128-wide heads, the same
    proportions (1/8, 7/16, 7/16) otherwise."""
    from models.flux import FluxConfig
    p = prefix
    hidden, in_channels = shapes[p + "img_in.weight"]
    head_dim = shapes[p + "double_blocks.0.img_attn.norm.query_norm.scale"][0]
    if hidden % head_dim or head_dim % 16:
        raise UnknownModelError(f"Unknown FLUX layout: width {hidden} with {head_dim}-wide heads")
    axes = FLUX_AXES_128 if head_dim == 128 else (head_dim // 8, head_dim * 7 // 16, head_dim * 7 // 16)
    return FluxConfig(
        in_channels=in_channels, out_channels=shapes[p + "final_layer.linear.weight"][0], hidden_size=hidden,
        num_heads=hidden // head_dim, depth=len(_block_indices(shapes, p + "double_blocks.")),
        depth_single_blocks=len(_block_indices(shapes, p + "single_blocks.")),
        context_in_dim=shapes[p + "txt_in.weight"][1], vec_in_dim=shapes[p + "vector_in.in_layer.weight"][1],
        mlp_ratio=shapes[p + "double_blocks.0.img_mlp.0.weight"][0] / hidden, axes_dim=axes,
        qkv_bias=p + "double_blocks.0.img_attn.qkv.bias" in shapes,
        guidance_embed=p + "guidance_in.in_layer.weight" in shapes)


def flux_variant(config) -> str:
    """"dev" / "schnell" (guidance embedding or not), with "-fill" / "-control" by input width."""
    name = "dev" if config.guidance_embed else "schnell"
    extra = FLUX_VARIANTS.get(config.in_channels, f"in{config.in_channels}")
    return name if extra == "base" else f"{name}-{extra}"


def flux_model_config(unet, vae: VAEConfig | None = None,
                      text_encoders: tuple[TextEncoderSlot, ...] = (), vae_prefix: str = "vae.") -> ModelConfig:
    vae = vae or VAEConfig(z_channels=16, embed_dim=16, has_quant_conv=False)
    return ModelConfig(family="flux", variant=flux_variant(unet), prediction_type="flow", unet=unet, vae=vae,
                       latent_channels=vae.embed_dim, latent_scale_factor=FLUX_LATENT_SCALE,
                       latent_shift=FLUX_LATENT_SHIFT, latent_downscale=vae.downscale_factor,
                       text_encoders=text_encoders, vae_prefix=vae_prefix)


def detect_flux_checkpoint(shapes: Shapes) -> ModelConfig:
    """An all-in-one FLUX file: the transformer under model.diffusion_model., the VAE under vae. (or
    first_stage_model.), CLIP-L and T5-XXL under text_encoders.*."""
    unet = detect_flux(shapes, UNET_PREFIX)
    vae_prefix = next((p for p in FLUX_VAE_PREFIXES if p + "decoder.conv_in.weight" in shapes), None)
    vae = detect_vae(shapes, vae_prefix) if vae_prefix else None
    slots = tuple(s for s in FLUX_TEXT_SLOTS if any(k.startswith(s.prefix) for k in shapes))
    return flux_model_config(unet, vae, slots, vae_prefix or "vae.")
# --- control models: ControlNet (models/controlnet.py), T2I-Adapter (models/t2i_adapter.py) ----------------

@dataclass(frozen=True)
class ControlModelInfo:
    kind: str                  # "controlnet" | "t2i_adapter" | "control_lora" | "mmdit_controlnet" (SD3)
                               # | "sd35_controlnet" (SD3.5 large, Stability's layout) | "flux_controlnet"
    layout: str                # "ldm" (original names) | "diffusers"
    prefix: str                # stripped before the module sees the keys ("control_model." or "")
    config: object             # models.controlnet.ControlNetConfig / ControlLoraConfig | T2IAdapterConfig
    is_diff: bool = False      # a "diff" ControlNet: weights are differences to the base UNet's


def detect_control_model(shapes: Shapes) -> ControlModelInfo:
    """Which control model a ControlNetLoader file holds (ComfyUI load_controlnet_state_dict's order)."""
    if "lora_controlnet" in shapes:                     # Stability control-LoRA: built on the base UNet
        return ControlModelInfo("control_lora", "ldm", "", detect_control_lora(shapes))
    if "controlnet_blocks.0.weight" in shapes and "double_blocks.0.img_attn.norm.key_norm.scale" in shapes:
        return ControlModelInfo("flux_controlnet", "xlabs", "", detect_flux_controlnet(shapes))
    if "controlnet_blocks.0.linear.weight" in shapes:             # MistoLine's FLUX net (XLabs-like names)
        return ControlModelInfo("flux_controlnet", "mistoline", "", detect_flux_controlnet(shapes))
    if "controlnet_x_embedder.weight" in shapes:
        if "transformer_blocks.0.img_mlp.net.0.proj.weight" in shapes:
            raise UnsupportedModelError("Qwen-Image ControlNets are not supported yet (Plexus does not run Qwen-Image)",
                                        "controlnet_x_embedder with Qwen-Image blocks (img_mlp)")
        return ControlModelInfo("flux_controlnet", "diffusers", "", detect_flux_controlnet(shapes))
    if "controlnet_blocks.0.weight" in shapes and "pos_embed_input.proj.weight" in shapes:
        if "transformer_blocks.0.adaLN_modulation.1.bias" in shapes:      # Stability's SD3.5 layout
            return ControlModelInfo("sd35_controlnet", "stability", "", detect_sd35_controlnet(shapes))
        return ControlModelInfo("mmdit_controlnet", "diffusers", "", detect_mmdit_controlnet(shapes))
    if "controlnet_cond_embedding.conv_in.weight" in shapes:
        config = detect_controlnet_diffusers(shapes)
        if "task_embedding" in shapes:                  # union ControlNet (xinsir ControlNet++ / ProMax)
            config = replace(config, union_control_types=shapes["task_embedding"][0])
        return ControlModelInfo("controlnet", "diffusers", "", config)
    for prefix in ("control_model.", ""):
        if prefix + "zero_convs.0.0.weight" in shapes:
            return ControlModelInfo("controlnet", "ldm", prefix, detect_controlnet_ldm(shapes, prefix),
                                    is_diff="difference" in shapes)
    if any(k.startswith(("conv_in.", "body.", "adapter.")) for k in shapes):
        config = detect_t2i_adapter(shapes)
        return ControlModelInfo("t2i_adapter", "diffusers" if "adapter.body.0.resnets.0.block1.weight" in shapes
                                else "ldm", "", config)
    raise UnknownModelError("Not a ControlNet or T2I-Adapter file", summarise_keys(list(shapes)))


def detect_flux_controlnet(shapes: Shapes):
    """FluxControlNetConfig of a FLUX ControlNet: diffusers' FluxControlNetModel layout (`controlnet_x_embedder`,
    InstantX / Shakker-Labs; hint a VAE latent of pos_embed_input width / 4 channels, union modes from
    `controlnet_mode_embedder`) or XLabs' BFL names (`input_hint_block`: an RGB hint) / MistoLine's
    (`input_cond_block`). Heads from the per-head QK-norm scale; rotary axes as for the base model."""
    from models.controlnet_flux import FluxControlNetConfig
    from models.flux import FluxConfig
    if "controlnet_x_embedder.weight" in shapes:                   # diffusers names
        hidden, in_channels = shapes["x_embedder.weight"]
        doubles = _block_indices(shapes, "transformer_blocks.")
        block = "transformer_blocks.0." if doubles else "single_transformer_blocks.0."
        norm_q = shapes.get(block + "attn.norm_q.weight")
        if norm_q is None:
            raise UnknownModelError("Unknown FLUX ControlNet layout (diffusers names): no per-head QK norm",
                                    summarise_keys(list(shapes)))
        mlp = shapes["transformer_blocks.0.ff.net.0.proj.weight"][0] if doubles else \
            shapes["single_transformer_blocks.0.proj_mlp.weight"][0]
        head_dim = norm_q[0]
        flux = dict(in_channels=in_channels, hidden_size=hidden, depth=len(doubles),
                    depth_single_blocks=len(_block_indices(shapes, "single_transformer_blocks.")),
                    context_in_dim=shapes["context_embedder.weight"][1],
                    vec_in_dim=shapes["time_text_embed.text_embedder.linear_1.weight"][1], mlp_ratio=mlp / hidden,
                    qkv_bias=block + "attn.to_q.bias" in shapes,
                    guidance_embed="time_text_embed.guidance_embedder.linear_1.weight" in shapes)
        hint_format, hint_channels = "latent", shapes["controlnet_x_embedder.weight"][1] // 4
        modes = shapes["controlnet_mode_embedder.weight"][0] if "controlnet_mode_embedder.weight" in shapes else 0
    else:                                                          # XLabs / MistoLine: BFL names
        hidden, in_channels = shapes["img_in.weight"]
        head_dim = shapes["double_blocks.0.img_attn.norm.query_norm.scale"][0]
        flux = dict(in_channels=in_channels, hidden_size=hidden, depth=len(_block_indices(shapes, "double_blocks.")),
                    depth_single_blocks=len(_block_indices(shapes, "single_blocks.")),
                    context_in_dim=shapes["txt_in.weight"][1], vec_in_dim=shapes["vector_in.in_layer.weight"][1],
                    mlp_ratio=shapes["double_blocks.0.img_mlp.0.weight"][0] / hidden,
                    qkv_bias="double_blocks.0.img_attn.qkv.bias" in shapes,
                    guidance_embed="guidance_in.in_layer.weight" in shapes)
        hint_format = "mistoline" if "controlnet_blocks.0.linear.weight" in shapes else "pixels"
        hint_channels, modes = 3, 0
    if hidden % head_dim or head_dim % 16:
        raise UnknownModelError(f"Unknown FLUX ControlNet layout: width {hidden} with {head_dim}-wide heads")
    axes = FLUX_AXES_128 if head_dim == 128 else (head_dim // 8, head_dim * 7 // 16, head_dim * 7 // 16)
    config = FluxConfig(out_channels=in_channels, num_heads=hidden // head_dim, axes_dim=axes, **flux)
    return FluxControlNetConfig(flux=config, hint_format=hint_format, hint_channels=hint_channels, union_modes=modes)


def detect_mmdit_controlnet(shapes: Shapes):
    """MMDiTControlNetConfig of a diffusers SD3ControlNetModel file (`transformer_blocks`, `controlnet_blocks`,
    `pos_embed_input`); the base model has hidden / 64 blocks (as ComfyUI's load_controlnet_mmdit assumes)."""
    from models.controlnet_mmdit import HEAD_WIDTH, MMDiTControlNetConfig
    if "pos_embed.pos_embed" not in shapes:
        raise UnknownModelError("Unknown SD3 ControlNet layout: no stored position embedding (pos_embed.pos_embed)",
                                summarise_keys(list(shapes)))
    hidden, in_channels, patch = shapes["pos_embed.proj.weight"][:3]
    blocks = _block_indices(shapes, "transformer_blocks.")
    mmdit = MMDiTConfig(
        depth=len(blocks), hidden_size=hidden, num_heads=hidden // HEAD_WIDTH, patch_size=patch,
        in_channels=in_channels, out_channels=in_channels, context_in_dim=shapes["context_embedder.weight"][1],
        adm_in_dim=shapes["time_text_embed.text_embedder.linear_1.weight"][1],
        pos_embed_max_size=math.isqrt(shapes["pos_embed.pos_embed"][1]),
        qk_norm="transformer_blocks.0.attn.norm_q.weight" in shapes,
        dual_attention_blocks=tuple(i for i in blocks if f"transformer_blocks.{i}.attn2.to_q.weight" in shapes))
    return MMDiTControlNetConfig(mmdit=mmdit, base_depth=hidden // HEAD_WIDTH,
                                 hint_channels=shapes["pos_embed_input.proj.weight"][1])


def detect_sd35_controlnet(shapes: Shapes):
    """SD35ControlNetConfig of an SD3.5 ControlNet in Stability's layout (`transformer_blocks.i.adaLN_modulation`,
    `attn.qkv`, `mlp.fc1`; `controlnet_blocks`; `pos_embed_input`; timestep / pooled-text embedders under
    diffusers' or single-file names). Width 64 x the base's depth, 64-wide heads (ComfyUI's
    load_controlnet_sd35 assumes the same)."""
    from models.controlnet_mmdit import HEAD_WIDTH, SD35ControlNetConfig
    y_key = next((k for k in ("time_text_embed.text_embedder.linear_1.weight", "y_embedder.mlp.0.weight")
                  if k in shapes), None)
    t_key = next((k for k in ("time_text_embed.timestep_embedder.linear_1.weight", "t_embedder.mlp.0.weight")
                  if k in shapes), None)
    if y_key is None or t_key is None or "transformer_blocks.0.mlp.fc1.weight" not in shapes:
        raise UnknownModelError("Unknown SD3.5 ControlNet layout: no timestep / pooled-text embedder or MLP",
                                summarise_keys(list(shapes)))
    hidden, adm = shapes[y_key][:2]
    if hidden == adm:
        raise UnsupportedModelError("SD3.5 ControlNets that re-embed the pooled vector (a square y_embedder, "
                                    "ComfyUI's double_y_emb) are not supported yet", f"{y_key} {shapes[y_key]}")
    hint_channels, patch = shapes["pos_embed_input.proj.weight"][1:3]
    mmdit = MMDiTConfig(
        depth=len(_block_indices(shapes, "transformer_blocks.")), hidden_size=hidden, num_heads=hidden // HEAD_WIDTH,
        patch_size=patch, in_channels=hint_channels, out_channels=hint_channels, adm_in_dim=adm,
        frequency_embedding_size=shapes[t_key][1],
        mlp_ratio=shapes["transformer_blocks.0.mlp.fc1.weight"][0] / hidden)
    return SD35ControlNetConfig(mmdit=mmdit, base_depth=hidden // HEAD_WIDTH)


def detect_control_lora(shapes: Shapes):
    """ControlLoraConfig of a control-LoRA file: its hint channels, rank and whether it takes SDXL's ADM
    vector (the rest of its shape is the base UNet's, known only when it is applied)."""
    from models.controlnet import ControlLoraConfig
    if "input_hint_block.0.weight" not in shapes:
        raise UnknownModelError("Unknown control-LoRA layout: no input_hint_block.0.weight",
                                summarise_keys(list(shapes)))
    ranks = {v[0] for k, v in shapes.items() if k.endswith(".down") and "__" not in k}
    return ControlLoraConfig(hint_channels=shapes["input_hint_block.0.weight"][1], rank=max(ranks, default=0),
                             has_adm=any(k.startswith("label_emb.") for k in shapes))


def _encoder_config(shapes: Shapes, levels: list[tuple[int, list[int]]], *, model_channels: int,
                    in_channels: int, middle_depth: int, adm: int, transformer_keys: list[str],
                    proj_in_keys: list[str]):
    """UNetConfig of an encoder half: `levels` = [(channel mult, [transformer depth per res block])]."""
    if not transformer_keys or not proj_in_keys:
        raise UnknownModelError("Unknown ControlNet layout: no cross-attention (attn2) found",
                                "a text-conditioned ControlNet was expected")
    use_linear = len(shapes[proj_in_keys[0]]) == 2
    return UNetConfig(
        in_channels=in_channels, model_channels=model_channels, channel_mult=tuple(m for m, _ in levels),
        num_res_blocks=tuple(len(d) for _, d in levels), transformer_depth=tuple(x for _, d in levels for x in d),
        transformer_depth_middle=middle_depth, adm_in_channels=adm, context_dim=shapes[transformer_keys[0]][1],
        num_heads=-1 if use_linear else 8, head_dim=64 if use_linear else -1, use_linear_in_transformer=use_linear)


def detect_controlnet_ldm(shapes: Shapes, prefix: str = "control_model."):
    """ControlNetConfig of a ControlNet in lllyasviel's layout (`input_blocks`, `zero_convs`,
    `input_hint_block`, `middle_block_out`) under `prefix`."""
    from models.controlnet import ControlNetConfig
    p = prefix
    model_channels, in_channels = shapes[p + "input_blocks.0.0.weight"][:2]   # [mc, in, 3, 3]
    levels: list[tuple[int, list[int]]] = []
    is_new_level = True
    for i in _block_indices(shapes, p + "input_blocks.")[1:]:
        b = f"{p}input_blocks.{i}."
        if b + "0.op.weight" in shapes:                                  # downsample: next level
            is_new_level = True
            continue
        if is_new_level:
            levels.append((shapes[b + "0.in_layers.2.weight"][0] // model_channels, []))
            is_new_level = False
        levels[-1][1].append(_transformer_depth(shapes, b))
    if p + "middle_block.1.proj_in.weight" in shapes:
        middle_depth = _transformer_depth(shapes, p + "middle_block.")
    else:
        middle_depth = 0 if p + "middle_block.1.in_layers.0.weight" in shapes else -1
    unet = _encoder_config(
        shapes, levels, model_channels=model_channels, in_channels=in_channels, middle_depth=middle_depth,
        adm=shapes.get(p + "label_emb.0.0.weight", (0, 0))[1],
        transformer_keys=[k for k in shapes if k.startswith(p) and k.endswith(".attn2.to_k.weight")],
        proj_in_keys=[k for k in shapes if k.startswith(p) and k.endswith(".proj_in.weight")])
    return ControlNetConfig(unet=unet, hint_channels=shapes[p + "input_hint_block.0.weight"][1])


def detect_controlnet_diffusers(shapes: Shapes):
    """ControlNetConfig of a diffusers ControlNetModel (`down_blocks`, `controlnet_down_blocks`)."""
    from models.controlnet import ControlNetConfig
    model_channels, in_channels = shapes["conv_in.weight"][:2]
    levels = []
    for level in _block_indices(shapes, "down_blocks."):
        b = f"down_blocks.{level}."
        res = _block_indices(shapes, b + "resnets.")
        mult = shapes[f"{b}resnets.0.conv1.weight"][0] // model_channels
        levels.append((mult, [_diffusers_depth(shapes, f"{b}attentions.{j}.") for j in res]))
    if "mid_block.attentions.0.proj_in.weight" in shapes:
        middle_depth = _diffusers_depth(shapes, "mid_block.attentions.0.")
    else:
        middle_depth = 0 if "mid_block.resnets.1.conv1.weight" in shapes else -1
    unet = _encoder_config(
        shapes, levels, model_channels=model_channels, in_channels=in_channels, middle_depth=middle_depth,
        adm=shapes.get("add_embedding.linear_1.weight", (0, 0))[1],
        transformer_keys=[k for k in shapes if k.endswith(".attn2.to_k.weight")],
        proj_in_keys=[k for k in shapes if k.endswith(".proj_in.weight")])
    return ControlNetConfig(unet=unet, hint_channels=shapes["controlnet_cond_embedding.conv_in.weight"][1])


def _diffusers_depth(shapes: Shapes, attention_prefix: str) -> int:
    pattern = re.compile(re.escape(attention_prefix) + r"transformer_blocks\.(\d+)\.")
    found = {int(m.group(1)) for k in shapes if (m := pattern.match(k))}
    return max(found) + 1 if found else 0


def detect_t2i_adapter(shapes: Shapes):
    """T2IAdapterConfig of a T2I-Adapter, TencentARC's names or diffusers' (`adapter.` prefix).
    Full adapters have 2 res blocks per stage (every published one; ComfyUI assumes the same)."""
    from models.t2i_adapter import T2IAdapterConfig
    s = {k.removeprefix("adapter."): v for k, v in shapes.items()}
    is_diffusers = "body.0.resnets.0.block1.weight" in s
    if is_diffusers and "conv_in.weight" not in s:                       # diffusers light adapter
        stages = _block_indices(s, "body.")
        return T2IAdapterConfig(kind="light", in_channels=s["body.0.in_conv.weight"][1],
                                channels=tuple(s[f"body.{i}.out_conv.weight"][0] for i in stages),
                                num_res_blocks=len(_block_indices(s, "body.0.resnets.")))
    if "body.0.in_conv.weight" in s and "body.0.out_conv.weight" in s:   # TencentARC light
        stages = _block_indices(s, "body.")
        return T2IAdapterConfig(kind="light", in_channels=s["body.0.in_conv.weight"][1],
                                channels=tuple(s[f"body.{i}.out_conv.weight"][0] for i in stages),
                                num_res_blocks=len(_block_indices(s, "body.0.body.")))
    if "conv_in.weight" not in s:
        raise UnknownModelError("Not a ControlNet or T2I-Adapter file", summarise_keys(list(shapes)))
    cin = s["conv_in.weight"][1]
    if is_diffusers:
        stages = _block_indices(s, "body.")
        n = len(_block_indices(s, "body.0.resnets."))
        channels = tuple(s[f"body.{i}.resnets.0.block1.weight"][0] for i in stages)
        kernel = s["body.0.resnets.0.block2.weight"][2]
    else:
        n = 2
        blocks = _block_indices(s, "body.")
        channels = tuple(s[f"body.{i}.block1.weight"][0] for i in blocks[::n])
        kernel = s["body.0.block2.weight"][2]
    return T2IAdapterConfig(kind="full", in_channels=cin, channels=channels, num_res_blocks=n, kernel_size=kernel,
                            use_conv_down=any(k.endswith("down_opt.op.weight") for k in s),
                            is_xl=cin in (256, 768))


# --- CLIP vision towers (models/clip_vision.py; HF names, models/convert/clip_vision.py converts OpenCLIP) ---

# SigLIP so400m/14 at 384 px: 27 x 27 patches (384 // 14; the conv drops the last 6 pixels)
SIGLIP_IMAGE_SIZES = {(27, 14): 384}


def detect_clip_vision(shapes: Shapes):
    """ClipVisionConfig of a vision tower in the Hugging Face layout (`vision_model.*`). Widths, depth, patch
    and image size come from the shapes; what they cannot say follows ComfyUI's configs
    (comfy/clip_vision_config_*.json): SigLIP (no class token) uses the tanh GELU and 0.5 mean/std, the
    1024-wide OpenAI ViT-L quick_gelu, the OpenCLIP towers (H 1280, bigG 1664) the exact GELU."""
    from models.clip_vision import SIGLIP_MEAN, SIGLIP_STD, ClipVisionConfig, heads_for
    p = "vision_model."
    if p + "embeddings.patch_embedding.weight" not in shapes:
        raise UnknownModelError("Not a CLIP vision file: no `vision_model.embeddings.patch_embedding.weight`",
                                f"{len(shapes)} tensors; key prefixes found: {summarise_keys(sorted(_prefixes(shapes)))}")
    hidden, _, patch, _ = shapes[p + "embeddings.patch_embedding.weight"]           # [C, 3, p, p]
    is_siglip = p + "embeddings.class_embedding" not in shapes
    positions = shapes[p + "embeddings.position_embedding.weight"][0]
    grid = math.isqrt(positions - (0 if is_siglip else 1))
    if grid * grid != positions - (0 if is_siglip else 1):
        raise UnknownModelError(f"Unknown CLIP vision layout: {positions} position embeddings is not a square "
                                "patch grid (plus a class token)")
    layers = len(_block_indices(shapes, p + "encoder.layers."))
    projection = shapes.get("visual_projection.weight", (None,))[0]
    activation = "gelu_pytorch_tanh" if is_siglip else ("quick_gelu" if hidden == 1024 else "gelu")
    extra = dict(image_mean=SIGLIP_MEAN, image_std=SIGLIP_STD, layer_norm_eps=1e-6) if is_siglip else {}
    return ClipVisionConfig(hidden_size=hidden, num_layers=layers, num_heads=heads_for(hidden),
                            intermediate_size=shapes[p + "encoder.layers.0.mlp.fc1.weight"][0],
                            activation=activation, image_size=SIGLIP_IMAGE_SIZES.get((grid, patch), grid * patch),
                            patch_size=patch,
                            projection_dim=projection, is_siglip=is_siglip, **extra)


# --- style models (models/style_model.py) ------------------------------------------------------------------

def detect_style_model(shapes: Shapes):
    """StyleModelConfig of a StyleModelLoader file (models/style_model.py): a T2I style adapter or FLUX Redux."""
    from models.style_model import StyleModelConfig
    if "style_embedding" in shapes:
        _, tokens, width = shapes["style_embedding"]
        layers = len({k.split(".")[1] for k in shapes if k.startswith("transformer_layes.")})
        return StyleModelConfig("t2i_style", width, shapes["proj"][1], num_layers=layers, num_tokens=tokens)
    if "redux_down.weight" in shapes:
        return StyleModelConfig("redux", shapes["redux_up.weight"][1], shapes["redux_down.weight"][0])
    raise UnknownModelError("Not a style model: neither a T2I style adapter (`style_embedding`) nor FLUX Redux "
                            "(`redux_down.weight`)", summarise_keys(list(shapes)))


# --- GLIGEN (models/gligen.py) ----------------------------------------------------------------------------

def detect_gligen(shapes: Shapes):
    """GligenConfig of a GLIGENLoader file: one gated block per `*.fuser.*` transformer block (widths from
    their `linear`), the position net's text, hidden and entity widths."""
    from models.gligen import FUSER_PATTERN, GligenConfig, gligen_blocks
    blocks = gligen_blocks(shapes)
    nets = [k for k in shapes if k.endswith("position_net.null_positive_feature")]
    if not blocks or not nets:
        raise UnknownModelError("Not a GLIGEN file: expected `*.fuser.*` gated blocks and `position_net.*`",
                                summarise_keys(list(shapes)))
    base = nets[0][:-len("null_positive_feature")]
    linears = {m.group(1): v for k, v in shapes.items()
               if (m := FUSER_PATTERN.fullmatch(k)) and m.group(2) == "linear.weight"}
    widths = tuple(linears[b][0] for b in blocks)                       # [Q, D] each
    return GligenConfig(fuser_widths=widths, entity_width=shapes[base + "linears.4.weight"][0],
                        text_width=shapes[base + "null_positive_feature"][0],
                        hidden_width=shapes[base + "linears.0.weight"][0])


def hf_text_encoder_kind(shapes: Mapping[str, tuple[int, ...]]) -> str:
    """A standalone CLIP text encoder in the Hugging Face layout (`text_model.`): "clip_h" (SD2's OpenCLIP
    ViT-H) when it is 1024 wide or has a 23rd layer (ComfyUI's rule: `encoder.layers.22` present, no 31st),
    else "clip_l"."""
    prefix = "text_model." if any(k.startswith("text_model.") for k in shapes) else ""
    width = shapes.get(prefix + "embeddings.token_embedding.weight", (0, 0))[-1]
    has_23 = any(k.startswith(prefix + "encoder.layers.22.") for k in shapes)
    has_31 = any(k.startswith(prefix + "encoder.layers.30.") for k in shapes)
    return "clip_h" if width == 1024 or (has_23 and not has_31) else "clip_l"
