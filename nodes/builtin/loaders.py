"""Model loader nodes and CheckpointSave (ComfyUI's specs); the work is in diffusion.loading / saving."""
from __future__ import annotations

from diffusion import loading, saving
from nodes import services
from nodes.spec import Combo, Hidden, Input, Output, String, node, optional

CLIP_TYPES = ["stable_diffusion", "stable_cascade", "sd3", "stable_audio", "mochi", "ltxv", "pixart", "cosmos",
              "lumina2", "wan", "hidream", "chroma", "ace", "omnigen2", "qwen_image", "hunyuan_image", "flux2",
              "ovis"]
UNET_WEIGHT_DTYPES = ["default", "fp8_e4m3fn", "fp8_e4m3fn_fast", "fp8_e5m2"]


def _manager():
    return services.current().model_manager()


def _path(kind: str, name: str):
    return services.folders().find(kind, name)


@node("CheckpointLoaderSimple", category="loaders", display_name="Load Checkpoint",
      description="Reads a single-file checkpoint and splits it into its diffusion model, text encoder and VAE.")
class CheckpointLoaderSimple:
    ckpt_name = Combo(services.file_list("checkpoints"), tooltip="Checkpoint file in models/checkpoints.")
    RETURNS = (Output("MODEL", tooltip="Diffusion model (UNet)."),
               Output("CLIP", tooltip="Text encoder for CLIP Text Encode."),
               Output("VAE", tooltip="Autoencoder between pixels and latents."))

    def run(self, ckpt_name: str) -> tuple:
        return loading.load_checkpoint_file(_path("checkpoints", ckpt_name), _manager(),
                                            embedding_dirs=services.folders().paths("embeddings"))


@node("VAELoader", category="loaders", display_name="Load VAE")
class VAELoader:
    vae_name = Combo(services.file_list("vae"))
    RETURNS = ("VAE",)

    def run(self, vae_name: str) -> tuple:
        return (loading.load_vae_file(_path("vae", vae_name), _manager()),)


@node("UNETLoader", category="advanced/loaders", display_name="Load Diffusion Model")
class UNETLoader:
    unet_name = Combo(services.file_list("diffusion_models"))
    weight_dtype = Combo(UNET_WEIGHT_DTYPES)
    RETURNS = ("MODEL",)

    def run(self, unet_name: str, weight_dtype: str) -> tuple:
        return (loading.load_unet_file(_path("diffusion_models", unet_name), _manager(), weight_dtype=weight_dtype),)


@node("CLIPLoader", category="advanced/loaders", display_name="Load CLIP",
      description="Loads a standalone text encoder file (stable_diffusion: a CLIP-L or OpenCLIP-H file).")
class CLIPLoader:
    clip_name = Combo(services.file_list("text_encoders"))
    type = Combo(CLIP_TYPES)
    device = optional(Combo(["default", "cpu"], advanced=True))
    RETURNS = ("CLIP",)

    def run(self, clip_name: str, type: str = "stable_diffusion", device: str = "default") -> tuple:
        return (loading.load_text_encoder_file(_path("text_encoders", clip_name), _manager(), type,
                                               embedding_dirs=services.folders().paths("embeddings")),)


@node("CheckpointSave", category="advanced/model_merging", display_name="Save Checkpoint", output_node=True)
class CheckpointSave:
    model = Input("MODEL")
    clip = Input("CLIP")
    vae = Input("VAE")
    filename_prefix = String("checkpoints/ComfyUI")
    prompt = Hidden("PROMPT")
    extra_pnginfo = Hidden("EXTRA_PNGINFO")
    RETURNS = ()

    def run(self, model, clip, vae, filename_prefix: str, prompt=None, extra_pnginfo=None) -> dict:
        target = services.folders().save_target(filename_prefix)
        saving.save_checkpoint(target.path("safetensors"), model, clip, vae, prompt=prompt,
                               extra_pnginfo=extra_pnginfo)
        return {}
