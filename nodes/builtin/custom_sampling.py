"""The rest of the custom-sampling family (ComfyUI's specs): schedulers, sigma tools, SAMPLER nodes with
options, AddNoise, SamplingPercentToSigma and the Perp-Neg guider. One call each into
sampling.schedules_extra, sampling.sigma_tools and diffusion.custom_sampling."""
from __future__ import annotations

from diffusion import custom_sampling as cs
from nodes.spec import Boolean, Combo, Float, Input, Int, Output, String, node
from sampling import schedules_extra, sigma_tools

SCHEDULERS = "sampling/custom_sampling/schedulers"
SIGMAS = "sampling/custom_sampling/sigmas"
SAMPLERS = "sampling/custom_sampling/samplers"
NOISE_DEVICES = ["gpu", "cpu"]


def _sigma_widget(default: float) -> Float:
    return Float(default, min=0.0, max=5000.0, step=0.01, round=False)


def _unit(default: float, max: float = 100.0) -> Float:
    return Float(default, min=0.0, max=max, step=0.01, round=False)


# --- schedulers ----------------------------------------------------------------------------------------

@node("PolyexponentialScheduler", category=SCHEDULERS, function="get_sigmas")
class PolyexponentialScheduler:
    steps = Int(20, min=1, max=10000)
    sigma_max = _sigma_widget(14.614642)
    sigma_min = _sigma_widget(0.0291675)
    rho = _unit(1.0)
    RETURNS = ("SIGMAS",)

    def run(self, steps: int, sigma_max: float, sigma_min: float, rho: float) -> tuple:
        return (schedules_extra.polyexponential_sigmas(steps, sigma_min, sigma_max, rho),)


@node("LaplaceScheduler", category=SCHEDULERS, function="get_sigmas")
class LaplaceScheduler:
    steps = Int(20, min=1, max=10000)
    sigma_max = _sigma_widget(14.614642)
    sigma_min = _sigma_widget(0.0291675)
    mu = Float(0.0, min=-10.0, max=10.0, step=0.1, round=False)
    beta = Float(0.5, min=0.0, max=10.0, step=0.1, round=False)
    RETURNS = ("SIGMAS",)

    def run(self, steps: int, sigma_max: float, sigma_min: float, mu: float, beta: float) -> tuple:
        return (schedules_extra.laplace_sigmas(steps, sigma_min, sigma_max, mu, beta),)


@node("VPScheduler", category=SCHEDULERS, function="get_sigmas")
class VPScheduler:
    steps = Int(20, min=1, max=10000)
    beta_d = _sigma_widget(19.9)
    beta_min = _sigma_widget(0.1)
    eps_s = Float(0.001, min=0.0, max=1.0, step=0.0001, round=False)
    RETURNS = ("SIGMAS",)

    def run(self, steps: int, beta_d: float, beta_min: float, eps_s: float) -> tuple:
        return (schedules_extra.vp_sigmas(steps, beta_d, beta_min, eps_s),)


@node("SDTurboScheduler", category=SCHEDULERS, function="get_sigmas")
class SDTurboScheduler:
    model = Input("MODEL")
    steps = Int(1, min=1, max=10)
    denoise = Float(1.0, min=0, max=1.0, step=0.01)
    RETURNS = ("SIGMAS",)

    def run(self, model, steps: int, denoise: float) -> tuple:
        return (cs.sd_turbo_schedule(model, steps, denoise),)


@node("BetaSamplingScheduler", category=SCHEDULERS, function="get_sigmas")
class BetaSamplingScheduler:
    model = Input("MODEL")
    steps = Int(20, min=1, max=10000)
    alpha = Float(0.6, min=0.0, max=50.0, step=0.01, round=False)
    beta = Float(0.6, min=0.0, max=50.0, step=0.01, round=False)
    RETURNS = ("SIGMAS",)

    def run(self, model, steps: int, alpha: float, beta: float) -> tuple:
        return (cs.beta_schedule(model, steps, alpha, beta),)


@node("AlignYourStepsScheduler", category=SCHEDULERS, function="execute")
class AlignYourStepsScheduler:
    model_type = Combo(list(schedules_extra.ALIGN_YOUR_STEPS_LEVELS))
    steps = Int(10, min=1, max=10000)
    denoise = Float(1.0, min=0.0, max=1.0, step=0.01)
    RETURNS = ("SIGMAS",)

    def run(self, model_type: str, steps: int, denoise: float) -> tuple:
        return (schedules_extra.tabled_sigmas(schedules_extra.ALIGN_YOUR_STEPS_LEVELS[model_type], steps, denoise),)


@node("OptimalStepsScheduler", category=SCHEDULERS, function="execute")
class OptimalStepsScheduler:
    model_type = Combo(list(schedules_extra.OPTIMAL_STEPS_LEVELS))
    steps = Int(20, min=3, max=1000)
    denoise = Float(1.0, min=0.0, max=1.0, step=0.01)
    RETURNS = ("SIGMAS",)

    def run(self, model_type: str, steps: int, denoise: float) -> tuple:
        return (schedules_extra.tabled_sigmas(schedules_extra.OPTIMAL_STEPS_LEVELS[model_type], steps, denoise),)


@node("GITSScheduler", category=SCHEDULERS, function="execute")
class GITSScheduler:
    coeff = Float(1.20, min=0.80, max=1.50, step=0.05)
    steps = Int(10, min=2, max=1000)
    denoise = Float(1.0, min=0.0, max=1.0, step=0.01)
    RETURNS = ("SIGMAS",)

    def run(self, coeff: float, steps: int, denoise: float) -> tuple:
        return (schedules_extra.gits_sigmas(coeff, steps, denoise),)


# --- sigma tools ----------------------------------------------------------------------------------------

# ManualSigmas is newer than 0.3.64 (the LTX-2 / FLUX.2 templates use it): ComfyUI's node takes one
# STRING "sigmas" (default "1, 0.5") and returns SIGMAS, experimental, in "_for_testing/custom_sampling".
@node("ManualSigmas", category="_for_testing/custom_sampling", experimental=True, function="execute",
      search_aliases=["custom noise schedule", "define sigmas"])
class ManualSigmas:
    sigmas = String("1, 0.5", multiline=False)
    RETURNS = ("SIGMAS",)

    def run(self, sigmas: str) -> tuple:
        return (cs.manual_sigmas(sigmas),)


@node("SplitSigmasDenoise", category=SIGMAS, function="get_sigmas")
class SplitSigmasDenoise:
    sigmas = Input("SIGMAS")
    denoise = Float(1.0, min=0.0, max=1.0, step=0.01)
    RETURNS = (Output("SIGMAS", "high_sigmas"), Output("SIGMAS", "low_sigmas"))

    def run(self, sigmas, denoise: float) -> tuple:
        return sigma_tools.split_by_denoise(sigmas, denoise)


@node("SetFirstSigma", category=SIGMAS, function="set_first_sigma")
class SetFirstSigma:
    sigmas = Input("SIGMAS")
    sigma = Float(136.0, min=0.0, max=20000.0, step=0.001, round=False)
    RETURNS = ("SIGMAS",)

    def run(self, sigmas, sigma: float) -> tuple:
        return (sigma_tools.with_first_sigma(sigmas, sigma),)


@node("ExtendIntermediateSigmas", category=SIGMAS, function="extend")
class ExtendIntermediateSigmas:
    sigmas = Input("SIGMAS")
    steps = Int(2, min=1, max=100)
    start_at_sigma = Float(-1.0, min=-1.0, max=20000.0, step=0.01, round=False)
    end_at_sigma = Float(12.0, min=0.0, max=20000.0, step=0.01, round=False)
    spacing = Combo(list(sigma_tools.SPACINGS))
    RETURNS = ("SIGMAS",)

    def run(self, sigmas, steps: int, start_at_sigma: float, end_at_sigma: float, spacing: str) -> tuple:
        return (sigma_tools.extend_intermediate(sigmas, steps, start_at_sigma, end_at_sigma, spacing),)


@node("SamplingPercentToSigma", category=SIGMAS, function="get_sigma")
class SamplingPercentToSigma:
    model = Input("MODEL")
    sampling_percent = Float(0.0, min=0.0, max=1.0, step=0.0001)
    return_actual_sigma = Boolean(False)
    RETURNS = (Output("FLOAT", "sigma_value"),)

    def run(self, model, sampling_percent: float, return_actual_sigma: bool) -> tuple:
        return (cs.sampling_percent_to_sigma(model, sampling_percent, return_actual_sigma),)


# --- samplers with options ------------------------------------------------------------------------------

@node("SamplerEulerAncestral", category=SAMPLERS, function="get_sampler")
class SamplerEulerAncestral:
    eta = _unit(1.0)
    s_noise = _unit(1.0)
    RETURNS = ("SAMPLER",)

    def run(self, eta: float, s_noise: float) -> tuple:
        return (cs.sampler_choice("euler_ancestral", eta=eta, s_noise=s_noise),)


@node("SamplerEulerAncestralCFGPP", category=SAMPLERS, display_name="SamplerEulerAncestralCFG++",
      function="get_sampler")
class SamplerEulerAncestralCFGPP:
    eta = _unit(1.0, max=1.0)
    s_noise = _unit(1.0, max=10.0)
    RETURNS = ("SAMPLER",)

    def run(self, eta: float, s_noise: float) -> tuple:
        return (cs.sampler_choice("euler_ancestral_cfg_pp", eta=eta, s_noise=s_noise),)


@node("SamplerEulerCFGpp", category="_for_testing", display_name="SamplerEulerCFG++", experimental=True,
      function="execute")
class SamplerEulerCFGpp:
    version = Combo(["regular", "alternative"])
    RETURNS = ("SAMPLER",)

    def run(self, version: str) -> tuple:
        return (cs.sampler_choice("euler_cfg_pp_alternative" if version == "alternative" else "euler_cfg_pp"),)


@node("SamplerLCMUpscale", category=SAMPLERS, function="execute")
class SamplerLCMUpscale:
    scale_ratio = Float(1.0, min=0.1, max=20.0, step=0.01)
    scale_steps = Int(-1, min=-1, max=1000, step=1)
    upscale_method = Combo(cs.LCM_UPSCALE_METHODS)
    RETURNS = ("SAMPLER",)

    def run(self, scale_ratio: float, scale_steps: int, upscale_method: str) -> tuple:
        return (cs.lcm_upscale_choice(scale_ratio, scale_steps, upscale_method),)


@node("SamplerLMS", category=SAMPLERS, function="get_sampler")
class SamplerLMS:
    order = Int(4, min=1, max=100)
    RETURNS = ("SAMPLER",)

    def run(self, order: int) -> tuple:
        return (cs.sampler_choice("lms", order=order),)


@node("SamplerDPMPP_3M_SDE", category=SAMPLERS, function="get_sampler")
class SamplerDPMPP_3M_SDE:  # noqa: N801 - ComfyUI's name
    eta = _unit(1.0)
    s_noise = _unit(1.0)
    noise_device = Combo(NOISE_DEVICES)
    RETURNS = ("SAMPLER",)

    def run(self, eta: float, s_noise: float, noise_device: str) -> tuple:
        return (cs.sampler_choice(cs.noise_device_sampler("dpmpp_3m_sde", noise_device), eta=eta, s_noise=s_noise),)


@node("SamplerDPMPP_2M_SDE", category=SAMPLERS, function="get_sampler")
class SamplerDPMPP_2M_SDE:  # noqa: N801 - ComfyUI's name
    solver_type = Combo(["midpoint", "heun"])
    eta = _unit(1.0)
    s_noise = _unit(1.0)
    noise_device = Combo(NOISE_DEVICES)
    RETURNS = ("SAMPLER",)

    def run(self, solver_type: str, eta: float, s_noise: float, noise_device: str) -> tuple:
        return (cs.sampler_choice(cs.noise_device_sampler("dpmpp_2m_sde", noise_device), eta=eta, s_noise=s_noise,
                                  solver_type=solver_type),)


@node("SamplerDPMPP_SDE", category=SAMPLERS, function="get_sampler")
class SamplerDPMPP_SDE:  # noqa: N801 - ComfyUI's name
    eta = _unit(1.0)
    s_noise = _unit(1.0)
    r = _unit(0.5)
    noise_device = Combo(NOISE_DEVICES)
    RETURNS = ("SAMPLER",)

    def run(self, eta: float, s_noise: float, r: float, noise_device: str) -> tuple:
        return (cs.sampler_choice(cs.noise_device_sampler("dpmpp_sde", noise_device), eta=eta, s_noise=s_noise, r=r),)


@node("SamplerDPMPP_2S_Ancestral", category=SAMPLERS, function="get_sampler")
class SamplerDPMPP_2S_Ancestral:  # noqa: N801 - ComfyUI's name
    eta = _unit(1.0)
    s_noise = _unit(1.0)
    RETURNS = ("SAMPLER",)

    def run(self, eta: float, s_noise: float) -> tuple:
        return (cs.sampler_choice("dpmpp_2s_ancestral", eta=eta, s_noise=s_noise),)


@node("SamplerDPMAdaptative", category=SAMPLERS, function="get_sampler")
class SamplerDPMAdaptative:
    order = Int(3, min=2, max=3)
    rtol = _unit(0.05)
    atol = _unit(0.0078)
    h_init = _unit(0.05)
    pcoeff = _unit(0.0)
    icoeff = _unit(1.0)
    dcoeff = _unit(0.0)
    accept_safety = _unit(0.81)
    eta = _unit(0.0)
    s_noise = _unit(1.0)
    RETURNS = ("SAMPLER",)

    def run(self, order: int, rtol: float, atol: float, h_init: float, pcoeff: float, icoeff: float,
            dcoeff: float, accept_safety: float, eta: float, s_noise: float) -> tuple:
        return (cs.sampler_choice("dpm_adaptive", order=order, rtol=rtol, atol=atol, h_init=h_init, pcoeff=pcoeff,
                                  icoeff=icoeff, dcoeff=dcoeff, accept_safety=accept_safety, eta=eta,
                                  s_noise=s_noise),)


@node("SamplerER_SDE", category=SAMPLERS, function="get_sampler")
class SamplerER_SDE:  # noqa: N801 - ComfyUI's name
    solver_type = Combo(cs.ER_SDE_SOLVER_TYPES)
    max_stage = Int(3, min=1, max=3)
    eta = _unit(1.0)
    s_noise = _unit(1.0)
    RETURNS = ("SAMPLER",)

    def run(self, solver_type: str, max_stage: int, eta: float, s_noise: float) -> tuple:
        return (cs.er_sde_choice(solver_type, max_stage, eta, s_noise),)


# --- noise and guiders ----------------------------------------------------------------------------------

@node("AddNoise", category="_for_testing/custom_sampling/noise", display_name="AddNoise", function="add_noise")
class AddNoise:
    model = Input("MODEL")
    noise = Input("NOISE")
    sigmas = Input("SIGMAS")
    latent_image = Input("LATENT")
    RETURNS = ("LATENT",)

    def run(self, model, noise, sigmas, latent_image: dict) -> tuple:
        return (cs.add_noise(model, noise, sigmas, latent_image),)


@node("PerpNegGuider", category="_for_testing", experimental=True, function="execute")
class PerpNegGuider:
    model = Input("MODEL")
    positive = Input("CONDITIONING")
    negative = Input("CONDITIONING")
    empty_conditioning = Input("CONDITIONING")
    cfg = Float(8.0, min=0.0, max=100.0, step=0.1, round=0.01)
    neg_scale = Float(1.0, min=0.0, max=100.0, step=0.01)
    RETURNS = ("GUIDER",)

    def run(self, model, positive: list, negative: list, empty_conditioning: list, cfg: float,
            neg_scale: float) -> tuple:
        return (cs.PerpNegGuider(model, positive, negative, empty_conditioning, cfg, neg_scale),)


@node("SamplerSASolver", category=SAMPLERS, function="get_sampler")
class SamplerSASolver:
    model = Input("MODEL")
    eta = Float(1.0, min=0.0, max=10.0, step=0.01, round=False)
    sde_start_percent = Float(0.2, min=0.0, max=1.0, step=0.001)
    sde_end_percent = Float(0.8, min=0.0, max=1.0, step=0.001)
    s_noise = _unit(1.0)
    predictor_order = Int(3, min=1, max=6)
    corrector_order = Int(4, min=0, max=6)
    use_pece = Boolean()
    simple_order_2 = Boolean()
    RETURNS = ("SAMPLER",)

    def run(self, model, eta: float, sde_start_percent: float, sde_end_percent: float, s_noise: float,
            predictor_order: int, corrector_order: int, use_pece: bool, simple_order_2: bool) -> tuple:
        return (cs.sa_solver_choice(model, eta, sde_start_percent, sde_end_percent, s_noise, predictor_order,
                                    corrector_order, use_pece, simple_order_2),)
