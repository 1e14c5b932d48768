"""The custom-sampling nodes through the real Engine on a tiny random-weight SD1.x checkpoint: a SAMPLER
node with KSampler's defaults gives KSampler's image, Perp-Neg at neg_scale 0 is CFG against the empty
prompt, AddNoise follows the noise-scaling formula."""
from __future__ import annotations

import pytest
import torch

from sampling.model_sampling import DiscreteSampling
from sampling.noise import prepare_noise
from tests.nodes.test_builtin_diffusion import (  # noqa: F401 - fixtures
    base_prompt,
    capture,
    checkpoints,
    harness,
    run_ok,
    shared_harness,
)
from tests.nodes.engine_harness import Capture

SD1_SCALE = 0.18215


def _custom(sampler: dict, *, steps: int = 3, guider: dict | None = None, scheduler: str = "normal") -> dict:
    prompt = base_prompt(steps=steps)
    prompt["10"] = {"class_type": "CLIPTextEncode", "inputs": {"text": "", "clip": ["4", 1]}}
    prompt["20"] = {"class_type": "RandomNoise", "inputs": {"noise_seed": 42}}
    prompt["21"] = guider or {"class_type": "CFGGuider", "inputs": {"model": ["4", 0], "positive": ["6", 0],
                                                                   "negative": ["7", 0], "cfg": 7.0}}
    prompt["22"] = sampler
    prompt["23"] = {"class_type": "BasicScheduler", "inputs": {"model": ["4", 0], "scheduler": scheduler,
                                                              "steps": steps, "denoise": 1.0}}
    prompt["3"] = {"class_type": "SamplerCustomAdvanced", "inputs": {"noise": ["20", 0], "guider": ["21", 0],
                                                                   "sampler": ["22", 0], "sigmas": ["23", 0],
                                                                   "latent_image": ["5", 0]}}
    return prompt


def _latent(h, prompt: dict, link=("3", 0)) -> torch.Tensor:
    run_ok(h, capture(prompt, list(link)))
    return Capture.seen[-1]["samples"]


SAMPLER_NODES = [
    ("euler_ancestral", {"class_type": "SamplerEulerAncestral", "inputs": {"eta": 1.0, "s_noise": 1.0}}),
    ("dpmpp_2m_sde", {"class_type": "SamplerDPMPP_2M_SDE",
                      "inputs": {"solver_type": "midpoint", "eta": 1.0, "s_noise": 1.0, "noise_device": "cpu"}}),
    ("dpmpp_3m_sde", {"class_type": "SamplerDPMPP_3M_SDE",
                      "inputs": {"eta": 1.0, "s_noise": 1.0, "noise_device": "cpu"}}),
    ("dpmpp_sde", {"class_type": "SamplerDPMPP_SDE",
                   "inputs": {"eta": 1.0, "s_noise": 1.0, "r": 0.5, "noise_device": "cpu"}}),
    ("dpmpp_2s_ancestral", {"class_type": "SamplerDPMPP_2S_Ancestral", "inputs": {"eta": 1.0, "s_noise": 1.0}}),
    ("lms", {"class_type": "SamplerLMS", "inputs": {"order": 4}}),
    ("er_sde", {"class_type": "SamplerER_SDE",
                "inputs": {"solver_type": "ER-SDE", "max_stage": 3, "eta": 1.0, "s_noise": 1.0}}),
    ("euler_ancestral_cfg_pp", {"class_type": "SamplerEulerAncestralCFGPP", "inputs": {"eta": 1.0, "s_noise": 1.0}}),
    ("euler_cfg_pp", {"class_type": "SamplerEulerCFGpp", "inputs": {"version": "regular"}}),
]


@pytest.mark.parametrize("name, sampler", SAMPLER_NODES, ids=[n for n, _ in SAMPLER_NODES])
def test_sampler_node_with_defaults_gives_the_ksampler_image(harness, name, sampler):
    plain = _latent(harness, base_prompt(steps=3, sampler=name))
    custom = _latent(harness, _custom(sampler))
    torch.testing.assert_close(custom, plain)


def test_sampler_options_change_the_result(harness):
    base = _latent(harness, _custom({"class_type": "SamplerEulerAncestral", "inputs": {"eta": 1.0, "s_noise": 1.0}}))
    calmer = _latent(harness, _custom({"class_type": "SamplerEulerAncestral", "inputs": {"eta": 0.0, "s_noise": 1.0}}))
    euler = _latent(harness, base_prompt(steps=3, sampler="euler"))
    assert not torch.allclose(base, calmer)
    torch.testing.assert_close(calmer, euler)       # eta 0: no ancestral noise, plain Euler


def test_er_sde_ode_differs_from_the_sde_and_alternative_cfg_pp_runs(harness):
    sde = _latent(harness, _custom({"class_type": "SamplerER_SDE", "inputs": {
        "solver_type": "ER-SDE", "max_stage": 3, "eta": 1.0, "s_noise": 1.0}}))
    ode = _latent(harness, _custom({"class_type": "SamplerER_SDE", "inputs": {
        "solver_type": "ODE", "max_stage": 3, "eta": 1.0, "s_noise": 1.0}}))
    assert not torch.allclose(sde, ode)
    alt = _latent(harness, _custom({"class_type": "SamplerEulerCFGpp", "inputs": {"version": "alternative"}}))
    assert torch.isfinite(alt).all() and not torch.allclose(alt, ode)


def test_perp_neg_guider_at_neg_scale_zero_is_cfg_against_the_empty_prompt(harness):
    cfg = _latent(harness, _custom({"class_type": "KSamplerSelect", "inputs": {"sampler_name": "euler"}},
                                   guider={"class_type": "CFGGuider", "inputs": {
                                       "model": ["4", 0], "positive": ["6", 0], "negative": ["10", 0], "cfg": 5.0}}))
    perp = {"class_type": "PerpNegGuider", "inputs": {"model": ["4", 0], "positive": ["6", 0], "negative": ["7", 0],
                                                       "empty_conditioning": ["10", 0], "cfg": 5.0, "neg_scale": 0.0}}
    zero = _latent(harness, _custom({"class_type": "KSamplerSelect", "inputs": {"sampler_name": "euler"}}, guider=perp))
    torch.testing.assert_close(zero, cfg, atol=1e-4, rtol=1e-4)
    perp["inputs"]["neg_scale"] = 1.0
    one = _latent(harness, _custom({"class_type": "KSamplerSelect", "inputs": {"sampler_name": "euler"}}, guider=perp))
    assert not torch.allclose(one, zero, atol=1e-3)


def test_add_noise_follows_the_noise_scaling_formula(harness):
    prompt = base_prompt(steps=4)
    prompt["30"] = {"class_type": "VAEEncode", "inputs": {"pixels": ["8", 0], "vae": ["4", 2]}}
    prompt["20"] = {"class_type": "RandomNoise", "inputs": {"noise_seed": 5}}
    prompt["23"] = {"class_type": "BasicScheduler", "inputs": {"model": ["4", 0], "scheduler": "karras",
                                                              "steps": 4, "denoise": 0.5}}
    prompt["31"] = {"class_type": "AddNoise", "inputs": {"model": ["4", 0], "noise": ["20", 0], "sigmas": ["23", 0],
                                                        "latent_image": ["30", 0]}}
    prompt = capture(prompt, ["30", 0], "97")
    prompt = capture(prompt, ["23", 0], "98")
    prompt = capture(prompt, ["31", 0], "99")
    run_ok(harness, prompt)
    clean, sigmas, noisy = Capture.seen[-3]["samples"], Capture.seen[-2], Capture.seen[-1]["samples"]
    # VAE space: process_out(process_in(l) + |s0 - s_last| n) = l + |s0 - s_last| n / scale_factor
    expected = clean + (sigmas[0] - sigmas[-1]).abs() * prepare_noise(clean, 5) / SD1_SCALE
    torch.testing.assert_close(noisy, expected, atol=1e-4, rtol=1e-4)


def test_schedulers_and_sigma_tools_in_a_graph(harness):
    prompt = base_prompt()
    prompt["40"] = {"class_type": "SDTurboScheduler", "inputs": {"model": ["4", 0], "steps": 2, "denoise": 1.0}}
    prompt["41"] = {"class_type": "SplitSigmasDenoise", "inputs": {"sigmas": ["40", 0], "denoise": 0.5}}
    prompt["42"] = {"class_type": "SamplingPercentToSigma", "inputs": {"model": ["4", 0], "sampling_percent": 0.0,
                                                                      "return_actual_sigma": True}}
    prompt["43"] = {"class_type": "BetaSamplingScheduler", "inputs": {"model": ["4", 0], "steps": 5, "alpha": 0.6,
                                                                     "beta": 0.6}}
    prompt = capture(prompt, ["41", 1], "97")
    prompt = capture(prompt, ["42", 0], "98")
    prompt = capture(prompt, ["43", 0], "99")
    del prompt["9"], prompt["8"], prompt["3"]
    run_ok(harness, prompt)
    low, sigma_max, beta = Capture.seen[-3:]
    ms = DiscreteSampling()
    torch.testing.assert_close(low, torch.tensor([float(ms.sigmas[899]), 0.0]))
    assert sigma_max == pytest.approx(float(ms.sigma_max))
    assert float(beta[0]) == pytest.approx(float(ms.sigma_max)) and float(beta[-1]) == 0.0


def test_new_ksampler_samplers_and_the_sa_solver_node(harness):
    for name in ("seeds_3", "sa_solver", "sa_solver_pece"):
        assert torch.isfinite(_latent(harness, base_prompt(steps=3, sampler=name))).all()
    default = _latent(harness, base_prompt(steps=3, sampler="sa_solver"))
    node = {"class_type": "SamplerSASolver", "inputs": {
        "model": ["4", 0], "eta": 1.0, "sde_start_percent": 0.2, "sde_end_percent": 0.8, "s_noise": 1.0,
        "predictor_order": 3, "corrector_order": 4, "use_pece": False, "simple_order_2": False}}
    torch.testing.assert_close(_latent(harness, _custom(node)), default)   # the node's defaults = KSampler's
    node["inputs"]["eta"] = 0.0
    assert not torch.allclose(_latent(harness, _custom(node)), default, atol=1e-4)
