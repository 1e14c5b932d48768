"""unCLIP: the noise-augmented image-embedding vector against diffusers' StableUnCLIP formulation, detection of
SD2.1 unCLIP checkpoints, and unCLIP / Revision workflows through the real Engine on tiny random files."""
from __future__ import annotations

import pytest
import torch
from diffusers import DDPMScheduler
from diffusers.models.embeddings import get_timestep_embedding

from model_management import MemorySettings
from models.detection import detect
from models.files import load_state_dict
from models.testing import tiny_sdxl_text_configs, tiny_sdxl_unet_config, write_sdxl_checkpoint
from models.testing_vision import tiny_clip_vision_config, write_random_clip_vision, write_unclip_checkpoint
from models.unclip import ImageEmbedding, NoiseAugmentor, unclip_adm
from nodes import services
from tests.diffusion.helpers import TINY_VAE
from tests.nodes.engine_harness import Capture, Harness, installed, write_reference_image

VISION = tiny_clip_vision_config()                 # projection 48: label_emb takes 96
UNCLIP = "tiny-unclip.safetensors"
SDXL = "tiny-sdxl.safetensors"


def test_single_image_vector_matches_diffusers_noising():
    """[sqrt(a_l) e + sqrt(1 - a_l) n, emb(l)] * strength with the squaredcos_cap_v2 schedule (diffusers'
    DDPMScheduler.add_noise and get_timestep_embedding, as its StableUnCLIP pipelines noise embeddings)."""
    embeds = torch.randn(1, 48, generator=torch.Generator().manual_seed(0))
    out = unclip_adm([ImageEmbedding(embeds, 0.7, 0.3)], NoiseAugmentor(48), seed=25, merge_augmentation=0.05)
    level = round(999 * 0.3)
    noise = torch.randn((1, 48), generator=torch.Generator().manual_seed(15))     # sampler seed - 10
    scheduler = DDPMScheduler(num_train_timesteps=1000, beta_schedule="squaredcos_cap_v2")
    noised = scheduler.add_noise(embeds, noise, torch.tensor([level]))
    emb = get_timestep_embedding(torch.tensor([level]), 48, flip_sin_to_cos=True, downscale_freq_shift=0)
    torch.testing.assert_close(out, torch.cat([noised, emb], 1) * 0.7, atol=1e-5, rtol=0)


def test_several_images_are_summed_then_noised_again_at_the_merge_level():
    embeds = torch.randn(2, 8, generator=torch.Generator().manual_seed(1))
    augmentor = NoiseAugmentor(8)
    out = unclip_adm([ImageEmbedding(embeds, 1.0, 0.0)], augmentor, seed=10, merge_augmentation=0.5)
    g = torch.Generator().manual_seed(0)
    first = torch.randn((1, 8), generator=g)
    merge_noise = torch.randn((1, 8), generator=g)
    parts = [torch.cat(augmentor.augment(row[None], 0, first), 1) for row in embeds]
    summed = parts[0] + parts[1]
    expected = torch.cat(augmentor.augment(summed[:, :8], augmentor.level(0.5), merge_noise), 1)
    torch.testing.assert_close(out, expected)


def test_unclip_checkpoint_detection(tmp_path):
    path = write_unclip_checkpoint(tmp_path / "u.safetensors", VISION, TINY_VAE)
    with load_state_dict(path) as source:
        config = detect(source.shapes())
    assert (config.family, config.variant, config.unet.adm_in_channels) == ("sd2", "unclip", 96)
    assert config.text_encoders[0].kind == "open_clip_h"


@pytest.fixture(scope="module")
def harness_module(tmp_path_factory):
    h = Harness(tmp_path_factory.mktemp("base"))
    h.services = services.NodeServices(h.folders, settings=MemorySettings(force_fp32=True))
    checkpoints = h.folders.paths("checkpoints")[0]
    write_unclip_checkpoint(checkpoints / UNCLIP, VISION, TINY_VAE, seed=3)
    write_sdxl_checkpoint(checkpoints / SDXL, tiny_sdxl_unet_config(), text=tiny_sdxl_text_configs(), vae=TINY_VAE)
    vision_dir = h.folders.paths("clip_vision")[0]
    vision_dir.mkdir(parents=True, exist_ok=True)
    write_random_clip_vision(vision_dir / "vit-hf.safetensors", VISION, layout="hf", seed=4)
    write_random_clip_vision(vision_dir / "vit-openclip.safetensors", VISION, layout="open_clip", seed=4)
    write_random_clip_vision(vision_dir / "big-g.safetensors", tiny_clip_vision_config(projection_dim=1280), seed=5)
    write_reference_image(h, (48, 80))
    h.registry.register("TestCapture", Capture)
    yield h
    h.close()


@pytest.fixture
def harness(harness_module):
    yield from installed(harness_module)


def _unclip_prompt(*, strength=1.0, noise_augmentation=0.0, seed=5, images=1, capture="latent"):
    p = {
        "4": {"class_type": "unCLIPCheckpointLoader", "inputs": {"ckpt_name": UNCLIP}},
        "5": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}},
        "6": {"class_type": "CLIPTextEncode", "inputs": {"text": "a cat", "clip": ["4", 1]}},
        "7": {"class_type": "CLIPTextEncode", "inputs": {"text": "", "clip": ["4", 1]}},
        "10": {"class_type": "LoadImage", "inputs": {"image": "ref.png"}},
        "11": {"class_type": "CLIPVisionEncode", "inputs": {"clip_vision": ["4", 3], "image": ["10", 0],
                                                            "crop": "center"}},
    }
    positive = ["6", 0]
    for n in range(images):
        p[f"2{n}"] = {"class_type": "unCLIPConditioning", "inputs": {
            "conditioning": positive, "clip_vision_output": ["11", 0], "strength": strength,
            "noise_augmentation": noise_augmentation}}
        positive = [f"2{n}", 0]
    p["3"] = {"class_type": "KSampler", "inputs": {
        "seed": seed, "steps": 2, "cfg": 5.0, "sampler_name": "euler", "scheduler": "normal", "denoise": 1.0,
        "model": ["4", 0], "positive": positive, "negative": ["7", 0], "latent_image": ["5", 0]}}
    p["99"] = {"class_type": "TestCapture", "inputs": {"value": ["11", 0] if capture == "vision" else ["3", 0]}}
    return p


def _run(h, p):
    Capture.seen = []
    result = h.run(p)
    assert result.status == "success", result.error
    return Capture.seen[-1]


def test_unclip_workflow(harness):
    """The bundled tower encodes the image; strength 0 is exactly no image (zero ADM vector on both sides);
    the image, its strength, the noise augmentation and the seed (through the augmentation noise) change
    the result."""
    output = _run(harness, _unclip_prompt(capture="vision"))
    assert output.image_embeds.shape == (1, 48) and output["last_hidden_state"].shape == (1, 17, 128)
    assert output.penultimate_hidden_states.shape == (1, 17, 128) and output.mm_projected is None
    no_image = _run(harness, _unclip_prompt(images=0))["samples"]
    assert torch.equal(_run(harness, _unclip_prompt(strength=0.0))["samples"], no_image)
    with_image = _run(harness, _unclip_prompt())["samples"]
    assert (with_image - no_image).abs().max() > 1e-4
    assert (_run(harness, _unclip_prompt(strength=2.0))["samples"] - with_image).abs().max() > 1e-4
    augmented = _run(harness, _unclip_prompt(noise_augmentation=0.5))["samples"]
    assert (augmented - with_image).abs().max() > 1e-4
    harness.engine.clear_cache()
    assert torch.equal(_run(harness, _unclip_prompt(noise_augmentation=0.5))["samples"], augmented)   # seeded
    assert (_run(harness, _unclip_prompt(images=2))["samples"] - with_image).abs().max() > 1e-4


def test_clip_vision_loader_layouts_encode_alike(harness):
    """The same tower saved in the Hugging Face and OpenCLIP layouts gives the same CLIP_VISION_OUTPUT."""
    def encode(name, crop):
        p = {"1": {"class_type": "CLIPVisionLoader", "inputs": {"clip_name": name}},
             "10": {"class_type": "LoadImage", "inputs": {"image": "ref.png"}},
             "2": {"class_type": "CLIPVisionEncode", "inputs": {"clip_vision": ["1", 0], "image": ["10", 0],
                                                                "crop": crop}},
             "99": {"class_type": "TestCapture", "inputs": {"value": ["2", 0]}}}
        return _run(harness, p)
    hf, oc = encode("vit-hf.safetensors", "center"), encode("vit-openclip.safetensors", "center")
    for key in ("image_embeds", "last_hidden_state", "penultimate_hidden_states"):
        torch.testing.assert_close(hf[key], oc[key], atol=1e-5, rtol=0)
    stretched = encode("vit-hf.safetensors", "none")
    assert (stretched.image_embeds - hf.image_embeds).abs().max() > 1e-4      # 48 x 80 image: crop matters


def test_revision_on_sdxl(harness):
    """unCLIPConditioning on an SDXL model replaces the pooled vector by the (bigG-width) image vector."""
    def prompt(strength):
        return {
            "4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": SDXL}},
            "1": {"class_type": "CLIPVisionLoader", "inputs": {"clip_name": "big-g.safetensors"}},
            "10": {"class_type": "LoadImage", "inputs": {"image": "ref.png"}},
            "11": {"class_type": "CLIPVisionEncode", "inputs": {"clip_vision": ["1", 0], "image": ["10", 0],
                                                                "crop": "center"}},
            "5": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}},
            "6": {"class_type": "CLIPTextEncode", "inputs": {"text": "", "clip": ["4", 1]}},
            "2": {"class_type": "unCLIPConditioning", "inputs": {"conditioning": ["6", 0],
                  "clip_vision_output": ["11", 0], "strength": strength, "noise_augmentation": 0.0}},
            "3": {"class_type": "KSampler", "inputs": {
                "seed": 1, "steps": 2, "cfg": 4.0, "sampler_name": "euler", "scheduler": "normal", "denoise": 1.0,
                "model": ["4", 0], "positive": ["2", 0], "negative": ["6", 0], "latent_image": ["5", 0]}},
            "99": {"class_type": "TestCapture", "inputs": {"value": ["3", 0]}}}
    plain = _run(harness, prompt(0.0))["samples"]
    revision = _run(harness, prompt(1.0))["samples"]
    assert (revision - plain).abs().max() > 1e-4


def test_unclip_detection_rules():
    """label_emb on an SD2 UNet: unCLIP when a vision tower is bundled or the width is 1536 / 2048; SDXL's
    widths stay SDXL."""
    from dataclasses import replace as dc_replace
    from models.detection import is_unclip
    from models.testing import tiny_unet_config
    unet = tiny_unet_config("sd2")
    assert is_unclip({}, dc_replace(unet, adm_in_channels=2048))
    assert is_unclip({"embedder.model.visual.conv1.weight": (1,)}, dc_replace(unet, adm_in_channels=96))
    assert not is_unclip({}, dc_replace(unet, adm_in_channels=96))
    assert not is_unclip({"conditioner.embedders.0.model.x": (1,)}, dc_replace(unet, adm_in_channels=2048))
    assert not is_unclip({}, dc_replace(tiny_unet_config("sd1"), adm_in_channels=2048))


def test_wrong_embedding_width_is_a_clear_error():
    from execution.errors import PlexusError
    with pytest.raises(PlexusError, match="takes image embeddings"):
        unclip_adm([ImageEmbedding(torch.zeros(1, 1280), 1.0, 0.0)], NoiseAugmentor(1024), seed=0,
                   merge_augmentation=0.0)


def test_encode_rejects_what_is_not_a_clip_vision_model():
    from diffusion.clip_vision import encode_image
    from execution.errors import PlexusError
    with pytest.raises(PlexusError, match="not a CLIP vision model"):
        encode_image(object(), torch.zeros(1, 8, 8, 3))


def test_checkpoint_face_returns_the_bundled_tower(harness):
    import sys
    sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parents[2] / "compat" / "comfy_faces"))
    try:
        import comfy.sd
        path = harness.folders.find("checkpoints", UNCLIP)
        model, clip, vae, vision = comfy.sd.load_checkpoint_guess_config(str(path), output_clipvision=True)
        assert vision is not None and vision.config.projection_dim == 48
        assert comfy.sd.load_checkpoint_guess_config(str(path))[3] is None
    finally:
        sys.path.pop(0)
        from tests.compat_faces.harness import forget_faces
        forget_faces()


def test_dual_cfg_guider_draws_the_unclip_augmentation_from_the_noise_seed(harness):
    """DualCFGGuider at cfg 1 / 1 gives cond1's prediction alone, so with the same noise seed it equals KSampler
    at cfg 1: the unCLIP noise augmentation must come from the seed (not a fixed one) on both paths."""
    for seed in (5, 11):
        p = _unclip_prompt(noise_augmentation=0.5, seed=seed)
        p["3"]["inputs"]["cfg"] = 1.0
        expected = _run(harness, p)["samples"]
        del p["3"]
        p.update({
            "40": {"class_type": "RandomNoise", "inputs": {"noise_seed": seed}},
            "41": {"class_type": "DualCFGGuider", "inputs": {"model": ["4", 0], "cond1": ["20", 0], "cond2": ["6", 0],
                                                            "negative": ["7", 0], "cfg_conds": 1.0,
                                                            "cfg_cond2_negative": 1.0, "style": "regular"}},
            "42": {"class_type": "KSamplerSelect", "inputs": {"sampler_name": "euler"}},
            "43": {"class_type": "BasicScheduler", "inputs": {"model": ["4", 0], "scheduler": "normal", "steps": 2,
                                                             "denoise": 1.0}},
            "3": {"class_type": "SamplerCustomAdvanced", "inputs": {"noise": ["40", 0], "guider": ["41", 0],
                                                                   "sampler": ["42", 0], "sigmas": ["43", 0],
                                                                   "latent_image": ["5", 0]}}})
        torch.testing.assert_close(_run(harness, p)["samples"], expected, atol=1e-4, rtol=1e-4)
