"""models/clip_vision.py against transformers' CLIPVisionModelWithProjection and SiglipVisionModel on tiny random
weights in the Hugging Face and OpenCLIP file layouts, and the image preprocessing."""
from __future__ import annotations

from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F
from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection, SiglipVisionConfig, SiglipVisionModel

from models.clip_vision import ClipVisionModel, build_clip_vision, preprocess, vision_state_dict
from models.detection import detect_clip_vision
from models.errors import UnknownModelError
from models.testing_vision import hf_to_open_clip_visual

ATOL = 1e-4


def hf_clip(act: str = "gelu", projection: int = 48) -> CLIPVisionModelWithProjection:
    torch.manual_seed(0)
    config = CLIPVisionConfig(hidden_size=128, intermediate_size=256, num_hidden_layers=3, num_attention_heads=2,
                              image_size=56, patch_size=14, projection_dim=projection, hidden_act=act)
    return CLIPVisionModelWithProjection(config).eval()


def hf_siglip() -> SiglipVisionModel:
    torch.manual_seed(1)
    config = SiglipVisionConfig(hidden_size=128, intermediate_size=256, num_hidden_layers=3, num_attention_heads=2,
                                image_size=56, patch_size=14, hidden_act="gelu_pytorch_tanh")
    return SiglipVisionModel(config).eval()


def _pixels(seed: int = 0, batch: int = 2) -> torch.Tensor:
    return torch.randn(batch, 3, 56, 56, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("layout", ["hf", "open_clip"])
def test_clip_matches_transformers(layout):
    ref = hf_clip()
    state = ref.state_dict()
    if layout == "open_clip":
        state = hf_to_open_clip_visual({k: v for k, v in state.items() if not k.endswith("position_ids")})
    ours = build_clip_vision(vision_state_dict(state), torch.float32)
    assert ours.config.num_heads == 2 and ours.config.projection_dim == 48 and ours.config.image_size == 56
    x = _pixels()
    with torch.no_grad():
        expected = ref(pixel_values=x, output_hidden_states=True)
        got = ours(x)
    torch.testing.assert_close(got["image_embeds"], expected.image_embeds, atol=ATOL, rtol=0)
    torch.testing.assert_close(got["last_hidden_state"], expected.last_hidden_state, atol=ATOL, rtol=0)
    torch.testing.assert_close(got["penultimate_hidden_states"], expected.hidden_states[-2], atol=ATOL, rtol=0)


def test_quick_gelu_tower_matches_transformers():
    ref = hf_clip("quick_gelu")
    state = vision_state_dict(ref.state_dict())
    config = replace(detect_clip_vision({k: tuple(v.shape) for k, v in state.items()}), activation="quick_gelu")
    ours = ClipVisionModel(config)
    ours.load_state_dict(state)
    x = _pixels(3)
    with torch.no_grad():
        torch.testing.assert_close(ours(x)["image_embeds"], ref(pixel_values=x).image_embeds, atol=ATOL, rtol=0)


def test_siglip_matches_transformers():
    ref = hf_siglip()
    # the files (sigclip_vision_patch14_384.safetensors) keep the `vision_model.` level transformers 5 drops
    state = vision_state_dict({("" if k.startswith("vision_model.") else "vision_model.") + k: v
                               for k, v in ref.state_dict().items()})
    assert not any(k.startswith("vision_model.head.") for k in state)        # attention-pool head left out
    ours = build_clip_vision(state, torch.float32)
    assert ours.config.is_siglip and ours.config.projection_dim is None
    x = _pixels(4)
    with torch.no_grad():
        expected = ref(pixel_values=x, output_hidden_states=True)
        got = ours(x)
    torch.testing.assert_close(got["last_hidden_state"], expected.last_hidden_state, atol=ATOL, rtol=0)
    torch.testing.assert_close(got["image_embeds"], expected.last_hidden_state, atol=ATOL, rtol=0)
    torch.testing.assert_close(got["penultimate_hidden_states"], expected.hidden_states[-2], atol=ATOL, rtol=0)
    assert got["all_hidden_states"].shape == (2, 3, 16, 128)


def test_detection_of_the_released_sizes():
    """ComfyUI's config files by shape: ViT-L/14 (quick_gelu, 224), ViT-H/14, ViT-bigG/14, SigLIP 384."""
    def shapes(hidden, layers, positions, patch, projection=None, is_siglip=False, mlp=4096):
        s = {"vision_model.embeddings.patch_embedding.weight": (hidden, 3, patch, patch),
             "vision_model.embeddings.position_embedding.weight": (positions, hidden),
             "vision_model.encoder.layers.0.mlp.fc1.weight": (mlp, hidden)}
        s.update({f"vision_model.encoder.layers.{i}.layer_norm1.weight": (hidden,) for i in range(layers)})
        if not is_siglip:
            s["vision_model.embeddings.class_embedding"] = (hidden,)
        if projection:
            s["visual_projection.weight"] = (projection, hidden)
        return s
    vit_l = detect_clip_vision(shapes(1024, 24, 257, 14, 768))
    assert (vit_l.activation, vit_l.image_size, vit_l.num_heads, vit_l.projection_dim) == ("quick_gelu", 224, 16, 768)
    vit_h = detect_clip_vision(shapes(1280, 32, 257, 14, 1024, mlp=5120))
    assert (vit_h.activation, vit_h.num_layers, vit_h.projection_dim) == ("gelu", 32, 1024)
    big_g = detect_clip_vision(shapes(1664, 48, 257, 14, 1280, mlp=8192))
    assert (big_g.num_layers, big_g.projection_dim, big_g.name) == (48, 1280, "ViT-bigG/14 @224")
    siglip = detect_clip_vision(shapes(1152, 27, 729, 14, is_siglip=True, mlp=4304))
    assert (siglip.image_size, siglip.activation, siglip.image_mean) == (384, "gelu_pytorch_tanh", (0.5, 0.5, 0.5))
    with pytest.raises(UnknownModelError):
        detect_clip_vision({"input_blocks.0.0.weight": (4, 4, 3, 3)})


def test_preprocess_centre_crop_and_stretch():
    """Centre crop: short side to the size, middle kept (a left/right split image keeps both halves
    equally); none: stretched; an image of the right size is only quantised and normalised."""
    image = torch.zeros(1, 40, 80, 4)
    image[:, :, 40:, :3] = 1.0                                   # right half white, alpha channel dropped
    x = preprocess(image, 20, mean=(0, 0, 0), std=(1, 1, 1))
    assert x.shape == (1, 3, 20, 20)
    assert x[0, 0, :, :8].max() < 0.05 and x[0, 0, :, 12:].min() > 0.95
    stretched = preprocess(image, 20, mean=(0, 0, 0), std=(1, 1, 1), is_center_crop=False)
    expected = F.interpolate(image[..., :3].movedim(-1, 1), size=(20, 20), mode="bicubic", antialias=True)
    torch.testing.assert_close(stretched, (expected.clip(0, 1) * 255).round() / 255)
    same = torch.rand(1, 20, 20, 3)
    normalised = preprocess(same, 20)
    mean = torch.tensor((0.48145466, 0.4578275, 0.40821073)).view(3, 1, 1)
    std = torch.tensor((0.26862954, 0.26130258, 0.27577711)).view(3, 1, 1)
    torch.testing.assert_close(normalised[0], ((same[0].movedim(-1, 0) * 255).round() / 255 - mean) / std)
