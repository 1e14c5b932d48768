"""Core nodes of model families Plexus does not load yet: the latent, schedule and guidance nodes of the
video families (Hunyuan Video, Wan, Mochi, LTX-Video, Cosmos, Stable Video Diffusion), the empty latents of
Hunyuan Image 2.1, Chroma Radiance, Stable Cascade, Hunyuan3D-2 and ACE-Step audio, and Stable Cascade's
model sampling. ComfyUI's specs (comfy_extras' nodes_hunyuan, nodes_mochi, nodes_lt, nodes_cosmos,
nodes_wan, nodes_video_model, nodes_attention_multiply, nodes_chroma_radiance, nodes_stable_cascade,
nodes_hunyuan3d, nodes_ace, nodes_model_advanced).

Each node wraps one function of `imaging.latent_ops`, `sampling.schedules_extra`,
`diffusion.guidance_patches` or `diffusion.model_patches`. The latents are exact (shape and keys); a
workflow using them still stops at its loader when the family is not supported, with that reason.
"""
from __future__ import annotations

from diffusion import guidance_patches as gp
from diffusion import family_conditioning as fc
from diffusion import model_patches, novel_view
from imaging import latent_ops
from nodes.spec import Boolean, Combo, Float, Input, Int, Output, String, node, optional
from sampling.schedules_extra import ltxv_sigmas

MAX_RESOLUTION = 16384


@node("EmptyHunyuanLatentVideo", category="latent/video", display_name="EmptyHunyuanLatentVideo",
      function="generate")
class EmptyHunyuanLatentVideo:
    """Also Wan 2.1's empty latent (the same 16-channel, 4x temporal, 8x spatial VAE layout)."""
    width = Int(848, min=16, max=MAX_RESOLUTION, step=16)
    height = Int(480, min=16, max=MAX_RESOLUTION, step=16)
    length = Int(25, min=1, max=MAX_RESOLUTION, step=4)
    batch_size = Int(1, min=1, max=4096)
    RETURNS = ("LATENT",)

    def run(self, width: int, height: int, length: int, batch_size: int = 1) -> tuple:
        return (latent_ops.empty_video(width, height, length, batch_size, channels=16, frames_per_latent=4,
                                       downscale=8),)


@node("EmptyMochiLatentVideo", category="latent/video", function="execute")
class EmptyMochiLatentVideo:
    width = Int(848, min=16, max=MAX_RESOLUTION, step=16)
    height = Int(480, min=16, max=MAX_RESOLUTION, step=16)
    length = Int(25, min=7, max=MAX_RESOLUTION, step=6)
    batch_size = Int(1, min=1, max=4096)
    RETURNS = ("LATENT",)

    def run(self, width: int, height: int, length: int, batch_size: int = 1) -> tuple:
        return (latent_ops.empty_video(width, height, length, batch_size, channels=12, frames_per_latent=6,
                                       downscale=8),)


@node("EmptyLTXVLatentVideo", category="latent/video/ltxv", function="execute")
class EmptyLTXVLatentVideo:
    width = Int(768, min=64, max=MAX_RESOLUTION, step=32)
    height = Int(512, min=64, max=MAX_RESOLUTION, step=32)
    length = Int(97, min=1, max=MAX_RESOLUTION, step=8)
    batch_size = Int(1, min=1, max=4096)
    RETURNS = ("LATENT",)

    def run(self, width: int, height: int, length: int, batch_size: int = 1) -> tuple:
        return (latent_ops.empty_video(width, height, length, batch_size, channels=128, frames_per_latent=8,
                                       downscale=32),)


@node("EmptyCosmosLatentVideo", category="latent/video", function="execute")
class EmptyCosmosLatentVideo:
    width = Int(1280, min=16, max=MAX_RESOLUTION, step=16)
    height = Int(704, min=16, max=MAX_RESOLUTION, step=16)
    length = Int(121, min=1, max=MAX_RESOLUTION, step=8)
    batch_size = Int(1, min=1, max=4096)
    RETURNS = ("LATENT",)

    def run(self, width: int, height: int, length: int, batch_size: int = 1) -> tuple:
        return (latent_ops.empty_video(width, height, length, batch_size, channels=16, frames_per_latent=8,
                                       downscale=8),)


@node("TrimVideoLatent", category="latent/video", function="execute")
class TrimVideoLatent:
    samples = Input("LATENT")
    trim_amount = Int(0, min=0, max=99999)
    RETURNS = ("LATENT",)

    def run(self, samples: dict, trim_amount: int) -> tuple:
        return (latent_ops.trim_frames(samples, trim_amount),)


def _min_cfg() -> Float:
    return Float(1.0, min=0.0, max=100.0, step=0.5, round=0.01)


@node("VideoLinearCFGGuidance", category="sampling/video_models", display_name="VideoLinearCFGGuidance",
      function="patch")
class VideoLinearCFGGuidance:
    model = Input("MODEL")
    min_cfg = _min_cfg()
    RETURNS = ("MODEL",)

    def run(self, model, min_cfg: float) -> tuple:
        return (gp.with_video_cfg(model, "linear", min_cfg),)


@node("VideoTriangleCFGGuidance", category="sampling/video_models", display_name="VideoTriangleCFGGuidance",
      function="patch")
class VideoTriangleCFGGuidance:
    model = Input("MODEL")
    min_cfg = _min_cfg()
    RETURNS = ("MODEL",)

    def run(self, model, min_cfg: float) -> tuple:
        return (gp.with_video_cfg(model, "triangle", min_cfg),)


def _attention_factor() -> Float:
    return Float(1.0, min=0.0, max=10.0, step=0.01)


@node("UNetTemporalAttentionMultiply", category="_for_testing/attention_experiments", experimental=True,
      function="execute")
class UNetTemporalAttentionMultiply:
    model = Input("MODEL")
    self_structural = _attention_factor()
    self_temporal = _attention_factor()
    cross_structural = _attention_factor()
    cross_temporal = _attention_factor()
    RETURNS = ("MODEL",)

    def run(self, model, self_structural: float, self_temporal: float, cross_structural: float,
            cross_temporal: float) -> tuple:
        return (gp.with_temporal_attention_multiplied(model, self_structural, self_temporal, cross_structural,
                                                      cross_temporal),)


@node("LTXVScheduler", category="sampling/custom_sampling/schedulers", function="execute")
class LTXVScheduler:
    steps = Int(20, min=1, max=10000)
    max_shift = Float(2.05, min=0.0, max=100.0, step=0.01)
    base_shift = Float(0.95, min=0.0, max=100.0, step=0.01)
    stretch = Boolean(True)
    terminal = Float(0.1, min=0.0, max=0.99, step=0.01)
    latent = optional(Input("LATENT"))
    RETURNS = ("SIGMAS",)

    def run(self, steps: int, max_shift: float, base_shift: float, stretch: bool, terminal: float,
            latent: dict | None = None) -> tuple:
        return (ltxv_sigmas(steps, max_shift, base_shift, stretch, terminal, model_patches.latent_tokens(latent)),)


@node("ModelSamplingLTXV", category="advanced/model", function="execute")
class ModelSamplingLTXV:
    model = Input("MODEL")
    max_shift = Float(2.05, min=0.0, max=100.0, step=0.01)
    base_shift = Float(0.95, min=0.0, max=100.0, step=0.01)
    latent = optional(Input("LATENT"))
    RETURNS = ("MODEL",)

    def run(self, model, max_shift: float, base_shift: float, latent: dict | None = None) -> tuple:
        return (model_patches.with_ltxv_sampling(model, max_shift, base_shift, latent),)


@node("ModelSamplingStableCascade", category="advanced/model", display_name="ModelSamplingStableCascade",
      function="patch")
class ModelSamplingStableCascade:
    model = Input("MODEL")
    shift = Float(2.0, min=0.0, max=100.0, step=0.01)
    RETURNS = ("MODEL",)

    def run(self, model, shift: float) -> tuple:
        return (model_patches.with_stable_cascade_sampling(model, shift),)


# --- empty latents of image / audio / 3D families Plexus does not load yet ---------------------------

@node("EmptyHunyuanImageLatent", category="latent", display_name="EmptyHunyuanImageLatent", function="generate")
class EmptyHunyuanImageLatent:
    """Hunyuan Image 2.1: 64 channels at 1/32 of the pixel size."""
    width = Int(2048, min=64, max=MAX_RESOLUTION, step=32)
    height = Int(2048, min=64, max=MAX_RESOLUTION, step=32)
    batch_size = Int(1, min=1, max=4096)
    RETURNS = ("LATENT",)

    def run(self, width: int, height: int, batch_size: int = 1) -> tuple:
        return (latent_ops.empty(width, height, batch_size, channels=64, downscale=32),)


@node("EmptyChromaRadianceLatentImage", category="latent/chroma_radiance", function="execute")
class EmptyChromaRadianceLatentImage:
    """Chroma Radiance works on pixels: its "latent" is an RGB image [B, 3, H, W]."""
    width = Int(1024, min=16, max=MAX_RESOLUTION, step=16)
    height = Int(1024, min=16, max=MAX_RESOLUTION, step=16)
    batch_size = Int(1, min=1, max=4096)
    RETURNS = ("LATENT",)

    def run(self, width: int, height: int, batch_size: int = 1) -> tuple:
        return (latent_ops.empty(width, height, batch_size, channels=3, downscale=1),)


@node("StableCascade_EmptyLatentImage", category="latent/stable_cascade", function="execute")
class StableCascade_EmptyLatentImage:
    """Stable Cascade's two stages: stage C at 1/compression with 16 channels, stage B at 1/4 with 4."""
    width = Int(1024, min=256, max=MAX_RESOLUTION, step=8)
    height = Int(1024, min=256, max=MAX_RESOLUTION, step=8)
    compression = Int(42, min=4, max=128, step=1)
    batch_size = Int(1, min=1, max=4096)
    RETURNS = (Output("LATENT", "stage_c"), Output("LATENT", "stage_b"))

    def run(self, width: int, height: int, compression: int, batch_size: int = 1) -> tuple:
        return (latent_ops.empty(width, height, batch_size, channels=16, downscale=compression),
                latent_ops.empty(width, height, batch_size, channels=4, downscale=4))


@node("EmptyLatentHunyuan3Dv2", category="latent/3d", display_name="EmptyLatentHunyuan3Dv2", function="generate")
class EmptyLatentHunyuan3Dv2:
    resolution = Int(3072, min=1, max=8192)
    batch_size = Int(1, min=1, max=4096)
    RETURNS = ("LATENT",)

    def run(self, resolution: int, batch_size: int) -> tuple:
        return (latent_ops.empty_sequence(resolution, batch_size, shape=(64,), kind="hunyuan3dv2"),)


@node("EmptyAceStepLatentAudio", category="latent/audio", function="execute")
class EmptyAceStepLatentAudio:
    seconds = Float(120.0, min=1.0, max=1000.0, step=0.1)
    batch_size = Int(1, min=1, max=4096)
    RETURNS = ("LATENT",)

    def run(self, seconds: float, batch_size: int) -> tuple:
        return (latent_ops.empty_sequence(latent_ops.ace_step_frames(seconds), batch_size, shape=(8, 16),
                                          kind="audio"),)


# --- image-to-video and novel-view conditioning (diffusion.novel_view) -------------------------------

def _size(default: int) -> Int:
    return Int(default, min=16, max=MAX_RESOLUTION, step=8)


def _angle(limit: float) -> Float:
    return Float(0.0, min=-limit, max=limit, step=0.1, round=False)


_VIEW_RETURNS = (Output("CONDITIONING", "positive"), Output("CONDITIONING", "negative"), Output("LATENT", "latent"))


@node("SVD_img2vid_Conditioning", category="conditioning/video_models", display_name="SVD_img2vid_Conditioning",
      function="encode")
class SVD_img2vid_Conditioning:
    clip_vision = Input("CLIP_VISION")
    init_image = Input("IMAGE")
    vae = Input("VAE")
    width = _size(1024)
    height = _size(576)
    video_frames = Int(14, min=1, max=4096)
    motion_bucket_id = Int(127, min=1, max=1023)
    fps = Int(6, min=1, max=1024)
    augmentation_level = Float(0.0, min=0.0, max=10.0, step=0.01)
    RETURNS = _VIEW_RETURNS

    def run(self, clip_vision, init_image, vae, width: int, height: int, video_frames: int, motion_bucket_id: int,
            fps: int, augmentation_level: float) -> tuple:
        return novel_view.svd_img2vid(clip_vision, init_image, vae, width, height, video_frames, motion_bucket_id,
                                      fps, augmentation_level)


@node("StableZero123_Conditioning", category="conditioning/3d_models", function="execute")
class StableZero123_Conditioning:
    clip_vision = Input("CLIP_VISION")
    init_image = Input("IMAGE")
    vae = Input("VAE")
    width = _size(256)
    height = _size(256)
    batch_size = Int(1, min=1, max=4096)
    elevation = _angle(180.0)
    azimuth = _angle(180.0)
    RETURNS = _VIEW_RETURNS

    def run(self, clip_vision, init_image, vae, width: int, height: int, batch_size: int, elevation: float,
            azimuth: float) -> tuple:
        return novel_view.zero123(clip_vision, init_image, vae, width, height, batch_size, elevation, azimuth)


@node("StableZero123_Conditioning_Batched", category="conditioning/3d_models", function="execute")
class StableZero123_Conditioning_Batched:
    clip_vision = Input("CLIP_VISION")
    init_image = Input("IMAGE")
    vae = Input("VAE")
    width = _size(256)
    height = _size(256)
    batch_size = Int(1, min=1, max=4096)
    elevation = _angle(180.0)
    azimuth = _angle(180.0)
    elevation_batch_increment = _angle(180.0)
    azimuth_batch_increment = _angle(180.0)
    RETURNS = _VIEW_RETURNS

    def run(self, clip_vision, init_image, vae, width: int, height: int, batch_size: int, elevation: float,
            azimuth: float, elevation_batch_increment: float, azimuth_batch_increment: float) -> tuple:
        return novel_view.zero123(clip_vision, init_image, vae, width, height, batch_size, elevation, azimuth,
                                  elevation_batch_increment, azimuth_batch_increment)


@node("SV3D_Conditioning", category="conditioning/3d_models", function="execute")
class SV3D_Conditioning:
    clip_vision = Input("CLIP_VISION")
    init_image = Input("IMAGE")
    vae = Input("VAE")
    width = _size(576)
    height = _size(576)
    video_frames = Int(21, min=1, max=4096)
    elevation = _angle(90.0)
    RETURNS = _VIEW_RETURNS

    def run(self, clip_vision, init_image, vae, width: int, height: int, video_frames: int,
            elevation: float) -> tuple:
        return novel_view.sv3d(clip_vision, init_image, vae, width, height, video_frames, elevation)


# --- conditioning values of other families (diffusion.family_conditioning) ---------------------------

@node("CLIPTextEncodeLumina2", category="conditioning", display_name="CLIP Text Encode for Lumina2",
      function="execute")
class CLIPTextEncodeLumina2:
    system_prompt = Combo(list(fc.LUMINA2_SYSTEM_PROMPTS))
    user_prompt = String(multiline=True, dynamic_prompts=True)
    clip = Input("CLIP")
    RETURNS = ("CONDITIONING",)

    def run(self, system_prompt: str, user_prompt: str, clip) -> tuple:
        return (fc.encode_lumina2(clip, system_prompt, user_prompt),)


@node("CLIPTextEncodePixArtAlpha", category="advanced/conditioning", function="execute")
class CLIPTextEncodePixArtAlpha:
    width = Int(1024, min=0, max=MAX_RESOLUTION)
    height = Int(1024, min=0, max=MAX_RESOLUTION)
    text = String(multiline=True, dynamic_prompts=True)
    clip = Input("CLIP")
    RETURNS = ("CONDITIONING",)

    def run(self, width: int, height: int, text: str, clip) -> tuple:
        return (fc.encode_pixart(clip, text, width, height),)


@node("LTXVConditioning", category="conditioning/video_models", function="execute")
class LTXVConditioning:
    positive = Input("CONDITIONING")
    negative = Input("CONDITIONING")
    frame_rate = Float(25.0, min=0.0, max=1000.0, step=0.01)
    RETURNS = (Output("CONDITIONING", "positive"), Output("CONDITIONING", "negative"))

    def run(self, positive, negative, frame_rate: float) -> tuple:
        return fc.with_frame_rate(positive, negative, frame_rate)


@node("StableCascade_StageB_Conditioning", category="conditioning/stable_cascade", function="execute")
class StableCascade_StageB_Conditioning:
    conditioning = Input("CONDITIONING")
    stage_c = Input("LATENT")
    RETURNS = ("CONDITIONING",)

    def run(self, conditioning, stage_c: dict) -> tuple:
        return (fc.with_stable_cascade_prior(conditioning, stage_c["samples"]),)


@node("LTXVCropGuides", category="conditioning/video_models", function="execute")
class LTXVCropGuides:
    positive = Input("CONDITIONING")
    negative = Input("CONDITIONING")
    latent = Input("LATENT")
    RETURNS = (Output("CONDITIONING", "positive"), Output("CONDITIONING", "negative"), Output("LATENT", "latent"))

    def run(self, positive, negative, latent: dict) -> tuple:
        return fc.crop_ltxv_guides(positive, negative, latent)


@node("SD_4XUpscale_Conditioning", category="conditioning/upscale_diffusion", function="execute")
class SD_4XUpscale_Conditioning:
    images = Input("IMAGE")
    positive = Input("CONDITIONING")
    negative = Input("CONDITIONING")
    scale_ratio = Float(4.0, min=0.0, max=10.0, step=0.01)
    noise_augmentation = Float(0.0, min=0.0, max=1.0, step=0.001)
    RETURNS = (Output("CONDITIONING", "positive"), Output("CONDITIONING", "negative"), Output("LATENT", "latent"))

    def run(self, images, positive, negative, scale_ratio: float, noise_augmentation: float) -> tuple:
        return fc.x4_upscale_conditioning(images, positive, negative, scale_ratio, noise_augmentation)
