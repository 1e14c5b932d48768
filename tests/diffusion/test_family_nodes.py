"""The nodes of families Plexus does not load yet (nodes/builtin/families.py): video latents, schedules and
guidance, other families' empty latents, Stable Cascade's model sampling and the conditioning-value nodes.

References: ComfyUI 0.3.64's shape formulas for the empty latents; ComfyUI's own LTXVScheduler output on the
same inputs (values below, from comfy_extras.nodes_lt run in the peer venv); the CFG formulas of
VideoLinear/TriangleCFGGuidance checked through the sampler on a tiny random-weight SD1.5 checkpoint (one
Euler step to sigma 0 returns the guided x0, so each frame's output is uncond + scale_i (cond - uncond))."""
from __future__ import annotations

import math

import pytest
import torch

from diffusion import conditioning, guidance_patches as gp, ksampler, loading, model_patches
from execution.errors import PlexusError
from model_management import MemorySettings, ModelManager
from nodes.builtin import families
from sampling.flux import FluxSampling
from sampling.model_sampling import Eps, StableCascadeSampling
from sampling.schedules_extra import ltxv_shift, ltxv_sigmas


@pytest.mark.parametrize("cls, args, shape", [
    (families.EmptyHunyuanLatentVideo, (848, 480, 25, 2), (2, 16, 7, 60, 106)),
    (families.EmptyHunyuanLatentVideo, (64, 48, 1, 1), (1, 16, 1, 6, 8)),
    (families.EmptyMochiLatentVideo, (848, 480, 25, 1), (1, 12, 5, 60, 106)),
    (families.EmptyLTXVLatentVideo, (768, 512, 97, 1), (1, 128, 13, 16, 24)),
    (families.EmptyCosmosLatentVideo, (1280, 704, 121, 1), (1, 16, 16, 88, 160)),
    (families.EmptyHunyuanImageLatent, (2048, 1024, 3), (3, 64, 32, 64)),
    (families.EmptyChromaRadianceLatentImage, (80, 48, 2), (2, 3, 48, 80)),
    (families.EmptyLatentHunyuan3Dv2, (3072, 2), (2, 64, 3072)),
    (families.EmptyAceStepLatentAudio, (120.0, 1), (1, 8, 16, int(120.0 * 44100 / 512 / 8))),
])
def test_empty_latents_have_comfyuis_shapes(cls, args, shape) -> None:
    (latent,) = cls().run(*args)
    assert tuple(latent["samples"].shape) == shape and not latent["samples"].any()
    assert latent.get("type") == {families.EmptyLatentHunyuan3Dv2: "hunyuan3dv2",
                                  families.EmptyAceStepLatentAudio: "audio"}.get(cls)


def test_stable_cascade_empty_latent_gives_both_stages() -> None:
    stage_c, stage_b = families.StableCascade_EmptyLatentImage().run(1024, 768, 42, 2)
    assert tuple(stage_c["samples"].shape) == (2, 16, 768 // 42, 1024 // 42)
    assert tuple(stage_b["samples"].shape) == (2, 4, 192, 256)
    assert families.StableCascade_EmptyLatentImage.RETURN_NAMES == ("stage_c", "stage_b")


def test_trim_video_latent_drops_leading_frames_and_keeps_other_keys() -> None:
    samples = torch.arange(2 * 3 * 5 * 2 * 2, dtype=torch.float32).reshape(2, 3, 5, 2, 2)
    latent = {"samples": samples, "batch_index": [4, 5]}
    (out,) = families.TrimVideoLatent().run(latent, 2)
    torch.testing.assert_close(out["samples"], samples[:, :, 2:])
    assert out["batch_index"] == [4, 5] and latent["samples"] is samples and samples.shape[2] == 5
    assert families.TrimVideoLatent().run(latent, 9)[0]["samples"].shape[2] == 0


# ComfyUI 0.3.64's LTXVScheduler on the same inputs (steps, max_shift, base_shift, stretch, terminal, tokens)
COMFYUI_LTXV = [
    ((8, 2.05, 0.95, True, 0.1, 4096),
     [0.9999999, 0.9657117, 0.9218748, 0.8638561, 0.7834455, 0.6645793, 0.4710027, 0.1, 0.0]),
    ((5, 2.05, 0.95, False, 0.1, 4096), [0.9999999, 0.9688199, 0.9209602, 0.8381511, 0.6600924, 0.0]),
    ((6, 1.5, 0.5, True, 0.25, 3 * 8 * 12), [1.0, 0.8738378, 0.7372361, 0.5888432, 0.4270635, 0.25, 0.0]),
]


@pytest.mark.parametrize("args, expected", COMFYUI_LTXV)
def test_ltxv_scheduler_equals_comfyui(args, expected) -> None:
    torch.testing.assert_close(ltxv_sigmas(*args), torch.tensor(expected), rtol=0, atol=2e-6)


def test_ltxv_scheduler_node_counts_the_latents_tokens() -> None:
    latent = {"samples": torch.zeros(1, 128, 3, 8, 12)}
    (sigmas,) = families.LTXVScheduler().run(6, 1.5, 0.5, True, 0.25, latent)
    torch.testing.assert_close(sigmas, torch.tensor(COMFYUI_LTXV[2][1]), rtol=0, atol=2e-6)
    (default,) = families.LTXVScheduler().run(5, 2.05, 0.95, False, 0.1)
    torch.testing.assert_close(default, torch.tensor(COMFYUI_LTXV[1][1]), rtol=0, atol=2e-6)


def test_ltxv_shift_is_the_line_through_its_two_anchors() -> None:
    assert math.isclose(ltxv_shift(1024, 2.05, 0.95), 0.95) and math.isclose(ltxv_shift(4096, 2.05, 0.95), 2.05)
    assert math.isclose(ltxv_shift(2560, 2.0, 1.0), 1.5)


@pytest.fixture(scope="module")
def parts(tmp_path_factory):
    from tests.diffusion.helpers import write_tiny
    path = write_tiny(tmp_path_factory.mktemp("ckpt") / "tiny.safetensors")
    model, clip, _ = loading.load_checkpoint_file(path, ModelManager(MemorySettings(force_fp32=True)))
    return model, conditioning.encode_text(clip, "a cat"), conditioning.encode_text(clip, "a dog")


def test_model_sampling_ltxv_is_flux_sampling_with_the_token_shift(parts) -> None:
    model, _, _ = parts
    latent = {"samples": torch.zeros(1, 128, 2, 4, 4)}
    (patched,) = families.ModelSamplingLTXV().run(model, 2.05, 0.95, latent)
    ms = patched.model_sampling
    mu = ltxv_shift(32, 2.05, 0.95)
    assert isinstance(ms, FluxSampling) and math.isclose(ms.shift, mu)
    t = torch.tensor([0.25, 0.5, 0.9])
    torch.testing.assert_close(ms.sigma(t), math.exp(mu) / (math.exp(mu) + 1 / t - 1))
    assert not isinstance(model.model_sampling, FluxSampling)            # the input handle is untouched
    assert math.isclose(model_patches.with_ltxv_sampling(model, 2.05, 0.95).model_sampling.shift, 2.05)


def _sample(model, positive, negative, *, cfg: float, frames: int = 5) -> torch.Tensor:
    return ksampler.ksample(model, {"samples": torch.zeros(frames, 4, 8, 8)}, positive, negative, seed=7,
                            steps=1, cfg=cfg, sampler_name="euler", scheduler="normal")["samples"]


@pytest.mark.parametrize("shape, scales", [
    ("linear", [1.5, 2.375, 3.25, 4.125, 5.0]),           # linspace(min_cfg, cfg, frames)
    ("triangle", [1.5, 3.25, 5.0, 3.25, 1.5]),            # min_cfg at both ends, cfg in the middle
])
def test_video_cfg_guidance_scales_each_frame(parts, shape, scales) -> None:
    model, pos, neg = parts
    node = families.VideoLinearCFGGuidance if shape == "linear" else families.VideoTriangleCFGGuidance
    (patched,) = node().run(model, 1.5)
    guided = _sample(patched, pos, neg, cfg=5.0)
    cond = _sample(model, pos, neg, cfg=1.0)
    uncond = _sample(model, neg, neg, cfg=1.0)
    assert not torch.allclose(cond, uncond, atol=1e-4)
    expected = uncond + torch.tensor(scales).reshape(5, 1, 1, 1) * (cond - uncond)
    torch.testing.assert_close(guided, expected, rtol=1e-3, atol=1e-3)


def test_temporal_attention_factors_pick_output_projections_by_kind() -> None:
    keys = ["diffusion_model.input_blocks.1.1.transformer_blocks.0.attn1.to_out.0.weight",
            "diffusion_model.input_blocks.1.1.transformer_blocks.0.attn1.to_out.0.bias",
            "diffusion_model.input_blocks.1.1.transformer_blocks.0.attn1.to_q.weight",
            "diffusion_model.input_blocks.1.1.time_stack.0.attn1.to_out.0.weight",
            "diffusion_model.input_blocks.1.1.transformer_blocks.0.attn2.to_out.0.weight",
            "diffusion_model.input_blocks.1.1.time_stack.0.attn2.to_out.0.bias"]
    assert gp.temporal_attention_factors(keys, 2.0, 3.0, 4.0, 5.0) == {
        keys[0]: 2.0, keys[1]: 2.0, keys[3]: 3.0, keys[4]: 4.0, keys[5]: 5.0}
    assert gp.temporal_attention_factors(keys, 1.0, 3.0, 1.0, 1.0) == {keys[3]: 3.0}


def test_temporal_attention_multiply_on_an_image_unet_scales_the_structural_output(parts) -> None:
    model, pos, neg = parts
    (patched,) = families.UNetTemporalAttentionMultiply().run(model, 0.5, 7.0, 1.0, 7.0)
    reference = gp.with_unet_attention_multiplied(model, "attn1", 1.0, 1.0, 1.0, 0.5)
    assert patched.patched_keys() == reference.patched_keys() and not model.patched_keys()
    torch.testing.assert_close(_sample(patched, pos, neg, cfg=3.0, frames=1),
                               _sample(reference, pos, neg, cfg=3.0, frames=1))


def test_stable_cascade_sampling_equals_comfyui(parts) -> None:
    """Values of ComfyUI 0.3.64's StableCascadeSampling + EPS at shift 2 (and 1), run in the peer venv."""
    model, _, _ = parts
    (patched,) = families.ModelSamplingStableCascade().run(model, 2.0)
    ms = patched.model_sampling
    assert isinstance(ms, StableCascadeSampling) and isinstance(ms.prediction, Eps)
    close = dict(rtol=2e-6, atol=2e-6)
    torch.testing.assert_close(ms.sigmas[[0, 1, 99, 4999, 9998, 9999]],
                               torch.tensor([0.010001, 0.010001, 0.050266, 2.024779, 99.995003, 99.995003]),
                               rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(ms.sigma(torch.tensor([0.05, 0.3, 0.7, 0.95])),
                               torch.tensor([0.179523, 1.040755, 3.961396, 25.614548]), **close)
    torch.testing.assert_close(ms.timestep(torch.tensor([0.2, 1.0, 5.0, 40.0])),
                               torch.tensor([0.11892, 0.49605, 0.873339, 0.983962]), **close)
    assert [round(ms.percent_to_sigma(p), 5) for p in (0.0, 0.25, 0.5, 0.9, 1.0)] == \
        [999999999.9, 4.87087, 2.02478, 0.33887, 0.0]
    unshifted = StableCascadeSampling(shift=1.0)
    torch.testing.assert_close(unshifted.sigma(torch.tensor([0.05, 0.3, 0.7, 0.95])),
                               torch.tensor([0.089761, 0.520377, 1.980698, 12.807274]), **close)
    # without a shift, the timestep inverts sigma (the cosine schedule of Nichol & Dhariwal 2021, eq. 17)
    t = torch.tensor([0.1, 0.4, 0.8])
    torch.testing.assert_close(unshifted.timestep(unshifted.sigma(t)), t, rtol=1e-4, atol=1e-4)
    assert model.model_sampling is not ms


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    from tests.diffusion.helpers import write_tiny
    path = write_tiny(tmp_path_factory.mktemp("ckpt-clip") / "tiny.safetensors")
    return loading.load_checkpoint_file(path, ModelManager(MemorySettings(force_fp32=True)))[1]


def test_lumina2_encodes_the_system_prompt_before_the_users(clip) -> None:
    (out,) = families.CLIPTextEncodeLumina2().run("alignment", "a red fox", clip)
    text = ("You are an assistant designed to generate high-quality images with the highest degree of "
            "image-text alignment based on textual prompts. <Prompt Start> a red fox")
    (reference,) = conditioning.encode_text(clip, text)
    torch.testing.assert_close(out[0][0], reference[0])
    assert families.CLIPTextEncodeLumina2.INPUT_TYPES()["required"]["system_prompt"][0] == ["superior", "alignment"]


def test_pixart_alpha_encoding_carries_the_size(clip) -> None:
    (out,) = families.CLIPTextEncodePixArtAlpha().run(640, 480, "a boat", clip)
    (reference,) = conditioning.encode_text(clip, "a boat")
    torch.testing.assert_close(out[0][0], reference[0])
    assert out[0][1]["width"] == 640 and out[0][1]["height"] == 480
    torch.testing.assert_close(out[0][1]["pooled_output"], reference[1]["pooled_output"])


def test_ltxv_conditioning_and_stage_b_add_their_keys_without_changing_the_input() -> None:
    cond = torch.ones(1, 3, 4)
    positive, negative = [[cond, {"a": 1}]], [[cond * 0, {}], [cond, {"b": 2}]]
    new_positive, new_negative = families.LTXVConditioning().run(positive, negative, 24.0)
    assert new_positive[0][1] == {"a": 1, "frame_rate": 24.0} and positive[0][1] == {"a": 1}
    assert [entry[1]["frame_rate"] for entry in new_negative] == [24.0, 24.0] and new_negative[1][1]["b"] == 2
    stage_c = torch.randn(1, 16, 3, 3)
    (prior,) = families.StableCascade_StageB_Conditioning().run(positive, {"samples": stage_c})
    assert prior[0][1]["stable_cascade_prior"] is stage_c and prior[0][0] is cond
    assert "stable_cascade_prior" not in positive[0][1]


def test_ltxv_crop_guides_removes_one_frame_per_distinct_guide_frame() -> None:
    samples = torch.randn(1, 4, 6, 2, 2)
    mask = torch.rand(1, 1, 6, 1, 1)
    guides = torch.tensor([[4, 0, 0], [4, 0, 1], [5, 0, 0]])        # two guide frames, one with two cells
    positive, negative = [[torch.ones(1), {"keyframe_idxs": guides}]], [[torch.zeros(1), {"keyframe_idxs": guides}]]
    new_positive, new_negative, out = families.LTXVCropGuides().run(positive, negative,
                                                                  {"samples": samples, "noise_mask": mask})
    torch.testing.assert_close(out["samples"], samples[:, :, :4])
    torch.testing.assert_close(out["noise_mask"], mask[:, :, :4])
    assert new_positive[0][1]["keyframe_idxs"] is None and new_negative[0][1]["keyframe_idxs"] is None
    assert positive[0][1]["keyframe_idxs"] is guides
    # without guides: unchanged, with a ones mask over the frames (ComfyUI's get_noise_mask)
    same_positive, _, plain = families.LTXVCropGuides().run([[torch.ones(1), {}]], [], {"samples": samples})
    torch.testing.assert_close(plain["samples"], samples)
    torch.testing.assert_close(plain["noise_mask"], torch.ones(1, 1, 6, 1, 1))
    assert same_positive[0][1] == {}


def test_sd_x4_upscale_conditioning_carries_the_image_at_a_quarter_of_the_target() -> None:
    from imaging.resize import upscale
    images = torch.rand(2, 20, 32, 3)
    cond = torch.ones(1, 3, 4)
    positive, negative, latent = families.SD_4XUpscale_Conditioning().run(
        images, [[cond, {"a": 1}]], [[cond, {}]], 2.5, 0.2)
    # target 80 x 50: the image goes in at 20 x 12 (common_upscale's center crop + bilinear), in [-1, 1]
    expected = upscale(images.movedim(-1, 1) * 2 - 1, 20, 12, "bilinear", "center")
    for options in (positive[0][1], negative[0][1]):
        assert options["noise_augmentation"] == 0.2 and options["concat_image"].shape == (2, 3, 12, 20)
        torch.testing.assert_close(options["concat_image"], expected)
    assert positive[0][1]["a"] == 1 and positive[0][0] is cond
    assert float(expected.min()) >= -1.0 and float(expected.max()) <= 1.0 and float(expected.min()) < 0
    assert tuple(latent["samples"].shape) == (2, 4, 12, 20) and not latent["samples"].any()
    with pytest.raises(PlexusError, match="under 4 pixels"):
        families.SD_4XUpscale_Conditioning().run(images, [], [], 0.1, 0.0)
