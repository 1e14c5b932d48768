"""The conditioning of the image-to-video and novel-view models: Stable Video Diffusion (Blattmann et al.
2023, img2vid), Stable Zero123 (Liu et al. 2023, "Zero-1-to-3"; Stability's Stable Zero123) and SV3D (Voleti
et al. 2024). Each takes the input image's CLIP vision embedding and its VAE latent:

- positive = [[image_embeds[None], {"concat_latent_image": latent, ...}]], negative the same with zeros;
- Zero123 appends the camera to the embedding: (polar - 90 deg in radians = -elevation, sin azimuth,
  cos azimuth, pi / 2) (Zero-1-to-3, section 3.2, in the polar convention of its code: polar = 90 -
  elevation), per batch item in the batched variant (elevation and azimuth advancing by their increments);
- SV3D carries per-frame elevations and azimuths (a full turn over the frames: 360 / (frames - 1) apart);
- SVD carries motion_bucket_id, fps and augmentation_level; augmentation adds Gaussian noise of that std to
  the pixels before encoding (torch's global generator, as ComfyUI's node).

The image is resized to (width, height) bilinearly after a center crop to that aspect, as ComfyUI's
common_upscale(..., "bilinear", "center"). The empty latent is [frames or batch, 4, height/8, width/8]
(these are SD-VAE models). ComfyUI's comfy_extras/nodes_video_model.py and nodes_stable3d.py do the same.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor

from imaging.resize import upscale

from . import clip_vision, vae_ops


def _pooled_and_latent(vision, vae, image: Tensor, width: int, height: int,
                       augmentation_level: float = 0.0) -> tuple[Tensor, Tensor]:
    pooled = clip_vision.encode_image(vision, image, "center").image_embeds.unsqueeze(0)
    pixels = upscale(image.movedim(-1, 1), width, height, "bilinear", "center").movedim(1, -1)[..., :3]
    if augmentation_level > 0:
        pixels = pixels + torch.randn_like(pixels) * augmentation_level
    return pooled, vae_ops.encode(vae, pixels)


def camera_embedding(elevation: float, azimuth: float) -> Tensor:
    """[1, 1, 4]: (deg2rad(-elevation), sin(azimuth), cos(azimuth), pi / 2), angles in degrees."""
    az = math.radians(azimuth)
    return torch.tensor([[[math.radians(-elevation), math.sin(az), math.cos(az), math.pi / 2]]])


def _empty(count: int, width: int, height: int) -> dict:
    return {"samples": torch.zeros([count, 4, height // 8, width // 8])}


def svd_img2vid(vision, image: Tensor, vae, width: int, height: int, video_frames: int, motion_bucket_id: int,
                fps: int, augmentation_level: float) -> tuple[list, list, dict]:
    pooled, latent = _pooled_and_latent(vision, vae, image, width, height, augmentation_level)
    extra = {"motion_bucket_id": motion_bucket_id, "fps": fps, "augmentation_level": augmentation_level}
    positive = [[pooled, {**extra, "concat_latent_image": latent}]]
    negative = [[torch.zeros_like(pooled), {**extra, "concat_latent_image": torch.zeros_like(latent)}]]
    return positive, negative, _empty(video_frames, width, height)


def zero123(vision, image: Tensor, vae, width: int, height: int, batch_size: int, elevation: float,
            azimuth: float, elevation_increment: float | None = None,
            azimuth_increment: float | None = None) -> tuple[list, list, dict]:
    """StableZero123_Conditioning (no increments: one camera for the whole batch) and its batched variant."""
    pooled, latent = _pooled_and_latent(vision, vae, image, width, height)
    if elevation_increment is None:
        cam = camera_embedding(elevation, azimuth).to(pooled.dtype).repeat(pooled.shape[0], 1, 1)
        cond = torch.cat([pooled, cam], dim=-1)
    else:
        cameras = []
        for _ in range(batch_size):      # accumulated as ComfyUI does, so the floats are the same
            cameras.append(camera_embedding(elevation, azimuth))
            elevation += elevation_increment
            azimuth += azimuth_increment
        cams = torch.cat(cameras).to(pooled.dtype)
        repeated = pooled.repeat(math.ceil(batch_size / pooled.shape[0]), 1, 1)[:batch_size]
        cond = torch.cat([repeated, cams], dim=-1)
    positive = [[cond, {"concat_latent_image": latent}]]
    negative = [[torch.zeros_like(pooled), {"concat_latent_image": torch.zeros_like(latent)}]]
    return positive, negative, _empty(batch_size, width, height)


def sv3d(vision, image: Tensor, vae, width: int, height: int, video_frames: int,
         elevation: float) -> tuple[list, list, dict]:
    pooled, latent = _pooled_and_latent(vision, vae, image, width, height)
    step = 360 / (max(video_frames, 2) - 1)
    azimuths, azimuth = [], 0.0
    for _ in range(video_frames):
        azimuths.append(azimuth)
        azimuth += step
    cameras = {"elevation": [elevation] * video_frames, "azimuth": azimuths}
    positive = [[pooled, {"concat_latent_image": latent, **cameras}]]
    negative = [[torch.zeros_like(pooled), {"concat_latent_image": torch.zeros_like(latent), **cameras}]]
    return positive, negative, _empty(video_frames, width, height)
