"""Which dtype each model part computes in on a given device, and why.

The policy is a pure function of the device's capabilities, the start-up settings and what the
model says it tolerates, so it is tested with made-up devices. Every choice carries a reason in
plain words for the start-up log and `/system_stats`.

Defaults:
- diffusion model (UNet/DiT): fp16 on GPUs with fast fp16, else bf16 where supported, else fp32;
  on CPUs with native bf16 (avx512_bf16 / amx_bf16) bf16, about twice the fp32 speed there.
- text encoders: fp16 on GPUs with fast fp16, else fp32 (they run once per prompt).
- VAE: bf16 where the device has it (GPUs with bf16, and CPUs with native bf16), else fp32; never
  fp16 unless the model says it is safe, because the SD1.x/SD2.x VAE decoder overflows fp16 and returns
  NaN (the reason SDXL needed madebyollin's "sdxl-vae-fp16-fix"); bf16 has fp32's exponent range, so it
  cannot overflow where fp32 does not. On a CPU with avx512_bf16 / amx_bf16, a 512x512 decode of the
  SD1.5 VAE in bf16 (with diffusion/vae_ops.py's channels-last inputs) takes 0.45x the time of fp32
  (bench/vae.py, 2 cores: 7.1 s against 15.8 s), for an image error of 0.0024 mean, 0.02 max on the 0..1
  scale (0.6 and 5 8-bit steps; random weights). `--fp32-vae` or `--force-fp32` keep it in fp32.
- attention: scores in fp32 ("upcast") when a model asks for it and computes in fp16 (SD2.x).
"""
from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from model_management.devices import DeviceCaps
from model_management.settings import MemorySettings


class ModelPart(enum.Enum):
    DIFFUSION = "diffusion_model"
    TEXT_ENCODER = "text_encoder"
    VAE = "vae"


@dataclass(frozen=True)
class DtypeChoice:
    dtype: torch.dtype
    reason: str

    def to_json(self) -> dict[str, str]:
        return {"dtype": str(self.dtype).removeprefix("torch."), "reason": self.reason}


def choose_dtype(part: ModelPart, caps: DeviceCaps, settings: MemorySettings, *,
                 model_dtypes: Sequence[torch.dtype] | None = None,
                 is_fp16_safe: bool | None = None) -> DtypeChoice:
    """The compute dtype for one model part.

    `model_dtypes`: the dtypes the architecture runs correctly in (None = any).
    `is_fp16_safe`: whether activations stay inside fp16's range (default: False for the VAE)."""
    if is_fp16_safe is None:
        is_fp16_safe = part is not ModelPart.VAE
    allowed = set(model_dtypes) if model_dtypes else {torch.float16, torch.bfloat16, torch.float32}
    is_gpu = caps.type != "cpu"

    if settings.force_fp32:
        return DtypeChoice(torch.float32, "--force-fp32")
    if part is ModelPart.VAE and settings.fp32_vae:
        return DtypeChoice(torch.float32, "--fp32-vae")
    if part is ModelPart.DIFFUSION and settings.bf16_unet:
        return DtypeChoice(torch.bfloat16, "--bf16-unet")
    if settings.force_fp16 and (is_fp16_safe or part is not ModelPart.VAE):
        return DtypeChoice(torch.float16, "--force-fp16")

    if part is ModelPart.VAE:
        if is_gpu and is_fp16_safe and caps.has_fast_fp16 and torch.float16 in allowed:
            return DtypeChoice(torch.float16, "the model marks its VAE as fp16-safe")
        if is_gpu and caps.has_bf16 and torch.bfloat16 in allowed:
            return DtypeChoice(torch.bfloat16, f"fp16 overflows in this VAE (NaN); {caps.type} has bf16, "
                                               "which has fp32's range")
        if is_gpu:
            return DtypeChoice(torch.float32, f"fp16 overflows in this VAE (NaN) and {caps.type} has no bf16")
        if caps.has_bf16 and torch.bfloat16 in allowed:
            return DtypeChoice(torch.bfloat16, f"CPU with native bf16 ({caps.bf16_reason}): bf16 has fp32's "
                                               "range (no fp16 overflow) and decodes in under half fp32's "
                                               "time (bench/vae.py); --fp32-vae keeps fp32")
        return DtypeChoice(torch.float32, f"CPU without native bf16 ({caps.bf16_reason}): the VAE stays in fp32")

    if is_gpu:
        if caps.has_fast_fp16 and torch.float16 in allowed and is_fp16_safe:
            return DtypeChoice(torch.float16, f"{caps.type} has fast fp16 ({caps.bf16_reason or caps.name})")
        if caps.has_bf16 and torch.bfloat16 in allowed:
            why = "fp16 is unsafe for this model" if not is_fp16_safe else "no fast fp16"
            return DtypeChoice(torch.bfloat16,
                               f"{why}; {caps.type} has bf16 ({caps.bf16_reason or caps.name})")
        return DtypeChoice(torch.float32, f"{caps.type} has neither fast fp16 nor bf16 ({caps.bf16_reason})")

    if part is ModelPart.DIFFUSION and caps.has_bf16 and torch.bfloat16 in allowed:
        return DtypeChoice(torch.bfloat16,
                           f"CPU with native bf16 ({caps.bf16_reason}): about twice fp32's speed")
    if part is ModelPart.DIFFUSION:
        return DtypeChoice(torch.float32, f"CPU without native bf16 ({caps.bf16_reason})")
    return DtypeChoice(torch.float32, "CPU: text encoders run once per prompt, kept exact in fp32")


def choose_attention_upcast(compute_dtype: torch.dtype, is_upcast_requested: bool) -> tuple[bool, str]:
    """Whether attention scores are computed in fp32 (SD2.x asks for it: its logits overflow fp16)."""
    if not is_upcast_requested:
        return False, "the model does not need it"
    if compute_dtype is torch.float16:
        return True, "the model's attention logits overflow fp16 (SD2.x)"
    return False, f"not needed in {str(compute_dtype).removeprefix('torch.')}"


def choose_dtypes(caps: DeviceCaps, settings: MemorySettings) -> dict[ModelPart, DtypeChoice]:
    """The defaults for every part on one device: what the start-up log and `/system_stats` show."""
    return {part: choose_dtype(part, caps, settings) for part in ModelPart}


def describe_dtypes(choices: dict[ModelPart, DtypeChoice]) -> list[str]:
    return [f"{part.value}: {str(c.dtype).removeprefix('torch.')} ({c.reason})"
            for part, c in choices.items()]
