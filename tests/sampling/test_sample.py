"""The KSampler / KSamplerAdvanced driver: denoise, start/end steps, noise, inpainting, progress."""
from __future__ import annotations

import pytest
import torch

from sampling.guidance import Cond
from sampling.latent_format import SD3, SD15
from sampling.model_sampling import DiscreteSampling, FlowSampling
from sampling.sample import compute_sigmas, sample
from sampling.samplers import SAMPLERS
from sampling.schedules import calculate_sigmas

MS = DiscreteSampling()


def model_fn(x_in, timestep, inputs):
    c = inputs["c_crossattn"].mean(dim=(1, 2)).view(-1, 1, 1, 1)
    return 0.2 * torch.tanh(x_in) + 0.05 * x_in * (timestep.view(-1, 1, 1, 1) / 1000) + c


POS = [Cond(inputs={"c_crossattn": torch.full((1, 77, 8), 0.3)})]
NEG = [Cond(inputs={"c_crossattn": torch.full((1, 77, 8), -0.1)})]


def run(latent, **kw):
    args = {"seed": 42, "steps": 8, "cfg": 6.0, "sampler_name": "euler", "scheduler": "normal", "latent_format": SD15}
    args.update(kw)
    return sample(model_fn, MS, latent, POS, NEG, **args)


def test_denoise_zero_returns_the_input_latent() -> None:
    latent = torch.randn(1, 4, 8, 8)
    assert torch.equal(run(latent, denoise=0.0), latent)


def test_start_step_past_the_end_returns_the_input_latent() -> None:
    latent = torch.randn(1, 4, 8, 8)
    assert torch.equal(run(latent, start_step=8, last_step=10000), latent)


def test_advanced_full_range_equals_ksampler() -> None:
    latent = torch.zeros(1, 4, 8, 8)
    plain = run(latent)
    advanced = run(latent, add_noise=True, start_step=0, last_step=10000, return_with_leftover_noise=False)
    assert torch.equal(plain, advanced)


@pytest.mark.parametrize("sampler_name", ["euler", "dpmpp_2m_sde"])
def test_two_advanced_halves_equal_one_run(sampler_name: str) -> None:
    """Steps 0-3 with leftover noise, then 3-8 without adding noise: the classic refiner hand-off."""
    latent = torch.zeros(1, 4, 8, 8)
    whole = run(latent, sampler_name=sampler_name)
    first = run(latent, sampler_name=sampler_name, start_step=0, last_step=3, return_with_leftover_noise=True)
    second = run(first, sampler_name=sampler_name, add_noise=False, start_step=3, last_step=10000)
    if sampler_name == "euler":
        torch.testing.assert_close(second, whole, atol=1e-4, rtol=1e-4)
    else:   # the Brownian tree spans a different sigma interval in each half: same distribution, not same path
        assert torch.isfinite(second).all()


def test_last_step_forces_full_denoise_unless_leftover_noise() -> None:
    latent = torch.zeros(1, 4, 8, 8)
    seen = []
    run(latent, last_step=3, on_progress=lambda v, m, s: seen.append(float(s.sigma)))
    assert len(seen) == 3
    full = compute_sigmas(MS, "normal", 8)
    assert seen == pytest.approx(full[:3].tolist())


def test_denoise_below_one_uses_the_tail_of_a_longer_schedule() -> None:
    sigmas = compute_sigmas(MS, "karras", 10, "euler", denoise=0.5)
    torch.testing.assert_close(sigmas, calculate_sigmas(MS, "karras", 20)[-11:])


def test_dpm_2_and_uni_pc_drop_the_penultimate_sigma() -> None:
    for name in ("dpm_2", "dpm_2_ancestral", "uni_pc", "uni_pc_bh2"):
        sigmas = compute_sigmas(MS, "karras", 10, name)
        full = calculate_sigmas(MS, "karras", 11)
        torch.testing.assert_close(sigmas, torch.cat([full[:-2], full[-1:]]))


def test_inpainting_keeps_the_unmasked_region() -> None:
    torch.manual_seed(0)
    latent = torch.randn(1, 4, 8, 8)
    mask = torch.zeros(1, 64, 64)
    mask[:, :, 32:] = 1.0                       # pixel-space mask: repaint the right half
    for sampler_name in ("euler", "ddim", "dpmpp_2m", "euler_ancestral"):
        out = run(latent, noise_mask=mask, denoise=0.7, sampler_name=sampler_name)
        torch.testing.assert_close(out[..., :4], latent[..., :4], atol=1e-4, rtol=1e-4)
        assert not torch.allclose(out[..., 4:], latent[..., 4:], atol=1e-2)


def test_progress_reports_value_and_max_and_can_interrupt() -> None:
    latent = torch.zeros(1, 4, 8, 8)
    seen = []
    run(latent, on_progress=lambda value, total, step: seen.append((value, total)))
    assert seen == [(i, 8) for i in range(1, 9)]

    class Stop(Exception):
        pass

    def stop_at_3(value, total, step):
        if value == 3:
            raise Stop()
    with pytest.raises(Stop):
        run(latent, on_progress=stop_at_3)


def test_batch_positions_are_reproducible_alone() -> None:
    """A batch of 2 and a batch of 1 with batch_index=[1] give the same second image."""
    both = run(torch.zeros(2, 4, 8, 8))
    second = run(torch.zeros(1, 4, 8, 8), batch_index=[1])
    torch.testing.assert_close(second[0], both[1])
    assert not torch.allclose(both[0], both[1])


def test_same_seed_same_result_different_seed_different() -> None:
    latent = torch.zeros(1, 4, 8, 8)
    assert torch.equal(run(latent, sampler_name="euler_ancestral"), run(latent, sampler_name="euler_ancestral"))
    assert not torch.equal(run(latent, sampler_name="euler_ancestral"), run(latent, sampler_name="euler_ancestral", seed=1))


def test_empty_latent_gets_the_model_channel_count() -> None:
    out = sample(lambda x, t, c: x * 0.1, FlowSampling(shift=3.0), torch.zeros(1, 4, 8, 8),
                 [Cond(inputs={})], [Cond(inputs={})], seed=1, steps=4, cfg=1.0, sampler_name="euler",
                 scheduler="simple", latent_format=SD3)
    assert out.shape == (1, 16, 8, 8)


@pytest.mark.parametrize("sampler_name", list(SAMPLERS))
@pytest.mark.parametrize("ms", [MS, FlowSampling(shift=3.0)], ids=["discrete", "flow"])
def test_every_sampler_runs_through_the_driver(sampler_name: str, ms) -> None:
    out = sample(model_fn, ms, torch.zeros(1, 4, 8, 8), POS, NEG, seed=3, steps=4, cfg=4.0,
                 sampler_name=sampler_name, scheduler="karras", latent_format=SD15)
    assert out.shape == (1, 4, 8, 8) and torch.isfinite(out).all()


def test_unknown_sampler_name_explains() -> None:
    with pytest.raises(ValueError, match="did you mean 'euler_ancestral'"):
        run(torch.zeros(1, 4, 8, 8), sampler_name="euler_anc")


COMFY_SAMPLER_NAMES = [  # comfy/samplers.py KSAMPLER_NAMES + ["ddim", "uni_pc", "uni_pc_bh2"], in order
    "euler", "euler_cfg_pp", "euler_ancestral", "euler_ancestral_cfg_pp", "heun", "heunpp2", "exp_heun_2_x0",
    "exp_heun_2_x0_sde", "dpm_2", "dpm_2_ancestral", "lms", "dpm_fast", "dpm_adaptive", "dpmpp_2s_ancestral",
    "dpmpp_2s_ancestral_cfg_pp", "dpmpp_sde", "dpmpp_sde_gpu", "dpmpp_2m", "dpmpp_2m_cfg_pp", "dpmpp_2m_sde",
    "dpmpp_2m_sde_gpu", "dpmpp_2m_sde_heun", "dpmpp_2m_sde_heun_gpu", "dpmpp_3m_sde", "dpmpp_3m_sde_gpu", "ddpm",
    "lcm", "ipndm", "ipndm_v", "deis", "res_multistep", "res_multistep_cfg_pp", "res_multistep_ancestral",
    "res_multistep_ancestral_cfg_pp", "gradient_estimation", "gradient_estimation_cfg_pp", "er_sde", "seeds_2",
    "seeds_3", "sa_solver", "sa_solver_pece", "ddim", "uni_pc", "uni_pc_bh2"]
REQUIRED = ["euler", "euler_ancestral", "heun", "heunpp2", "dpm_2", "dpm_2_ancestral", "lms", "dpm_fast",
            "dpm_adaptive", "dpmpp_2s_ancestral", "dpmpp_sde", "dpmpp_2m", "dpmpp_2m_sde", "dpmpp_3m_sde", "ddpm",
            "lcm", "ipndm", "deis", "res_multistep", "ddim", "uni_pc", "uni_pc_bh2", "euler_cfg_pp", "dpmpp_2m_cfg_pp"]


def test_sampler_names_are_comfyui_names_in_comfyui_order() -> None:
    names = list(SAMPLERS)
    assert set(REQUIRED) <= set(names)
    assert names == [n for n in COMFY_SAMPLER_NAMES if n in names]


def test_device_argument_keeps_results_and_returns_to_the_latent_device() -> None:
    latent = torch.zeros(1, 4, 8, 8)
    for name in ("euler", "dpmpp_2m_sde_gpu"):
        out = run(latent, sampler_name=name, device="cpu")
        assert out.device == latent.device
        assert torch.equal(out, run(latent, sampler_name=name))
