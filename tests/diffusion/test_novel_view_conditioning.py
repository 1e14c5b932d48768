"""SVD_img2vid_Conditioning, StableZero123_Conditioning(_Batched) and SV3D_Conditioning (diffusion.novel_view)
on a tiny random CLIP vision tower and a tiny SD VAE: each output is rebuilt from its parts (the vision
embedding, the VAE latent of the center-cropped bilinear resize) and the camera embedding is checked against
ComfyUI 0.3.64's camera_embeddings values."""
from __future__ import annotations

import math

import pytest
import torch

from diffusion import clip_vision, loading, novel_view, vae_ops
from imaging.resize import upscale
from model_management import MemorySettings, ModelManager
from models.testing_vision import tiny_clip_vision_config, write_random_clip_vision
from nodes.builtin import families


@pytest.fixture(scope="module")
def parts(tmp_path_factory):
    from tests.diffusion.helpers import write_tiny
    folder = tmp_path_factory.mktemp("models")
    manager = ModelManager(MemorySettings(force_fp32=True))
    _, _, vae = loading.load_checkpoint_file(write_tiny(folder / "tiny.safetensors"), manager)
    write_random_clip_vision(folder / "vision.safetensors", tiny_clip_vision_config(), layout="hf", seed=4)
    vision = clip_vision.load_clip_vision_file(folder / "vision.safetensors", manager)
    image = torch.rand(1, 40, 56, 3, generator=torch.Generator().manual_seed(1))
    return vision, vae, image


def _reference(vision, vae, image, width, height):
    pooled = clip_vision.encode_image(vision, image, "center").image_embeds[None]
    resized = upscale(image.movedim(-1, 1), width, height, "bilinear", "center").movedim(1, -1)
    return pooled, vae_ops.encode(vae, resized)


# ComfyUI 0.3.64's camera_embeddings(elevation, azimuth)
COMFYUI_CAMERAS = [((30.0, 45.0), [-0.5235987901687622, 0.7071067690849304, 0.7071067690849304, 1.5707963705062866]),
                   ((-10.0, 170.0), [0.1745329201221466, 0.17364829778671265, -0.9848077297210693, 1.5707963705062866]),
                   ((0.0, 0.0), [0.0, 0.0, 1.0, 1.5707963705062866])]


@pytest.mark.parametrize("angles, expected", COMFYUI_CAMERAS)
def test_camera_embedding_equals_comfyui(angles, expected) -> None:
    torch.testing.assert_close(novel_view.camera_embedding(*angles), torch.tensor([[expected]]))


def test_svd_conditioning_is_the_embedding_and_latent_with_the_motion_settings(parts) -> None:
    vision, vae, image = parts
    positive, negative, latent = families.SVD_img2vid_Conditioning().run(vision, image, vae, 32, 24, 5, 100, 8, 0.0)
    pooled, encoded = _reference(vision, vae, image, 32, 24)
    [[cond, options]] = positive
    torch.testing.assert_close(cond, pooled)
    torch.testing.assert_close(options["concat_latent_image"], encoded)
    assert {k: options[k] for k in ("motion_bucket_id", "fps", "augmentation_level")} == \
        {"motion_bucket_id": 100, "fps": 8, "augmentation_level": 0.0}
    [[zeros, negative_options]] = negative
    assert not zeros.any() and not negative_options["concat_latent_image"].any()
    assert negative_options["motion_bucket_id"] == 100
    assert tuple(latent["samples"].shape) == (5, 4, 3, 4)


def test_svd_augmentation_adds_noise_of_that_std_before_encoding(parts) -> None:
    vision, vae, image = parts
    torch.manual_seed(5)
    noisy = families.SVD_img2vid_Conditioning().run(vision, image, vae, 32, 24, 1, 127, 6, 0.5)[0][0][1]
    torch.manual_seed(5)
    resized = upscale(image.movedim(-1, 1), 32, 24, "bilinear", "center").movedim(1, -1)
    expected = vae_ops.encode(vae, resized + torch.randn_like(resized) * 0.5)
    torch.testing.assert_close(noisy["concat_latent_image"], expected)


def test_zero123_appends_the_camera_to_the_embedding(parts) -> None:
    vision, vae, image = parts
    positive, negative, latent = families.StableZero123_Conditioning().run(vision, image, vae, 32, 32, 2, 30.0, 45.0)
    pooled, encoded = _reference(vision, vae, image, 32, 32)
    [[cond, options]] = positive
    torch.testing.assert_close(cond, torch.cat([pooled, torch.tensor([[COMFYUI_CAMERAS[0][1]]])], dim=-1))
    torch.testing.assert_close(options["concat_latent_image"], encoded)
    assert negative[0][0].shape == pooled.shape and not negative[0][0].any()
    assert tuple(latent["samples"].shape) == (2, 4, 4, 4)


def test_zero123_batched_advances_the_camera_per_item(parts) -> None:
    vision, vae, image = parts
    positive, _, latent = families.StableZero123_Conditioning_Batched().run(
        vision, image, vae, 32, 32, 3, 10.0, 20.0, 5.0, 30.0)
    pooled, _ = _reference(vision, vae, image, 32, 32)
    cond = positive[0][0]
    assert cond.shape == (3, 1, pooled.shape[-1] + 4)
    for i in range(3):
        torch.testing.assert_close(cond[i, 0, :-4], pooled[0, 0])
        torch.testing.assert_close(cond[i:i + 1, :, -4:], novel_view.camera_embedding(10.0 + 5.0 * i, 20.0 + 30.0 * i))
    assert latent["samples"].shape[0] == 3


def test_sv3d_carries_a_full_turn_of_azimuths(parts) -> None:
    vision, vae, image = parts
    positive, negative, latent = families.SV3D_Conditioning().run(vision, image, vae, 32, 32, 4, 12.5)
    options = positive[0][1]
    assert options["elevation"] == [12.5] * 4 and negative[0][1]["azimuth"] == options["azimuth"]
    assert [round(a, 9) for a in options["azimuth"]] == [0.0, 120.0, 240.0, 360.0]
    assert families.SV3D_Conditioning().run(vision, image, vae, 32, 32, 1, 0.0)[0][0][1]["azimuth"] == [0.0]
    assert tuple(latent["samples"].shape) == (4, 4, 4, 4) and math.isclose(options["azimuth"][1], 120.0)
