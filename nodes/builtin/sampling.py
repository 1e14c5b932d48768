"""Sampler nodes: KSampler(Advanced), the custom-sampling family, and model sampling patches (ComfyUI's
specs); the work is in diffusion.ksampler and diffusion.model_patches."""
from __future__ import annotations

from diffusion import ksampler, model_patches
from nodes import services
from nodes.spec import Boolean, Combo, Float, Input, Int, Output, node
from sampling.samplers import SAMPLERS
from sampling.schedules import SCHEDULERS, exponential_sigmas, karras_sigmas

SAMPLER_NAMES = list(SAMPLERS)
SCHEDULER_NAMES = list(SCHEDULERS)
MAX_SEED = 0xFFFFFFFFFFFFFFFF


def _preview_folders() -> list:
    try:
        return services.folders().paths("vae_approx")
    except LookupError:
        return []


@node("KSampler", category="sampling", display_name="KSampler",
      description="Denoises the latent step by step with the model, steered towards the positive and away from the negative prompt.")
class KSampler:
    model = Input("MODEL", tooltip="Diffusion model that predicts the noise.")
    seed = Int(0, min=0, max=MAX_SEED, control_after_generate=True, tooltip="Seed of the starting noise; the same seed gives the same image.")
    steps = Int(20, min=1, max=10000, tooltip="How many denoising steps to take.")
    cfg = Float(8.0, min=0.0, max=100.0, step=0.1, round=0.01,
                tooltip="Guidance scale: how strongly the prompt steers the image (1 disables the negative "
                        "prompt; very high values burn the image).")
    sampler_name = Combo(SAMPLER_NAMES, tooltip="Numerical method that integrates the denoising; changes "
                                                "look, speed and how many steps are needed.")
    scheduler = Combo(SCHEDULER_NAMES, tooltip="Spacing of the noise levels over the steps.")
    positive = Input("CONDITIONING", tooltip="What the image should show.")
    negative = Input("CONDITIONING", tooltip="What the image should not show.")
    latent_image = Input("LATENT", tooltip="Starting latent: empty for txt2img, an encoded image for img2img.")
    denoise = Float(1.0, min=0.0, max=1.0, step=0.01,
                    tooltip="Share of the noise schedule to run; below 1 keeps part of the input latent's "
                            "structure (img2img).")
    RETURNS = (Output("LATENT", tooltip="Denoised latent, ready for VAE Decode."),)

    def run(self, model, seed: int, steps: int, cfg: float, sampler_name: str, scheduler: str, positive: list,
            negative: list, latent_image: dict, denoise: float = 1.0) -> tuple:
        return (ksampler.ksample(model, latent_image, positive, negative, seed=seed, steps=steps, cfg=cfg,
                                 sampler_name=sampler_name, scheduler=scheduler, denoise=denoise,
                                 preview_folders=_preview_folders()),)


@node("KSamplerAdvanced", category="sampling", display_name="KSampler (Advanced)")
class KSamplerAdvanced:
    model = Input("MODEL")
    add_noise = Combo(["enable", "disable"])
    noise_seed = Int(0, min=0, max=MAX_SEED, control_after_generate=True)
    steps = Int(20, min=1, max=10000)
    cfg = Float(8.0, min=0.0, max=100.0, step=0.1, round=0.01)
    sampler_name = Combo(SAMPLER_NAMES)
    scheduler = Combo(SCHEDULER_NAMES)
    positive = Input("CONDITIONING")
    negative = Input("CONDITIONING")
    latent_image = Input("LATENT")
    start_at_step = Int(0, min=0, max=10000)
    end_at_step = Int(10000, min=0, max=10000)
    return_with_leftover_noise = Combo(["disable", "enable"])
    RETURNS = ("LATENT",)

    def run(self, model, add_noise: str, noise_seed: int, steps: int, cfg: float, sampler_name: str,
            scheduler: str, positive: list, negative: list, latent_image: dict, start_at_step: int,
            end_at_step: int, return_with_leftover_noise: str) -> tuple:
        return (ksampler.ksample(model, latent_image, positive, negative, seed=noise_seed, steps=steps, cfg=cfg,
                                 sampler_name=sampler_name, scheduler=scheduler, add_noise=add_noise == "enable",
                                 start_step=start_at_step, last_step=end_at_step,
                                 return_with_leftover_noise=return_with_leftover_noise == "enable",
                                 preview_folders=_preview_folders()),)


@node("SamplerCustom", category="sampling/custom_sampling")
class SamplerCustom:
    model = Input("MODEL")
    add_noise = Boolean(True)
    noise_seed = Int(0, min=0, max=MAX_SEED, control_after_generate=True)
    cfg = Float(8.0, min=0.0, max=100.0, step=0.1, round=0.01)
    positive = Input("CONDITIONING")
    negative = Input("CONDITIONING")
    sampler = Input("SAMPLER")
    sigmas = Input("SIGMAS")
    latent_image = Input("LATENT")
    RETURNS = (Output("LATENT", "output"), Output("LATENT", "denoised_output"))

    def run(self, model, add_noise: bool, noise_seed: int, cfg: float, positive: list, negative: list, sampler,
            sigmas, latent_image: dict) -> tuple:
        return ksampler.sample_custom(ksampler.Guider(model, positive, negative, cfg),
                                      ksampler.NoiseSource(noise_seed, add_noise), sampler, sigmas, latent_image,
                                      preview_folders=_preview_folders())


@node("SamplerCustomAdvanced", category="sampling/custom_sampling")
class SamplerCustomAdvanced:
    noise = Input("NOISE")
    guider = Input("GUIDER")
    sampler = Input("SAMPLER")
    sigmas = Input("SIGMAS")
    latent_image = Input("LATENT")
    RETURNS = (Output("LATENT", "output"), Output("LATENT", "denoised_output"))

    def run(self, noise, guider, sampler, sigmas, latent_image: dict) -> tuple:
        return ksampler.sample_custom(guider, noise, sampler, sigmas, latent_image,
                                      preview_folders=_preview_folders())


@node("KSamplerSelect", category="sampling/custom_sampling/samplers")
class KSamplerSelect:
    sampler_name = Combo(SAMPLER_NAMES)
    RETURNS = ("SAMPLER",)

    def run(self, sampler_name: str) -> tuple:
        return (ksampler.SamplerChoice(sampler_name),)


@node("BasicScheduler", category="sampling/custom_sampling/schedulers")
class BasicScheduler:
    model = Input("MODEL")
    scheduler = Combo(SCHEDULER_NAMES)
    steps = Int(20, min=1, max=10000)
    denoise = Float(1.0, min=0.0, max=1.0, step=0.01)
    RETURNS = ("SIGMAS",)

    def run(self, model, scheduler: str, steps: int, denoise: float) -> tuple:
        return (ksampler.sigmas_for(model, scheduler, steps, denoise),)


@node("KarrasScheduler", category="sampling/custom_sampling/schedulers")
class KarrasScheduler:
    steps = Int(20, min=1, max=10000)
    sigma_max = Float(14.614642, min=0.0, max=5000.0, step=0.01, round=False)
    sigma_min = Float(0.0291675, min=0.0, max=5000.0, step=0.01, round=False)
    rho = Float(7.0, min=0.0, max=100.0, step=0.01, round=False)
    RETURNS = ("SIGMAS",)

    def run(self, steps: int, sigma_max: float, sigma_min: float, rho: float) -> tuple:
        return (karras_sigmas(steps, sigma_min, sigma_max, rho),)


@node("ExponentialScheduler", category="sampling/custom_sampling/schedulers")
class ExponentialScheduler:
    steps = Int(20, min=1, max=10000)
    sigma_max = Float(14.614642, min=0.0, max=5000.0, step=0.01, round=False)
    sigma_min = Float(0.0291675, min=0.0, max=5000.0, step=0.01, round=False)
    RETURNS = ("SIGMAS",)

    def run(self, steps: int, sigma_max: float, sigma_min: float) -> tuple:
        return (exponential_sigmas(steps, sigma_min, sigma_max),)


@node("SplitSigmas", category="sampling/custom_sampling/sigmas")
class SplitSigmas:
    sigmas = Input("SIGMAS")
    step = Int(0, min=0, max=10000)
    RETURNS = (Output("SIGMAS", "high_sigmas"), Output("SIGMAS", "low_sigmas"))

    def run(self, sigmas, step: int) -> tuple:
        return ksampler.split_sigmas(sigmas, step)


@node("FlipSigmas", category="sampling/custom_sampling/sigmas")
class FlipSigmas:
    sigmas = Input("SIGMAS")
    RETURNS = ("SIGMAS",)

    def run(self, sigmas) -> tuple:
        return (ksampler.flip_sigmas(sigmas),)


@node("RandomNoise", category="sampling/custom_sampling/noise")
class RandomNoise:
    noise_seed = Int(0, min=0, max=MAX_SEED, control_after_generate=True)
    RETURNS = ("NOISE",)

    def run(self, noise_seed: int) -> tuple:
        return (ksampler.NoiseSource(noise_seed),)


@node("DisableNoise", category="sampling/custom_sampling/noise")
class DisableNoise:
    RETURNS = ("NOISE",)

    def run(self) -> tuple:
        return (ksampler.NoiseSource(0, is_enabled=False),)


@node("BasicGuider", category="sampling/custom_sampling/guiders")
class BasicGuider:
    model = Input("MODEL")
    conditioning = Input("CONDITIONING")
    RETURNS = ("GUIDER",)

    def run(self, model, conditioning: list) -> tuple:
        return (ksampler.Guider(model, conditioning),)


@node("CFGGuider", category="sampling/custom_sampling/guiders")
class CFGGuider:
    model = Input("MODEL")
    positive = Input("CONDITIONING")
    negative = Input("CONDITIONING")
    cfg = Float(8.0, min=0.0, max=100.0, step=0.1, round=0.01)
    RETURNS = ("GUIDER",)

    def run(self, model, positive: list, negative: list, cfg: float) -> tuple:
        return (ksampler.Guider(model, positive, negative, cfg),)


@node("DualCFGGuider", category="sampling/custom_sampling/guiders")
class DualCFGGuider:
    model = Input("MODEL")
    cond1 = Input("CONDITIONING")
    cond2 = Input("CONDITIONING")
    negative = Input("CONDITIONING")
    cfg_conds = Float(8.0, min=0.0, max=100.0, step=0.1, round=0.01)
    cfg_cond2_negative = Float(8.0, min=0.0, max=100.0, step=0.1, round=0.01)
    style = Combo(["regular", "nested"])
    RETURNS = ("GUIDER",)

    def run(self, model, cond1: list, cond2: list, negative: list, cfg_conds: float, cfg_cond2_negative: float,
            style: str) -> tuple:
        return (ksampler.DualCFGGuider(model, cond1, cond2, negative, cfg_conds, cfg_cond2_negative,
                                       is_nested=style == "nested"),)


@node("ModelSamplingDiscrete", category="advanced/model")
class ModelSamplingDiscrete:
    model = Input("MODEL")
    sampling = Combo(model_patches.DISCRETE_SAMPLING_TYPES)
    zsnr = Boolean(False)
    RETURNS = ("MODEL",)

    def run(self, model, sampling: str, zsnr: bool) -> tuple:
        return (model_patches.with_discrete_sampling(model, sampling, zsnr),)


@node("RescaleCFG", category="advanced/model")
class RescaleCFG:
    model = Input("MODEL")
    multiplier = Float(0.7, min=0.0, max=1.0, step=0.01)
    RETURNS = ("MODEL",)

    def run(self, model, multiplier: float) -> tuple:
        return (model_patches.with_rescale_cfg(model, multiplier),)
