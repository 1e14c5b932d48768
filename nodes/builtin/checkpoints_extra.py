"""The other checkpoint nodes of ComfyUI 0.3.64's core: CheckpointLoader (the deprecated loader with an LDM
config, storage.ldm_config + diffusion.ldm_config), ImageOnlyCheckpointSave (MODEL + CLIP_VISION + VAE,
diffusion.saving) and ImageOnlyCheckpointLoader (the same three read back, diffusion.unclip)."""
from __future__ import annotations

from diffusion import ldm_config, saving, unclip
from nodes import services
from nodes.spec import Combo, Hidden, Input, String, node
from storage.ldm_config import read_ldm_config


@node("CheckpointLoader", category="advanced/loaders", display_name="Load Checkpoint With Config (DEPRECATED)",
      deprecated=True)
class CheckpointLoader:
    config_name = Combo(services.file_list("configs"))
    ckpt_name = Combo(services.file_list("checkpoints"))
    RETURNS = ("MODEL", "CLIP", "VAE")

    def run(self, config_name: str, ckpt_name: str) -> tuple:
        folders = services.folders()
        return ldm_config.load_checkpoint_with_config(
            read_ldm_config(folders.find("configs", config_name)), folders.find("checkpoints", ckpt_name),
            services.current().model_manager(), embedding_dirs=folders.paths("embeddings"))


@node("ImageOnlyCheckpointLoader", category="loaders/video_models",
      display_name="Image Only Checkpoint Loader (img2vid model)", function="load_checkpoint")
class ImageOnlyCheckpointLoader:
    """MODEL, CLIP_VISION and VAE of a checkpoint with a bundled vision tower (SD2.1 unCLIP's
    embedder.model.visual); CLIP_VISION is None when the file has none, as ComfyUI's. No text encoder."""
    ckpt_name = Combo(services.file_list("checkpoints"))
    RETURNS = ("MODEL", "CLIP_VISION", "VAE")

    def run(self, ckpt_name: str) -> tuple:
        model, _, vae, vision = unclip.load_unclip_checkpoint(services.folders().find("checkpoints", ckpt_name),
                                                              services.current().model_manager())
        return model, vision, vae


@node("ImageOnlyCheckpointSave", category="advanced/model_merging", output_node=True)
class ImageOnlyCheckpointSave:
    model = Input("MODEL")
    clip_vision = Input("CLIP_VISION")
    vae = Input("VAE")
    filename_prefix = String("checkpoints/ComfyUI")
    prompt = Hidden("PROMPT")
    extra_pnginfo = Hidden("EXTRA_PNGINFO")
    RETURNS = ()

    def run(self, model, clip_vision, vae, filename_prefix: str, prompt=None, extra_pnginfo=None) -> dict:
        saving.save_checkpoint(services.folders().save_target(filename_prefix).path("safetensors"), model, None,
                               vae, clip_vision=clip_vision, prompt=prompt, extra_pnginfo=extra_pnginfo)
        return {}

