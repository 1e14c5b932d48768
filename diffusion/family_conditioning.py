"""Conditioning values of families Plexus does not load yet, as ComfyUI attaches them (comfy_extras'
nodes_lumina2, nodes_pixart, nodes_lt, nodes_stable_cascade): each is the text encoding or conditioning
it is given, plus the keys that family's model reads.

- Lumina 2 (Alpha-VLLM, "Lumina-Image 2.0", 2025) was trained with a system prompt before the user's,
  joined by " <Prompt Start> "; LUMINA2_SYSTEM_PROMPTS are its two published ones.
- PixArt-alpha (Chen et al. 2023) takes the target size beside the T5 encoding ("width", "height").
- LTX-Video takes the clip's frame rate ("frame_rate") on both conditionings.
- Stable Cascade's stage B takes stage C's latent as "stable_cascade_prior".
- Stable Diffusion x4 upscaler (Stability's SD 2 x4 upscaler): the low-resolution image, in [-1, 1] and
  channels first, at a quarter of the target size ("concat_image", center crop + bilinear), with its
  "noise_augmentation"; the latent is [B, 4, H/4, W/4] of the target size (its VAE downsamples by 4).
- LTX-Video's guide frames (LTXVAddGuide) are appended at the end of the latent's frame axis, their
  positions in "keyframe_idxs" ([N, ...], column 0 the frame index); LTXVCropGuides removes as many frames
  as there are distinct guide frames and clears "keyframe_idxs", keeping the noise mask in step.
"""
from __future__ import annotations

import torch
from torch import Tensor

from execution.errors import PlexusError
from imaging.resize import upscale

from .conditioning import encode_text, set_values

LUMINA2_SYSTEM_PROMPTS = {
    "superior": "You are an assistant designed to generate superior images with the superior degree of "
                "image-text alignment based on textual prompts or user prompts.",
    "alignment": "You are an assistant designed to generate high-quality images with the highest degree of "
                 "image-text alignment based on textual prompts.",
}


def lumina2_prompt(system_prompt: str, user_prompt: str) -> str:
    return f"{LUMINA2_SYSTEM_PROMPTS[system_prompt]} <Prompt Start> {user_prompt}"


def encode_lumina2(clip, system_prompt: str, user_prompt: str) -> list:
    return encode_text(clip, lumina2_prompt(system_prompt, user_prompt))


def encode_pixart(clip, text: str, width: int, height: int) -> list:
    return set_values(encode_text(clip, text), {"width": width, "height": height})


def with_frame_rate(positive: list, negative: list, frame_rate: float) -> tuple[list, list]:
    return set_values(positive, {"frame_rate": frame_rate}), set_values(negative, {"frame_rate": frame_rate})


def with_stable_cascade_prior(conditioning: list, stage_c: Tensor) -> list:
    return set_values(conditioning, {"stable_cascade_prior": stage_c})


def _first_value(conditioning: list, key: str):
    for entry in conditioning:
        if key in entry[1]:
            return entry[1][key]
    return None


def crop_ltxv_guides(positive: list, negative: list, latent: dict) -> tuple[list, list, dict]:
    samples = latent["samples"].clone()
    mask = latent.get("noise_mask")
    if mask is None:
        mask = torch.ones((samples.shape[0], 1, samples.shape[2], 1, 1), dtype=torch.float32)
    else:
        mask = mask.clone()
    keyframes = _first_value(positive, "keyframe_idxs")
    count = 0 if keyframes is None else int(torch.unique(keyframes[:, 0]).shape[0])
    if count == 0:
        return positive, negative, {"samples": samples, "noise_mask": mask}
    cleared = {"keyframe_idxs": None}
    return (set_values(positive, cleared), set_values(negative, cleared),
            {"samples": samples[:, :, :-count], "noise_mask": mask[:, :, :-count]})


def x4_upscale_conditioning(images: Tensor, positive: list, negative: list, scale_ratio: float,
                            noise_augmentation: float) -> tuple[list, list, dict]:
    width = max(1, round(images.shape[-2] * scale_ratio))
    height = max(1, round(images.shape[-3] * scale_ratio))
    if width < 4 or height < 4:
        raise PlexusError("invalid_input", "SD_4XUpscale_Conditioning: the target is under 4 pixels wide or high",
                          f"{images.shape[-2]}x{images.shape[-3]} times scale_ratio {scale_ratio} gives "
                          f"{width}x{height}; raise scale_ratio")
    pixels = upscale(images.movedim(-1, 1) * 2.0 - 1.0, width // 4, height // 4, "bilinear", "center")
    values = {"concat_image": pixels, "noise_augmentation": noise_augmentation}
    latent = {"samples": torch.zeros([images.shape[0], 4, height // 4, width // 4])}
    return set_values(positive, values), set_values(negative, values), latent
