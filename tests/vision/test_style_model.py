"""Style models: the T2I style adapter against transformers' CLIP encoder layers, FLUX Redux's MLP, detection,
StyleModelApply's tokens and attention bias, and a style workflow through the real Engine."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from transformers import CLIPVisionConfig
from transformers.models.clip.modeling_clip import CLIPEncoder

from model_management import MemorySettings
from models.detection import detect_style_model
from models.errors import UnknownModelError
from models.files import load_state_dict
from models.style_model import StyleAdapter, StyleModelConfig, style_model_for
from models.testing import CheckpointSpec, tiny_unet_config, write_random_checkpoint
from models.testing_vision import tiny_clip_vision_config, write_random_clip_vision, write_random_style_model
from nodes import services
from tests.diffusion.helpers import TINY_VAE
from tests.nodes.engine_harness import Capture, Harness, installed, write_reference_image

STYLE = StyleModelConfig("t2i_style", in_width=128, out_width=32, num_layers=2, num_tokens=4)
REDUX = StyleModelConfig("redux", in_width=128, out_width=64)


def _load(path):
    with load_state_dict(path) as source:
        config = detect_style_model(source.shapes())
        module = style_model_for(config)
        module.load_state_dict({k: source[k].clone() for k in source.shapes()})
    return module.eval()


def test_style_adapter_matches_clip_encoder_layers(tmp_path):
    """ln_pre -> OpenAI-CLIP layers (quick_gelu, fused q/k/v split) -> ln_post of the query tokens -> proj,
    with transformers' CLIPEncoder as the layers."""
    ours = _load(write_random_style_model(tmp_path / "style.safetensors", STYLE, seed=1))
    assert ours.config == STYLE
    ref = CLIPEncoder(CLIPVisionConfig(hidden_size=128, intermediate_size=512, num_hidden_layers=2,
                                       num_attention_heads=8, hidden_act="quick_gelu")).eval()
    state = {}
    for n, block in enumerate(ours.transformer_layes):
        q, k, v = block.attn.in_proj_weight.chunk(3)
        qb, kb, vb = block.attn.in_proj_bias.chunk(3)
        base = f"layers.{n}."
        state.update({base + "self_attn.q_proj.weight": q, base + "self_attn.k_proj.weight": k,
                      base + "self_attn.v_proj.weight": v, base + "self_attn.q_proj.bias": qb,
                      base + "self_attn.k_proj.bias": kb, base + "self_attn.v_proj.bias": vb,
                      base + "self_attn.out_proj.weight": block.attn.out_proj.weight,
                      base + "self_attn.out_proj.bias": block.attn.out_proj.bias,
                      base + "layer_norm1.weight": block.ln_1.weight, base + "layer_norm1.bias": block.ln_1.bias,
                      base + "layer_norm2.weight": block.ln_2.weight, base + "layer_norm2.bias": block.ln_2.bias,
                      base + "mlp.fc1.weight": block.mlp.c_fc.weight, base + "mlp.fc1.bias": block.mlp.c_fc.bias,
                      base + "mlp.fc2.weight": block.mlp.c_proj.weight, base + "mlp.fc2.bias": block.mlp.c_proj.bias})
    ref.load_state_dict(state)
    features = torch.randn(2, 17, 128, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        x = torch.cat([features, ours.style_embedding.expand(2, -1, -1)], 1)
        x = F.layer_norm(x, (128,), ours.ln_pre.weight, ours.ln_pre.bias)
        x = ref(inputs_embeds=x).last_hidden_state[:, -4:]
        expected = F.layer_norm(x, (128,), ours.ln_post.weight, ours.ln_post.bias) @ ours.proj
        torch.testing.assert_close(ours(features), expected, atol=1e-4, rtol=0)


def test_redux_and_detection(tmp_path):
    ours = _load(write_random_style_model(tmp_path / "redux.safetensors", REDUX, seed=2))
    assert ours.config == REDUX
    x = torch.randn(1, 9, 128)
    with torch.no_grad():
        expected = ours.redux_down(F.silu(ours.redux_up(x)))
        torch.testing.assert_close(ours(x), expected)
    assert detect_style_model({"style_embedding": (1, 8, 1024), "proj": (1024, 768),
                               **{f"transformer_layes.{i}.ln_1.weight": (1024,) for i in range(3)}}) == \
        StyleModelConfig("t2i_style", 1024, 768, num_layers=3, num_tokens=8)
    assert detect_style_model({"redux_up.weight": (12288, 1152), "redux_down.weight": (4096, 12288)}) == \
        StyleModelConfig("redux", 1152, 4096)
    with pytest.raises(UnknownModelError):
        detect_style_model({"something.weight": (1,)})


CKPT = "tiny.safetensors"


@pytest.fixture(scope="module")
def harness_module(tmp_path_factory):
    h = Harness(tmp_path_factory.mktemp("base"))
    h.services = services.NodeServices(h.folders, settings=MemorySettings(force_fp32=True))
    write_random_checkpoint(h.folders.paths("checkpoints")[0] / CKPT,
                            CheckpointSpec("sd1", tiny_unet_config("sd1"), TINY_VAE))
    for kind in ("clip_vision", "style_models"):
        h.folders.paths(kind)[0].mkdir(parents=True, exist_ok=True)
    write_random_clip_vision(h.folders.paths("clip_vision")[0] / "vit.safetensors", tiny_clip_vision_config(), seed=4)
    write_random_style_model(h.folders.paths("style_models")[0] / "style.safetensors", STYLE, seed=1)
    write_reference_image(h, (56, 56))
    h.registry.register("TestCapture", Capture)
    yield h
    h.close()


@pytest.fixture
def harness(harness_module):
    yield from installed(harness_module)


def _prompt(*, strength=1.0, strength_type="multiply", styled=True, capture="latent"):
    p = {
        "4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": CKPT}},
        "1": {"class_type": "CLIPVisionLoader", "inputs": {"clip_name": "vit.safetensors"}},
        "2": {"class_type": "StyleModelLoader", "inputs": {"style_model_name": "style.safetensors"}},
        "10": {"class_type": "LoadImage", "inputs": {"image": "ref.png"}},
        "11": {"class_type": "CLIPVisionEncode", "inputs": {"clip_vision": ["1", 0], "image": ["10", 0],
                                                            "crop": "center"}},
        "5": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}},
        "6": {"class_type": "CLIPTextEncode", "inputs": {"text": "a cat", "clip": ["4", 1]}},
        "7": {"class_type": "CLIPTextEncode", "inputs": {"text": "", "clip": ["4", 1]}},
        "12": {"class_type": "StyleModelApply", "inputs": {"conditioning": ["6", 0], "style_model": ["2", 0],
               "clip_vision_output": ["11", 0], "strength": strength, "strength_type": strength_type}},
        "3": {"class_type": "KSampler", "inputs": {
            "seed": 2, "steps": 3, "cfg": 5.0, "sampler_name": "euler", "scheduler": "normal", "denoise": 1.0,
            "model": ["4", 0], "positive": ["12", 0] if styled else ["6", 0], "negative": ["7", 0],
            "latent_image": ["5", 0]}},
        "99": {"class_type": "TestCapture", "inputs": {"value": ["12", 0] if capture == "cond" else ["3", 0]}}}
    return p


def _run(h, p):
    Capture.seen = []
    result = h.run(p)
    assert result.status == "success", result.error
    return Capture.seen[-1]


def test_style_tokens_are_appended_and_scaled(harness):
    cond = _run(harness, _prompt(capture="cond"))
    text, options = cond[0]
    assert text.shape == (1, 77 + 4, 32) and "attention_mask" not in options
    half = _run(harness, _prompt(strength=0.5, capture="cond"))[0][0]
    torch.testing.assert_close(half[:, 77:], text[:, 77:] * 0.5)
    torch.testing.assert_close(half[:, :77], text[:, :77])


def test_attn_bias_builds_comfyui_mask(harness):
    text, options = _run(harness, _prompt(strength=0.5, strength_type="attn_bias", capture="cond"))[0]
    mask = options["attention_mask"]
    assert mask.shape == (1, 77 + 4 + 1, 77 + 4 + 1) and mask.dtype == torch.float16
    bias = torch.log(torch.tensor(0.5)).half()
    assert torch.all(mask[:, :77, 77:81] == bias) and torch.all(mask[:, 81:, 77:81] == bias)
    assert torch.all(mask[:, :, :77] == 0) and torch.all(mask[:, 77:81, 77:81] == 0)
    assert options["attention_mask_img_shape"] == (1, 1)
    assert text.shape == (1, 81, 32)                                  # tokens not scaled with attn_bias
    unit = _run(harness, _prompt(strength=1.0, strength_type="attn_bias", capture="cond"))[0]
    assert "attention_mask" not in unit[1]


def test_style_changes_the_image(harness):
    plain = _run(harness, _prompt(styled=False))["samples"]
    styled = _run(harness, _prompt())["samples"]
    assert (styled - plain).abs().max() > 1e-4
