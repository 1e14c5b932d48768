"""Conditioning values of families Plexus does not load yet, as ComfyUI attaches them (comfy_extras'
nodes_lumina2, nodes_pixart, nodes_lt, nodes_stable_cascade): each is the text encoding or conditioning
it is given, plus the keys that family's model reads.

- Lumina 2 (Alpha-VLLM, "Lumina-Image 2.0", 2025) was trained with a system prompt before the user's,
  joined by " <Prompt Start> "; LUMINA2_SYSTEM_PROMPTS are its two published ones.
- PixArt-alpha (Chen et al. 2023) takes the target size beside the T5 encoding ("width", "height").
- LTX-Video takes the clip's frame rate ("frame_rate") on both conditionings.
- Stable Cascade's stage B takes stage C's latent as "stable_cascade_prior".
"""
from __future__ import annotations

from torch import Tensor

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
