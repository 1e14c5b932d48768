"""VAE encode / decode nodes (ComfyUI's specs); the work is in diffusion.vae_ops."""
from __future__ import annotations

from diffusion import vae_ops
from nodes.spec import Input, Int, Output, node


@node("VAEDecode", category="latent", display_name="VAE Decode",
      description="Turns latents into images with the VAE.")
class VAEDecode:
    samples = Input("LATENT", tooltip="Latent from a sampler.")
    vae = Input("VAE", tooltip="Autoencoder matching the model.")
    RETURNS = (Output("IMAGE", tooltip="Decoded images."),)

    def run(self, samples: dict, vae) -> tuple:
        return (vae_ops.decode(vae, samples["samples"]),)


@node("VAEEncode", category="latent", display_name="VAE Encode")
class VAEEncode:
    pixels = Input("IMAGE")
    vae = Input("VAE")
    RETURNS = ("LATENT",)

    def run(self, pixels, vae) -> tuple:
        return ({"samples": vae_ops.encode(vae, pixels)},)


@node("VAEDecodeTiled", category="_for_testing", display_name="VAE Decode (Tiled)")
class VAEDecodeTiled:
    samples = Input("LATENT")
    vae = Input("VAE")
    tile_size = Int(512, min=64, max=4096, step=32)
    overlap = Int(64, min=0, max=4096, step=32)
    temporal_size = Int(64, min=8, max=4096, step=4,
                        tooltip="Video VAEs only: frames per tile.")
    temporal_overlap = Int(8, min=4, max=4096, step=4, tooltip="Video VAEs only: frames shared by neighbouring tiles.")
    RETURNS = ("IMAGE",)

    def run(self, samples: dict, vae, tile_size: int, overlap: int = 64, temporal_size: int = 64,
            temporal_overlap: int = 8) -> tuple:
        return (vae_ops.decode_tiled(vae, samples["samples"], tile_size, overlap),)


@node("VAEEncodeTiled", category="_for_testing", display_name="VAE Encode (Tiled)")
class VAEEncodeTiled:
    pixels = Input("IMAGE")
    vae = Input("VAE")
    tile_size = Int(512, min=64, max=4096, step=64)
    overlap = Int(64, min=0, max=4096, step=32)
    temporal_size = Int(64, min=8, max=4096, step=4,
                        tooltip="Video VAEs only: frames per tile.")
    temporal_overlap = Int(8, min=4, max=4096, step=4, tooltip="Video VAEs only: frames shared by neighbouring tiles.")
    RETURNS = ("LATENT",)

    def run(self, pixels, vae, tile_size: int, overlap: int, temporal_size: int = 64,
            temporal_overlap: int = 8) -> tuple:
        return ({"samples": vae_ops.encode_tiled(vae, pixels, tile_size, overlap)},)


@node("VAEEncodeForInpaint", category="latent/inpaint", display_name="VAE Encode (for Inpainting)")
class VAEEncodeForInpaint:
    pixels = Input("IMAGE")
    vae = Input("VAE")
    mask = Input("MASK")
    grow_mask_by = Int(6, min=0, max=64, step=1)
    RETURNS = ("LATENT",)

    def run(self, pixels, vae, mask, grow_mask_by: int = 6) -> tuple:
        return (vae_ops.encode_for_inpaint(vae, pixels, mask, grow_mask_by),)
