"""Random-weight checkpoints in the real LDM single-file layout, for tests, benchmarks and the demo model.

`write_random_checkpoint` writes any UNet/VAE configuration (tiny or full size) as `.safetensors` (streamed
tensor by tensor: a full-size SD1.5 file never sits in RAM) or `.ckpt` (`torch.save({"state_dict": ...})`),
optionally with LitEma `model_ema.*` shadows, the DDPM schedule buffers and the text encoder in its real
layout (from `models.text.random_text_encoder_state_dict` when that is available).

Values are deterministic per tensor name and seed, and scaled so a forward pass stays finite:
weights ~ N(0, 1/fan_in) (LeCun init), norm scales ~ 1 + N(0, 0.1), biases ~ N(0, 0.02).
"""
from __future__ import annotations

import json
import math
import struct
import zlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch
from torch import Tensor

from models.convert.ldm import ema_key
from models.files import SAFETENSORS_NAMES
from models.unet import UNetConfig, UNetModel
from models.vae import AutoencoderKL, VAEConfig

Layout = dict[str, tuple[tuple[int, ...], torch.dtype]]

TEXT_SLOT = {"sd1": ("clip_l", "cond_stage_model.transformer."), "sd2": ("open_clip_h", "cond_stage_model.model.")}


def tiny_unet_config(family: str = "sd1", in_channels: int = 4) -> UNetConfig:
    """A few-MB UNet in the family's layout: 3 levels, 1 res block each, attention on the top two."""
    if family == "sd1":
        return UNetConfig(in_channels=in_channels, model_channels=32, channel_mult=(1, 2, 2),
                          num_res_blocks=(1, 1, 1), transformer_depth=(1, 1, 0), transformer_depth_middle=1,
                          transformer_depth_output=(0, 0, 1, 1, 1, 1), context_dim=32, num_heads=8)
    if family == "sd2":
        return UNetConfig(in_channels=in_channels, model_channels=64, channel_mult=(1, 2, 2),
                          num_res_blocks=(1, 1, 1), transformer_depth=(1, 1, 0), transformer_depth_middle=1,
                          transformer_depth_output=(0, 0, 1, 1, 1, 1), context_dim=64, num_heads=-1,
                          head_dim=64, use_linear_in_transformer=True, upcast_attention=True)
    raise ValueError(f"unknown family {family!r}")


def text_encoder_config(family: str, width: int | None = None):
    """The family's text tower config: full size, or a 2-layer tower `width` wide for tests."""
    from models.text import ClipTextConfig
    if family == "sd1":
        full = ClipTextConfig(kind="clip_l")
    else:
        full = ClipTextConfig(kind="open_clip_h", hidden_size=1024, num_layers=24, num_heads=16,
                              intermediate_size=4096, activation="gelu", projection_dim=1024,
                              default_clip_skip=-2, pad_token=0)
    if width is None:
        return full
    return replace(full, hidden_size=width, num_layers=2, num_heads=1, intermediate_size=2 * width,
                   projection_dim=width if full.projection_dim else None)


def tiny_vae_config() -> VAEConfig:
    return VAEConfig(ch=32, ch_mult=(1, 2, 2), num_res_blocks=1)


def sd15_unet_config() -> UNetConfig:
    return UNetConfig()


def module_layout(module_cls, config, prefix: str) -> dict[str, tuple[int, ...]]:
    """{file key: shape} of a module built on the meta device (no memory used)."""
    with torch.device("meta"):
        model = module_cls(config)
    return {prefix + k: tuple(v.shape) for k, v in model.state_dict().items()}


def random_tensor(name: str, shape: tuple[int, ...], dtype: torch.dtype, seed: int, std: float | None = None) -> Tensor:
    """Deterministic values for one tensor (see the module docstring for the scales)."""
    g = torch.Generator().manual_seed((zlib.crc32(name.encode()) + seed * 1_000_003) % (2 ** 63))
    if not dtype.is_floating_point:
        return torch.zeros(shape, dtype=dtype)
    x = torch.randn(shape, generator=g, dtype=torch.float32)
    if std is not None:
        x = x * std
    elif len(shape) >= 2:
        x = x / math.sqrt(math.prod(shape[1:]))
    elif name.endswith("bias"):
        x = x * 0.02
    else:                                                        # 1-D weights are norm scales
        x = 1.0 + 0.1 * x
    return x.to(dtype)


def ddpm_buffers(linear_start: float = 0.00085, linear_end: float = 0.012, steps: int = 1000) -> dict[str, Tensor]:
    """The 12 schedule buffers LDM's DDPM.register_schedule saves ("scaled linear" betas,
    ldm/models/diffusion/ddpm.py; Ho et al. 2020, eq. 6-7 for the posterior terms)."""
    betas = torch.linspace(linear_start ** 0.5, linear_end ** 0.5, steps, dtype=torch.float64) ** 2
    alphas_cumprod = torch.cumprod(1.0 - betas, 0)
    prev = torch.cat([torch.ones(1, dtype=torch.float64), alphas_cumprod[:-1]])
    post_var = betas * (1.0 - prev) / (1.0 - alphas_cumprod)
    bufs = {
        "betas": betas, "alphas_cumprod": alphas_cumprod, "alphas_cumprod_prev": prev,
        "sqrt_alphas_cumprod": alphas_cumprod.sqrt(), "sqrt_one_minus_alphas_cumprod": (1 - alphas_cumprod).sqrt(),
        "log_one_minus_alphas_cumprod": (1 - alphas_cumprod).log(),
        "sqrt_recip_alphas_cumprod": (1 / alphas_cumprod).sqrt(), "sqrt_recipm1_alphas_cumprod": (1 / alphas_cumprod - 1).sqrt(),
        "posterior_variance": post_var, "posterior_log_variance_clipped": torch.cat([post_var[1:2], post_var[1:]]).log(),
        "posterior_mean_coef1": betas * prev.sqrt() / (1 - alphas_cumprod),
        "posterior_mean_coef2": (1 - prev) * (1 - betas).sqrt() / (1 - alphas_cumprod),
    }
    return {k: v.float() for k, v in bufs.items()}


@dataclass
class CheckpointSpec:
    """What to write: component configs plus the optional parts of a real LDM file."""

    family: str                                   # "sd1" | "sd2" (picks the text-encoder slot)
    unet: UNetConfig
    vae: VAEConfig
    dtype: torch.dtype = torch.float32
    with_ema: bool = False                        # add model_ema.* shadows (values differ from model.*)
    with_ldm_extras: bool = True                  # DDPM buffers, model_ema.decay/num_updates
    with_text_encoder: bool = True                # the text tower, sized to the UNet's context_dim
    std_overrides: dict[str, float] = field(default_factory=dict)   # file key -> std of its random values
    seed: int = 0


def _text_encoder_state(spec: CheckpointSpec, device: str = "cpu") -> Mapping[str, Tensor]:
    if not spec.with_text_encoder:
        return {}
    from models.text import random_text_encoder_state_dict
    kind, _ = TEXT_SLOT[spec.family]
    full = text_encoder_config(spec.family)
    width = None if spec.unet.context_dim == full.hidden_size else spec.unet.context_dim
    return random_text_encoder_state_dict(kind, text_encoder_config(spec.family, width), seed=spec.seed,
                                          dtype=spec.dtype, device=device)


def checkpoint_tensors(spec: CheckpointSpec, *, layout_only: bool = False) -> tuple[Layout, Callable[[str], Tensor]]:
    """The file's layout and a function that makes any one tensor on demand (`layout_only`: nothing is
    allocated, the text tower is built on the meta device and `make` must not be called)."""
    unet = module_layout(UNetModel, spec.unet, "model.diffusion_model.")
    vae = module_layout(AutoencoderKL, spec.vae, "first_stage_model.")
    text_state = _text_encoder_state(spec, "meta" if layout_only else "cpu")
    text = {TEXT_SLOT[spec.family][1] + k: v for k, v in text_state.items()}
    extras = {**ddpm_buffers(), "model_ema.decay": torch.tensor(0.9999),
              "model_ema.num_updates": torch.tensor(0, dtype=torch.int32)} if spec.with_ldm_extras else {}
    layout: Layout = {k: (s, spec.dtype) for k, s in {**unet, **vae}.items()}
    if spec.with_ema:
        layout.update({ema_key(k): (s, spec.dtype) for k, s in unet.items()})
    layout.update({k: (tuple(t.shape), t.dtype) for k, t in {**text, **extras}.items()})
    fixed = {**text, **extras}

    def make(name: str) -> Tensor:
        if name in fixed:
            return fixed[name]
        shape, dtype = layout[name]
        return random_tensor(name, shape, dtype, spec.seed, spec.std_overrides.get(name))
    return layout, make


def write_safetensors_streaming(path: str | Path, layout: Layout, make: Callable[[str], Tensor],
                                metadata: dict[str, str] | None = None) -> None:
    """Write a .safetensors file one tensor at a time (format: github.com/huggingface/safetensors#format)."""
    header: dict[str, object] = {"__metadata__": dict(metadata or {"format": "pt"})}
    offset = 0
    names = sorted(layout)
    for name in names:
        shape, dtype = layout[name]
        nbytes = math.prod(shape) * torch.empty((), dtype=dtype).element_size()
        header[name] = {"dtype": SAFETENSORS_NAMES[dtype], "shape": list(shape), "data_offsets": [offset, offset + nbytes]}
        offset += nbytes
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)                                 # data section starts 8-byte aligned
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(raw)))
        f.write(raw)
        for name in names:
            shape, dtype = layout[name]
            t = make(name).to(dtype).reshape(-1).contiguous()
            if t.numel() != math.prod(shape):
                raise ValueError(f"{name}: made {t.numel()} values for shape {shape}")
            f.write(t.view(torch.uint8).numpy().tobytes())


def write_random_checkpoint(path: str | Path, spec: CheckpointSpec) -> Path:
    """Write a random-weight LDM checkpoint; the format follows the suffix (.safetensors or .ckpt/.pt)."""
    path = Path(path)
    layout, make = checkpoint_tensors(spec)
    if path.suffix == ".safetensors":
        write_safetensors_streaming(path, layout, make)
    else:
        torch.save({"state_dict": {k: make(k).to(layout[k][1]) for k in sorted(layout)}, "global_step": 0}, path)
    return path


def write_demo_checkpoint(path: str | Path, dtype: torch.dtype = torch.float16, seed: int = 0) -> Path:
    """A full-size SD1.5-layout checkpoint with random weights (2.1 GB in fp16), streamed to disk: the
    model the server writes on first start so that a fresh install can run a workflow end to end."""
    return write_random_checkpoint(path, CheckpointSpec("sd1", sd15_unet_config(), VAEConfig(), dtype=dtype,
                                                        seed=seed))


def write_random_vae(path: str | Path, config: VAEConfig, dtype: torch.dtype = torch.float32, seed: int = 0) -> Path:
    """A standalone VAE file (keys `encoder.*`, `decoder.*`, `quant_conv.*`), like vae-ft-mse-840000."""
    shapes = module_layout(AutoencoderKL, config, "")
    layout = {k: (s, dtype) for k, s in shapes.items()}
    write_safetensors_streaming(path, layout, lambda n: random_tensor(n, layout[n][0], dtype, seed))
    return Path(path)


# --- SD3 / SD3.5 (MM-DiT) ----------------------------------------------------------------------------------

SD3_TEXT_PREFIXES = {"clip_l": "text_encoders.clip_l.transformer.", "clip_g": "text_encoders.clip_g.transformer.",
                     "t5xxl": "text_encoders.t5xxl.transformer."}


@dataclass
class Sd3CheckpointSpec:
    """An SD3-layout single file: `model.diffusion_model.*` MM-DiT, `first_stage_model.*` 16-channel VAE and
    the bundled text encoders named in `text_encoders` (HF layouts under `text_encoders.<kind>.transformer.`)."""

    mmdit: object                                  # models.mmdit.MMDiTConfig
    vae: VAEConfig
    text_configs: dict = field(default_factory=dict)   # kind -> ClipTextConfig / T5Config
    dtype: torch.dtype = torch.float32
    t5_dtype: torch.dtype | None = None            # e.g. torch.float8_e4m3fn as in the all-in-one fp8 file
    with_vae: bool = True
    seed: int = 0


def tiny_sd3_spec(*, qk_norm: bool = False, dual: tuple[int, ...] = (), text: tuple[str, ...] = ("clip_l", "clip_g", "t5xxl"),
                  **fields) -> Sd3CheckpointSpec:
    """A few-MB SD3 file: 2 joint blocks 128 wide (64 x depth, as the released models), CLIP-L and CLIP-G 32
    wide (pooled 32 + 32 = the MM-DiT's y), T5 64 wide (= its context width), an 8x 16-channel VAE."""
    from models.mmdit import MMDiTConfig
    from models.text import ClipTextConfig
    from models.text.t5 import T5Config
    configs = {"clip_l": ClipTextConfig.of_kind("clip_l", hidden_size=32, num_layers=2, num_heads=1, intermediate_size=64),
               "clip_g": ClipTextConfig.of_kind("clip_g", hidden_size=32, num_layers=2, num_heads=1, intermediate_size=64,
                                                projection_dim=32),
               "t5xxl": T5Config(d_model=64, d_kv=16, num_heads=4, d_ff=96, num_layers=2)}
    mmdit = MMDiTConfig(depth=2, hidden_size=128, num_heads=2, context_in_dim=64, adm_in_dim=64, pos_embed_max_size=32,
                        qk_norm=qk_norm, dual_attention_blocks=dual)
    vae = VAEConfig(ch=32, ch_mult=(1, 2, 2, 2), num_res_blocks=1, z_channels=16, embed_dim=16, has_quant_conv=False)
    return Sd3CheckpointSpec(mmdit, vae, {k: configs[k] for k in text}, **fields)


def sd3_text_state(kind: str, config, seed: int = 0, dtype: torch.dtype = torch.float32, *,
                   with_embed_tokens_copy: bool = True) -> dict[str, Tensor]:
    """One text tower's random weights in the layout SD3 files store (prefix stripped)."""
    if kind == "t5xxl":
        from models.text.t5 import random_t5_state_dict
        return random_t5_state_dict(config, seed=seed, dtype=dtype, with_embed_tokens_copy=with_embed_tokens_copy)
    from models.text import random_text_encoder_state_dict
    state = random_text_encoder_state_dict(kind, config, seed=seed, dtype=dtype)
    state.pop("text_model.embeddings.position_ids", None)       # SD3's bundled CLIPs carry none
    return state


def sd3_checkpoint_tensors(spec: Sd3CheckpointSpec) -> tuple[Layout, Callable[[str], Tensor]]:
    from models.mmdit import MMDiT
    layout: Layout = {k: (s, spec.dtype) for k, s in module_layout(MMDiT, spec.mmdit, "model.diffusion_model.").items()}
    if spec.with_vae:
        layout.update({k: (s, spec.dtype) for k, s in module_layout(AutoencoderKL, spec.vae, "first_stage_model.").items()})
    fixed: dict[str, Tensor] = {}
    t5_keys: dict[str, str] = {}                   # T5 is made tensor by tensor (4.9 B parameters at full size)
    for kind, config in spec.text_configs.items():
        dtype = spec.t5_dtype if kind == "t5xxl" and spec.t5_dtype is not None else spec.dtype
        if kind == "t5xxl":
            from models.text.t5 import T5EncoderModel
            with torch.device("meta"):
                shapes = {k: tuple(v.shape) for k, v in T5EncoderModel(config).state_dict().items()}
            shapes["encoder.embed_tokens.weight"] = shapes["shared.weight"]
            for k, shape in shapes.items():
                layout[SD3_TEXT_PREFIXES[kind] + k] = (shape, dtype)
                t5_keys[SD3_TEXT_PREFIXES[kind] + k] = "shared.weight" if k == "encoder.embed_tokens.weight" else k
            continue
        for k, t in sd3_text_state(kind, config, spec.seed, torch.float32).items():
            fixed[SD3_TEXT_PREFIXES[kind] + k] = t.to(dtype)
    layout.update({k: (tuple(t.shape), t.dtype) for k, t in fixed.items()})

    def make(name: str) -> Tensor:
        if name in fixed:
            return fixed[name]
        if name in t5_keys:                        # the values random_t5_state_dict gives
            key = t5_keys[name]
            return random_tensor(key, layout[name][0], torch.float32, spec.seed,
                                 1.0 if key == "shared.weight" else None).to(layout[name][1])
        shape, dtype = layout[name]
        return random_tensor(name, shape, dtype, spec.seed, 0.5 if name.endswith("pos_embed") else None)
    return layout, make


def write_random_sd3_checkpoint(path: str | Path, spec: Sd3CheckpointSpec) -> Path:
    layout, make = sd3_checkpoint_tensors(spec)
    write_safetensors_streaming(path, layout, make)
    return Path(path)


def write_random_text_encoder(path: str | Path, kind: str, config, dtype: torch.dtype = torch.float32,
                              seed: int = 0) -> Path:
    """A standalone text-encoder file (clip_l / clip_g / t5xxl, as in models/text_encoders). T5 is made
    tensor by tensor (the full-size T5-XXL is 4.7 B parameters), with the values random_t5_state_dict gives."""
    if kind == "t5xxl":
        from models.text.t5 import T5EncoderModel
        with torch.device("meta"):
            shapes = {k: tuple(v.shape) for k, v in T5EncoderModel(config).state_dict().items()}
        write_safetensors_streaming(path, {k: (s, dtype) for k, s in shapes.items()}, lambda n: random_tensor(
            n, shapes[n], torch.float32, seed, std=1.0 if n == "shared.weight" else None))
        return Path(path)
    state = sd3_text_state(kind, config, seed, torch.float32, with_embed_tokens_copy=False)
    layout = {k: (tuple(t.shape), dtype) for k, t in state.items()}
    write_safetensors_streaming(path, layout, lambda n: state[n])
    return Path(path)


# --- SDXL-family layouts -----------------------------------------------------------------------------------
# Full-size UNet configs. Base: Stability's sd_xl_base.yaml (generative-models configs/inference), which the
# tests check against the sd_xl_base_1.0 manifest. Refiner: sd_xl_refiner.yaml (model_channels 384,
# channel_mult 1,2,4,4, transformer depth 4, context 1280, adm 2560). SSD-1B and Segmind Vega: the depth
# lists ComfyUI's model_detection records for them (SSD_1B / Segmind_Vega unet configs; ComfyUI pops its
# output list from the end, so output_blocks.0 is its last entry), consistent with
# the segmind/SSD-1B and segmind/Segmind-Vega diffusers configs (transformer_layers_per_block 2,4 / 1,2 on
# the attention levels; mid block without attention).
_SDXL_COMMON = dict(num_heads=-1, head_dim=64, use_linear_in_transformer=True)
SDXL_UNET_CONFIGS = {
    "base": UNetConfig(model_channels=320, channel_mult=(1, 2, 4), num_res_blocks=(2, 2, 2),
                       transformer_depth=(0, 0, 2, 2, 10, 10), transformer_depth_middle=10,
                       transformer_depth_output=(10, 10, 10, 2, 2, 2, 0, 0, 0), context_dim=2048,
                       adm_in_channels=2816, **_SDXL_COMMON),
    "refiner": UNetConfig(model_channels=384, channel_mult=(1, 2, 4, 4), num_res_blocks=(2, 2, 2, 2),
                          transformer_depth=(0, 0, 4, 4, 4, 4, 0, 0), transformer_depth_middle=4,
                          transformer_depth_output=(0, 0, 0, 4, 4, 4, 4, 4, 4, 0, 0, 0), context_dim=1280,
                          adm_in_channels=2560, **_SDXL_COMMON),
    "ssd1b": UNetConfig(model_channels=320, channel_mult=(1, 2, 4), num_res_blocks=(2, 2, 2),
                        transformer_depth=(0, 0, 2, 2, 4, 4), transformer_depth_middle=-1,
                        transformer_depth_output=(4, 4, 10, 2, 1, 1, 0, 0, 0), context_dim=2048,
                        adm_in_channels=2816, **_SDXL_COMMON),
    "vega": UNetConfig(model_channels=320, channel_mult=(1, 2, 4), num_res_blocks=(2, 2, 2),
                       transformer_depth=(0, 0, 1, 1, 2, 2), transformer_depth_middle=-1,
                       transformer_depth_output=(2, 2, 2, 1, 1, 1, 0, 0, 0), context_dim=2048,
                       adm_in_channels=2816, **_SDXL_COMMON),
}
SDXL_VAE_CONFIG = VAEConfig()          # the SD VAE layout (ch 128, mults 1,2,4,4), retrained weights


def sdxl_text_configs():
    """(CLIP-L, bigG) full-size configs as SDXL files store them."""
    from models.text import ClipTextConfig
    return (ClipTextConfig.of_kind("clip_l"),
            ClipTextConfig.of_kind("open_clip_g", hidden_size=1280, num_layers=32, num_heads=20,
                                   intermediate_size=5120, projection_dim=1280))


def sdxl_layout(unet: UNetConfig, *, refiner: bool = False, text: tuple | None = None,
                vae: VAEConfig = SDXL_VAE_CONFIG, dtype: torch.dtype = torch.float16) -> Layout:
    """{key: (shape, dtype)} of an SDXL-family single-file checkpoint (nothing allocated). `text`: the
    (CLIP-L, bigG) configs, full size unless given; the refiner stores bigG alone at embedders.0."""
    from models.text import random_text_encoder_state_dict
    clip_l, big_g = text or sdxl_text_configs()
    towers = ([("conditioner.embedders.0.model.", "open_clip_g", big_g)] if refiner else
              [("conditioner.embedders.0.transformer.", "clip_l", clip_l),
               ("conditioner.embedders.1.model.", "open_clip_g", big_g)])
    layout: Layout = {k: (s, dtype) for k, s in {**module_layout(UNetModel, unet, "model.diffusion_model."),
                                                  **module_layout(AutoencoderKL, vae, "first_stage_model.")}.items()}
    for prefix, kind, config in towers:
        for k, t in random_text_encoder_state_dict(kind, config, device="meta", dtype=dtype).items():
            layout[prefix + k] = (tuple(t.shape), t.dtype)
    return layout


def tiny_sdxl_unet_config(*, refiner: bool = False, in_channels: int = 4) -> UNetConfig:
    """A few-MB UNet in SDXL's layout: no attention at level 0, linear proj, head width 64, label_emb at
    the real width (so detection takes the real path): 2816 base / 2560 refiner."""
    return UNetConfig(in_channels=in_channels, model_channels=32, channel_mult=(1, 2, 2), num_res_blocks=(1, 1, 1),
                      transformer_depth=(0, 1, 2), transformer_depth_middle=1,
                      transformer_depth_output=(2, 2, 1, 1, 0, 0), context_dim=32 if refiner else 64,
                      adm_in_channels=2560 if refiner else 2816, **_SDXL_COMMON)


def tiny_sdxl_text_configs():
    """(CLIP-L, bigG) 2-layer towers 32 wide; bigG keeps the real 1280-wide projection (the pooled width)."""
    clip_l, big_g = sdxl_text_configs()
    small = dict(hidden_size=32, num_layers=2, num_heads=1, intermediate_size=64)
    return replace(clip_l, **small), replace(big_g, **small, projection_dim=1280)


def write_sdxl_checkpoint(path: str | Path, unet: UNetConfig, *, refiner: bool = False, text: tuple | None = None,
                          vae: VAEConfig | None = None, dtype: torch.dtype = torch.float32, seed: int = 0,
                          extra_keys: Mapping[str, Tensor] | None = None) -> Path:
    """An SDXL-family single-file checkpoint with random weights, streamed (full size works: nothing is
    held but one tensor). `extra_keys`: marker tensors such as `v_pred` / `ztsnr`."""
    from models.text import random_text_encoder_state_dict
    path = Path(path)
    text = text or sdxl_text_configs()
    vae = vae or SDXL_VAE_CONFIG
    layout = sdxl_layout(unet, refiner=refiner, text=text, vae=vae, dtype=dtype)
    extra = dict(extra_keys or {})
    layout.update({k: (tuple(v.shape), v.dtype) for k, v in extra.items()})
    clip_l, big_g = text
    towers = ([("conditioner.embedders.0.model.", "open_clip_g", big_g)] if refiner else
              [("conditioner.embedders.0.transformer.", "clip_l", clip_l),
               ("conditioner.embedders.1.model.", "open_clip_g", big_g)])
    cache: dict[str, dict[str, Tensor]] = {}

    def make(name: str) -> Tensor:
        if name in extra:
            return extra[name]
        for prefix, kind, config in towers:
            if name.startswith(prefix):
                if prefix not in cache:            # one tower at a time (bigG is 1.4 GB in fp16)
                    cache.clear()
                    cache[prefix] = random_text_encoder_state_dict(kind, config, seed=seed, dtype=dtype)
                return cache[prefix][name[len(prefix):]]
        shape, tensor_dtype = layout[name]
        return random_tensor(name, shape, tensor_dtype, seed)
    write_safetensors_streaming(path, layout, make)
    return path


# --- FLUX.1 ------------------------------------------------------------------------------------------------

def tiny_flux_config(*, guidance: bool = True, in_channels: int = 64):
    """A 1 + 2 block FLUX 64 wide (2 heads of 32), taking tiny_sd3_spec's T5 (64) and CLIP-L (32)."""
    from models.flux import FluxConfig
    return FluxConfig(in_channels=in_channels, hidden_size=64, num_heads=2, depth=1, depth_single_blocks=2,
                      context_in_dim=64, vec_in_dim=32, axes_dim=(4, 14, 14), guidance_embed=guidance)


def flux_layout(config, prefix: str = "") -> dict[str, tuple[int, ...]]:
    """{file key: shape} of a FLUX transformer in the BFL layout (the module layout) under `prefix`."""
    from models.flux import Flux
    return module_layout(Flux, config, prefix)


def write_random_flux(path: str | Path, config, *, prefix: str = "", dtype: torch.dtype = torch.float32,
                      scaled_fp8: bool = False, seed: int = 0) -> Path:
    """A FLUX diffusion-model file in the BFL layout. `scaled_fp8`: ComfyUI's scaled fp8 form (2-D weights
    as fp8 e4m3fn with a float32 `.scale_weight` each, a `scaled_fp8` marker); the scale is chosen so the
    dequantised weights are the same random values as in the plain file up to fp8 rounding."""
    shapes = flux_layout(config, prefix)
    layout = {k: (s, dtype) for k, s in shapes.items()}
    scale = 0.05
    if scaled_fp8:
        for k, s in shapes.items():
            if k.endswith(".weight") and len(s) == 2:
                layout[k] = (s, torch.float8_e4m3fn)
                layout[k[: -len(".weight")] + ".scale_weight"] = ((), torch.float32)
        layout[prefix + "scaled_fp8"] = ((0,), torch.float8_e4m3fn)

    def make(name: str) -> Tensor:
        if name.endswith(".scale_weight"):
            return torch.tensor(scale)
        if name == prefix + "scaled_fp8":
            return torch.zeros(0)
        t = random_tensor(name.removeprefix(prefix), layout[name][0], torch.float32, seed)
        return t / scale if scaled_fp8 and layout[name][1] == torch.float8_e4m3fn else t
    write_safetensors_streaming(path, layout, make)
    return Path(path)


def flux_vae_config() -> VAEConfig:
    """The FLUX VAE's layout at a tiny width: 16 latent channels, no quant convs (ae.safetensors)."""
    return VAEConfig(ch=32, ch_mult=(1, 2, 2, 2), num_res_blocks=1, z_channels=16, embed_dim=16, has_quant_conv=False)
# --- control models (ControlNet, T2I-Adapter) in their real file layouts -----------------------------------

CONTROLNET_LAYOUTS = ("control_model", "bare", "diffusers")


def tiny_controlnet_config(family: str = "sd1", hint_channels: int = 3):
    """A ControlNet whose encoder matches `tiny_unet_config(family)` block for block."""
    from models.controlnet import ControlNetConfig
    return ControlNetConfig(unet=tiny_unet_config(family), hint_channels=hint_channels)


def controlnet_file_keys(config, layout: str = "control_model") -> dict[str, str]:
    """{file key: module key} of a ControlNet with `config` saved in `layout` ("control_model":
    lllyasviel's `control_model.*`; "bare": the same names unprefixed; "diffusers": ControlNetModel's)."""
    from models.controlnet import ControlNet
    from models.convert.controlnet import diffusers_controlnet_module_map
    keys = module_layout(ControlNet, config, "")
    if layout == "control_model":
        return {"control_model." + k: k for k in keys}
    if layout == "bare":
        return {k: k for k in keys}
    if layout != "diffusers":
        raise ValueError(f"unknown ControlNet layout {layout!r}; expected one of {CONTROLNET_LAYOUTS}")
    modules = diffusers_controlnet_module_map(config.unet)
    out = {}
    for key in keys:
        if key.startswith(("task_embedding", "transformer_layes.", "spatial_ch_projs.", "control_add_embedding.")):
            out[key.replace(".attn.in_proj.", ".attn.in_proj_")] = key          # nn.MultiheadAttention's names
            continue
        module, _, leaf = key.rpartition(".")
        out[f"{modules[module]}.{leaf}"] = key
    return out


def write_random_controlnet(path: str | Path, config, *, layout: str = "control_model",
                            dtype: torch.dtype = torch.float32, seed: int = 0, is_diff: bool = False) -> Path:
    """A random-weight ControlNet file. Values depend on the module key only, so the same seed gives the
    same network in every layout. `is_diff` adds the `difference` marker of diff ControlNets."""
    from models.controlnet import ControlNet
    shapes = module_layout(ControlNet, config, "")
    keys = controlnet_file_keys(config, layout)
    layout_map: Layout = {k: (shapes[m], dtype) for k, m in keys.items()}
    if is_diff:
        layout_map["difference"] = ((), dtype)

    def make(name: str) -> Tensor:
        if name == "difference":
            return torch.zeros((), dtype=dtype)
        module_key = keys[name]
        return random_tensor(module_key, shapes[module_key], dtype, seed)
    write_safetensors_streaming(path, layout_map, make)
    return Path(path)


CONTROL_LORA_OWN = ("input_hint_block.", "zero_convs.", "middle_block_out.")


def write_random_control_lora(path: str | Path, unet_config, *, rank: int = 4, hint_channels: int = 3,
                              dtype: torch.dtype = torch.float32, seed: int = 0) -> Path:
    """A random control-LoRA file in Stability's layout for a UNet with `unet_config`: the `lora_controlnet`
    marker; `<module>.up` [out, rank(, 1, 1)] / `<module>.down` [rank, in(, k, k)] for every Linear / Conv2d
    weight of the encoder copy; full tensors for biases, norms and the ControlNet's own parts (hint block,
    zero convs, middle_block_out)."""
    from models.controlnet import ControlNet, ControlNetConfig
    shapes = module_layout(ControlNet, ControlNetConfig(unet=unet_config, hint_channels=hint_channels), "")
    layout_map: Layout = {"lora_controlnet": ((), dtype)}
    for key, shape in shapes.items():
        if key.endswith(".weight") and len(shape) >= 2 and not key.startswith(CONTROL_LORA_OWN):
            module = key[:-len(".weight")]
            kernel = tuple(shape[2:])
            layout_map[module + ".up"] = ((shape[0], rank, *(1,) * len(kernel)), dtype)
            layout_map[module + ".down"] = ((rank, shape[1], *kernel), dtype)
        else:
            layout_map[key] = (shape, dtype)

    def make(name: str) -> Tensor:
        if name == "lora_controlnet":
            return torch.zeros((), dtype=dtype)
        std = 0.05 if name.endswith((".up", ".down")) else None
        return random_tensor(name, layout_map[name][0], dtype, seed, std=std)
    write_safetensors_streaming(path, layout_map, make)
    return Path(path)


def tiny_t2i_config(kind: str = "full", hint_channels: int = 3):
    """A T2I-Adapter whose stages fit `tiny_unet_config("sd1")` with 2 res blocks per level: (32, 64, 64)."""
    from models.t2i_adapter import T2IAdapterConfig
    return T2IAdapterConfig(kind=kind, in_channels=hint_channels * 64, channels=(32, 64, 64), num_res_blocks=2)


def t2i_file_keys(config, layout: str = "original") -> dict[str, str]:
    """{file key: module key} of a T2I-Adapter in TencentARC's ("original") or diffusers' layout."""
    from models.t2i_adapter import T2IAdapter
    keys = module_layout(T2IAdapter, config, "")
    if layout == "original":
        return {k: k for k in keys}
    out = {}
    n = config.num_res_blocks
    for key in keys:
        parts = key.split(".")
        if parts[0] == "body" and config.kind == "full":
            stage, j = divmod(int(parts[1]), n)
            rest = ["body", str(stage)] + (parts[2:] if parts[2] == "in_conv" else ["resnets", str(j), *parts[2:]])
        elif parts[0] == "body" and parts[2] == "body":
            rest = ["body", parts[1], "resnets", *parts[3:]]
        else:
            rest = parts
        out["adapter." + ".".join(rest)] = key
    return out


def write_random_t2i_adapter(path: str | Path, config, *, layout: str = "original",
                             dtype: torch.dtype = torch.float32, seed: int = 0) -> Path:
    from models.t2i_adapter import T2IAdapter
    shapes = module_layout(T2IAdapter, config, "")
    keys = t2i_file_keys(config, layout)
    write_safetensors_streaming(path, {k: (shapes[m], dtype) for k, m in keys.items()},
                                lambda name: random_tensor(keys[name], shapes[keys[name]], dtype, seed))
    return Path(path)


# --- SD3.5 ControlNets in Stability AI's layout (models/controlnet_mmdit.py SD35ControlNet) ------------------

SD35_CONTROL_TYPES = {"blur": 0, "canny": 1, "depth": 2}


def sd35_controlnet_config(*, hidden: int = 128, blocks: int = 1, adm: int = 64, hint_channels: int = 16):
    """An SD3.5 ControlNet for a base MM-DiT `hidden` wide (hidden / 64 blocks, 64-wide heads); released:
    hidden 2432 (SD3.5 large), 19 blocks, adm 2048, 16 hint channels."""
    from models.controlnet_mmdit import HEAD_WIDTH, SD35ControlNetConfig
    from models.mmdit import MMDiTConfig
    mmdit = MMDiTConfig(depth=blocks, hidden_size=hidden, num_heads=hidden // HEAD_WIDTH, in_channels=hint_channels,
                        out_channels=hint_channels, adm_in_dim=adm)
    return SD35ControlNetConfig(mmdit=mmdit, base_depth=hidden // HEAD_WIDTH)


def sd35_controlnet_file_keys(config) -> dict[str, str]:
    """{file key: module key} as Stability's released files name them: diffusers' names for the timestep and
    pooled-text embedders (`time_text_embed.*`), the module's own for everything else."""
    from models.controlnet_mmdit import SD35ControlNet
    from models.convert.controlnet_mmdit import _SD35_EMBEDDERS
    to_file = {v: k for k, v in _SD35_EMBEDDERS.items()}
    out = {}
    for key in module_layout(SD35ControlNet, config, ""):
        module, _, leaf = key.rpartition(".")
        out[f"{to_file.get(module, module)}.{leaf}"] = key
    return out


def write_random_sd35_controlnet(path: str | Path, config, *, control_type: str | None = "canny",
                                 dtype: torch.dtype = torch.float32, seed: int = 0) -> Path:
    """A random-weight SD3.5 ControlNet file in Stability's layout, with its `control_type` scalar (None: none)."""
    from models.controlnet_mmdit import SD35ControlNet
    shapes = module_layout(SD35ControlNet, config, "")
    keys = sd35_controlnet_file_keys(config)
    layout: Layout = {k: (shapes[m], dtype) for k, m in keys.items()}
    if control_type is not None:
        layout["control_type"] = ((), dtype)

    def make(name: str) -> Tensor:
        if name == "control_type":
            return torch.tensor(float(SD35_CONTROL_TYPES[control_type]), dtype=dtype)
        return random_tensor(keys[name], shapes[keys[name]], dtype, seed)
    write_safetensors_streaming(path, layout, make)
    return Path(path)


# --- FLUX ControlNets (models/controlnet_flux.py) in their file layouts --------------------------------------

FLUX_CONTROLNET_LAYOUTS = ("diffusers", "xlabs", "mistoline")


def tiny_flux_controlnet_config(*, layout: str = "diffusers", double: int = 1, single: int = 1, union_modes: int = 0,
                                hint_channels: int = 16, guidance: bool = True):
    """A FLUX ControlNet at tiny_flux_config's widths (64 wide, T5 64, CLIP-L 32): InstantX / Union-Pro
    ("diffusers", a latent hint), XLabs ("xlabs") or MistoLine ("mistoline"), both with an RGB hint."""
    from dataclasses import replace as _replace

    from models.controlnet_flux import FluxControlNetConfig
    flux = _replace(tiny_flux_config(guidance=guidance), depth=double, depth_single_blocks=single)
    if layout == "diffusers":
        return FluxControlNetConfig(flux, "latent", hint_channels, union_modes)
    return FluxControlNetConfig(flux, "pixels" if layout == "xlabs" else "mistoline", 3)


def write_random_flux_controlnet(path: str | Path, config, *, layout: str = "diffusers",
                                 dtype: torch.dtype = torch.float32, seed: int = 0) -> Path:
    """A random-weight FLUX ControlNet file: diffusers' FluxControlNetModel names (InstantX, Shakker-Labs), XLabs'
    (the module's BFL names) or MistoLine's (`single_controlnet_blocks`). Values per module key, so the layouts
    of one config and seed hold the same weights; streamed (a full-width file never sits in RAM whole)."""
    from models.controlnet_flux import FluxControlNet
    from models.convert.controlnet_flux import instantx_file_state
    shapes = module_layout(FluxControlNet, config, "")
    names = list(shapes)
    # which module tensor rows each file tensor holds: a [rows, 2] tag (module index, row) renamed / split
    tags = {k: torch.stack([torch.full((s[0] if s else 1,), i), torch.arange(s[0] if s else 1)], dim=1)
            for i, (k, s) in enumerate(shapes.items())}
    if layout == "diffusers":
        tags = instantx_file_state(tags, config.flux.hidden_size)
    elif layout == "mistoline":
        tags = {("single_controlnet_blocks." + k[len("controlnet_single_blocks."):]
                 if k.startswith("controlnet_single_blocks.") else k): v for k, v in tags.items()}
    sources = {k: (names[int(t[0, 0])], int(t[0, 1]), t.shape[0]) for k, t in tags.items()}
    file_layout: Layout = {k: ((rows,) + shapes[m][1:] if shapes[m] else (), dtype)
                           for k, (m, _, rows) in sources.items()}
    made: dict[str, Tensor] = {}

    def make(name: str) -> Tensor:
        module_key, start, rows = sources[name]
        if module_key not in made:
            if len(made) >= 3:                    # the parts of one fused tensor are near each other
                made.clear()
            made[module_key] = random_tensor(module_key, shapes[module_key], torch.float32, seed)
        t = made[module_key]
        return t[start:start + rows] if t.ndim else t
    write_safetensors_streaming(path, file_layout, make)
    return Path(path)
