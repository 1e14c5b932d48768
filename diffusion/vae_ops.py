"""VAE encode / decode between IMAGE ([B, H, W, 3] floats in [0, 1], channels last) and LATENT
({"samples": raw VAE latents [B, C, h, w]}), whole or in tiles, with ComfyUI's inpainting preparations.

Whole-image calls fall back to tiles when memory runs out (model_management's VAE fall-back chain:
tiles, then a partial load); results always come back as float32 on the CPU, contiguous.

On the CPU the model's inputs are channels-last (`_in_model_layout`): oneDNN then runs every convolution
in its native NHWC layout and the activations stay channels-last through the network. Measured with
bench/vae.py on the full-size SD1.5 VAE, 512x512, 2-core AVX-512 BF16 CPU: decode 8.5 -> 7.1 s in bf16
(which with bf16 is 0.45x the contiguous fp32 decode, against 0.54x without it) and 15.8 -> 14.2 s in
fp32; encode 10-18% faster. The weights stay as the model manager loaded them: converting them to
channels-last too gained nothing beyond noise. Other devices get contiguous tensors (not measured there).
"""
from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from model_management import VAE_FALLBACKS, with_oom_fallbacks
from model_management.oom import IS_VAE_TILED, VRAM_MODE

from .objects import Autoencoder

DEFAULT_TILE_PX = 512
DEFAULT_OVERLAP_PX = 64


def _load(vae: Autoencoder, options: dict[str, Any]) -> None:
    vae.manager.load_models_for([vae], vram_mode=options.get(VRAM_MODE))


def crop_to_multiple(pixels: Tensor, multiple: int) -> Tensor:
    """Center-crop H and W down to multiples of the VAE's downscale factor (ComfyUI VAE.encode)."""
    h, w = (pixels.shape[1] // multiple) * multiple, (pixels.shape[2] // multiple) * multiple
    if (h, w) == tuple(pixels.shape[1:3]):
        return pixels
    y0, x0 = (pixels.shape[1] % multiple) // 2, (pixels.shape[2] % multiple) // 2
    return pixels[:, y0:y0 + h, x0:x0 + w, :]


def _in_model_layout(x: Tensor) -> Tensor:
    """The memory format the VAE runs fastest in on x's device: channels-last on the CPU (module docstring)."""
    if x.device.type == "cpu":
        return x.contiguous(memory_format=torch.channels_last)
    return x.contiguous()


def _to_model_images(vae: Autoencoder, pixels: Tensor) -> Tensor:
    pixels = crop_to_multiple(pixels[..., :3], vae.downscale_ratio)
    images = pixels.movedim(-1, 1).to(device=vae.manager.device, dtype=torch.float32) * 2.0 - 1.0
    return _in_model_layout(images)                                                     # [B, 3, H, W] in [-1, 1]


def _to_latents(vae: Autoencoder, latents: Tensor) -> Tensor:
    return _in_model_layout(latents.to(vae.manager.device))                             # [B, C, h, w]


def _to_image(decoded: Tensor) -> Tensor:
    image = ((decoded.float() + 1.0) / 2.0).clamp(0.0, 1.0).movedim(1, -1)          # [B, H, W, 3]
    return image.cpu().contiguous()                 # free when the decoder ran channels-last (the CPU)


def encode(vae: Autoencoder, pixels: Tensor) -> Tensor:
    """IMAGE -> raw latents (the posterior mean), tiled automatically when memory is short."""
    images = _to_model_images(vae, pixels)

    def run(options: dict[str, Any]) -> Tensor:
        _load(vae, options)
        with torch.inference_mode():
            if options.get(IS_VAE_TILED):
                return vae.module.encode_tiled(images, DEFAULT_TILE_PX, DEFAULT_OVERLAP_PX)
            return vae.module.encode(images)

    latents = with_oom_fallbacks(run, VAE_FALLBACKS, free=vae.manager.free, what="VAE encode")
    return latents.float().cpu().contiguous()


def decode(vae: Autoencoder, latents: Tensor) -> Tensor:
    """Raw latents -> IMAGE, tiled automatically when memory is short."""
    f = vae.downscale_ratio

    def run(options: dict[str, Any]) -> Tensor:
        _load(vae, options)
        z = _to_latents(vae, latents)
        with torch.inference_mode():
            if options.get(IS_VAE_TILED):
                return vae.module.decode_tiled(z, DEFAULT_TILE_PX // f, DEFAULT_OVERLAP_PX // f)
            return vae.module.decode(z)

    return _to_image(with_oom_fallbacks(run, VAE_FALLBACKS, free=vae.manager.free, what="VAE decode"))


def decode_tiled(vae: Autoencoder, latents: Tensor, tile_px: int = DEFAULT_TILE_PX,
                 overlap_px: int = DEFAULT_OVERLAP_PX) -> Tensor:
    """VAEDecodeTiled: tiles of `tile_px` image pixels overlapping by `overlap_px` (at most a quarter tile)."""
    if tile_px < overlap_px * 4:
        overlap_px = tile_px // 4
    f = vae.downscale_ratio
    _load(vae, {})
    with torch.inference_mode():
        out = vae.module.decode_tiled(_to_latents(vae, latents), max(tile_px // f, 1), overlap_px // f)
    return _to_image(out)


def encode_tiled(vae: Autoencoder, pixels: Tensor, tile_px: int = DEFAULT_TILE_PX,
                 overlap_px: int = DEFAULT_OVERLAP_PX) -> Tensor:
    if tile_px < overlap_px * 4:
        overlap_px = tile_px // 4
    images = _to_model_images(vae, pixels)
    _load(vae, {})
    with torch.inference_mode():
        return vae.module.encode_tiled(images, tile_px, overlap_px).float().cpu().contiguous()


def _mask_at(mask: Tensor, height: int, width: int) -> Tensor:
    """[H, W] / [B, H, W] mask -> [B, 1, height, width] (bilinear)."""
    return F.interpolate(mask.reshape(-1, 1, mask.shape[-2], mask.shape[-1]).float(), size=(height, width),
                         mode="bilinear")


def _crop_like(pixels: Tensor, mask: Tensor, multiple: int) -> tuple[Tensor, Tensor]:
    h, w = (pixels.shape[1] // multiple) * multiple, (pixels.shape[2] // multiple) * multiple
    y0, x0 = (pixels.shape[1] % multiple) // 2, (pixels.shape[2] % multiple) // 2
    return pixels[:, y0:y0 + h, x0:x0 + w, :], mask[:, :, y0:y0 + h, x0:x0 + w]


def _grey_out_masked(pixels: Tensor, mask: Tensor) -> Tensor:
    """Masked pixels set to 0.5 grey (ComfyUI VAEEncodeForInpaint)."""
    keep = (1.0 - mask.round()).squeeze(1).unsqueeze(-1)                     # [B, H, W, 1]
    return (pixels[..., :3] - 0.5) * keep + 0.5


def encode_for_inpaint(vae: Autoencoder, pixels: Tensor, mask: Tensor, grow_mask_by: int = 6) -> dict:
    """VAEEncodeForInpaint: encode with the masked region greyed out; noise_mask is the mask grown by
    `grow_mask_by` pixels (a box dilation) so the seam is re-generated too."""
    f = vae.downscale_ratio
    mask = _mask_at(mask, pixels.shape[1], pixels.shape[2])
    pixels, mask = _crop_like(pixels, mask, f)
    if grow_mask_by == 0:
        grown = mask
    else:
        kernel = torch.ones((1, 1, grow_mask_by, grow_mask_by))
        padding = math.ceil((grow_mask_by - 1) / 2)
        grown = torch.clamp(F.conv2d(mask.round(), kernel, padding=padding), 0, 1)
    latents = encode(vae, _grey_out_masked(pixels, mask))
    h, w = pixels.shape[1], pixels.shape[2]
    return {"samples": latents, "noise_mask": grown[:, :, :h, :w].round()}


def inpaint_model_conditioning(vae: Autoencoder, pixels: Tensor, mask: Tensor, is_noise_mask: bool = True) \
        -> tuple[Tensor, Tensor, dict]:
    """InpaintModelConditioning: (concat latent of the greyed-out image, mask [B, 1, H, W], LATENT of the
    original image with the mask as noise_mask when `is_noise_mask`)."""
    f = vae.downscale_ratio
    mask = _mask_at(mask, pixels.shape[1], pixels.shape[2])
    cropped, mask = _crop_like(pixels, mask, f)
    concat_latent = encode(vae, _grey_out_masked(cropped, mask))
    latent = {"samples": encode(vae, pixels)}
    if is_noise_mask:
        latent["noise_mask"] = mask
    return concat_latent, mask, latent


def instruct_pix2pix_latent(vae: Autoencoder, pixels: Tensor) -> Tensor:
    """InstructPixToPixConditioning's concat latent: the image, centre-cropped to whole latent pixels,
    encoded."""
    f = vae.downscale_ratio
    h, w = (pixels.shape[1] // f) * f, (pixels.shape[2] // f) * f
    y0, x0 = (pixels.shape[1] % f) // 2, (pixels.shape[2] % f) // 2
    return encode(vae, pixels[:, y0:y0 + h, x0:x0 + w, :])
