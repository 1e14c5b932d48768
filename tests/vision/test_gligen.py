"""GLIGEN: the gated self-attention blocks and the position net against diffusers' GatedSelfAttentionDense and
GLIGENTextBoundingboxProjection, the file layout, and GLIGEN box workflows through the real Engine."""
from __future__ import annotations

import pytest
import torch
from diffusers.models.attention import GatedSelfAttentionDense
from diffusers.models.embeddings import GLIGENTextBoundingboxProjection

from model_management import MemorySettings
from models.detection import detect_gligen
from models.files import load_state_dict
from models.gligen import Gligen, fuser_key_map, gligen_blocks
from models.testing import CheckpointSpec, tiny_unet_config, write_random_checkpoint
from models.testing_vision import unet_transformer_blocks, write_random_gligen
from nodes import services
from tests.diffusion.helpers import TINY_VAE
from tests.nodes.engine_harness import Capture, Harness, installed

UNET = tiny_unet_config("sd1")                     # 7 transformer blocks, widths 32 / 64
TEXT_WIDTH = 32                                    # the tiny CLIP-L's pooled width


def _load(path) -> Gligen:
    with load_state_dict(path) as source:
        shapes = source.shapes()
        module = Gligen(detect_gligen(shapes))
        key_map = fuser_key_map(shapes, gligen_blocks(shapes))
        module.load_state_dict({m: source[f].clone() for m, f in key_map.items()})
    return module.eval()


@pytest.mark.parametrize("prefix", ["", "model.diffusion_model."])
def test_layout_and_detection(tmp_path, prefix):
    path = write_random_gligen(tmp_path / "g.safetensors", UNET, text_width=TEXT_WIDTH, prefix=prefix)
    with load_state_dict(path) as source:
        shapes = source.shapes()
        assert gligen_blocks(shapes) == unet_transformer_blocks(UNET)
        config = detect_gligen(shapes)
    assert config.fuser_widths == (32, 64, 64, 64, 64, 32, 32)        # in 1, 2; middle; out 2..5
    assert (config.entity_width, config.text_width, config.hidden_width) == (768, TEXT_WIDTH, 512)
    assert any(k.startswith(prefix + "middle_block.1.transformer_blocks.0.fuser.") for k in shapes)


def test_blocks_and_position_net_match_diffusers(tmp_path):
    ours = _load(write_random_gligen(tmp_path / "g.safetensors", UNET, text_width=TEXT_WIDTH, seed=3))
    fuser = ours.fusers[1]                                                     # 64 wide, 8 heads of 8
    ref = GatedSelfAttentionDense(64, 768, 8, 8).eval()
    ref.load_state_dict(fuser.state_dict())
    x = torch.randn(2, 16, 64, generator=torch.Generator().manual_seed(0))
    objs = torch.randn(2, 30, 768, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        torch.testing.assert_close(fuser(x, objs), ref(x, objs), atol=1e-4, rtol=0)
    net = GLIGENTextBoundingboxProjection(TEXT_WIDTH, 768).eval()
    net.load_state_dict(ours.position_net.state_dict())
    boxes = torch.rand(2, 30, 4, generator=torch.Generator().manual_seed(2))
    masks = (torch.arange(30) < 3).float().expand(2, -1)
    text = torch.randn(2, 30, TEXT_WIDTH, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        torch.testing.assert_close(ours.position_net(boxes, masks, text),
                                   net(boxes, masks, positive_embeddings=text), atol=1e-4, rtol=0)


def test_entities_pad_to_thirty_null_slots(tmp_path):
    ours = _load(write_random_gligen(tmp_path / "g.safetensors", UNET, text_width=TEXT_WIDTH, seed=3))
    pooled = torch.randn(1, TEXT_WIDTH)
    with torch.no_grad():
        one = ours.entities([(0.0, 0.25, 0.5, 1.0)], [pooled], batch=2)
        empty = ours.entities([], [], batch=1)
    assert one.shape == (2, 30, 768) and torch.equal(one[0], one[1])
    torch.testing.assert_close(one[:1, 1:], empty[:, 1:])                    # padding = the null entity
    assert (one[0, 0] - empty[0, 0]).abs().max() > 1e-3
    with pytest.raises(ValueError, match="at most 30"):
        ours.entities([(0, 0, 1, 1)] * 31, [pooled] * 31, batch=1)


CKPT = "tiny.safetensors"


@pytest.fixture(scope="module")
def harness_module(tmp_path_factory):
    h = Harness(tmp_path_factory.mktemp("base"))
    h.services = services.NodeServices(h.folders, settings=MemorySettings(force_fp32=True))
    write_random_checkpoint(h.folders.paths("checkpoints")[0] / CKPT, CheckpointSpec("sd1", UNET, TINY_VAE))
    folder = h.folders.paths("gligen")[0]
    folder.mkdir(parents=True, exist_ok=True)
    write_random_gligen(folder / "gligen.safetensors", UNET, text_width=TEXT_WIDTH, seed=1)
    write_random_gligen(folder / "gligen_closed.safetensors", UNET, text_width=TEXT_WIDTH, seed=1, alpha=0.0)
    h.registry.register("TestCapture", Capture)
    yield h
    h.close()


@pytest.fixture
def harness(harness_module):
    yield from installed(harness_module)


def _prompt(boxes=(), *, name="gligen.safetensors", capture="latent"):
    """boxes: (text, width, height, x, y) applied in order to the positive."""
    p = {
        "4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": CKPT}},
        "1": {"class_type": "GLIGENLoader", "inputs": {"gligen_name": name}},
        "5": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}},
        "6": {"class_type": "CLIPTextEncode", "inputs": {"text": "a park", "clip": ["4", 1]}},
        "7": {"class_type": "CLIPTextEncode", "inputs": {"text": "", "clip": ["4", 1]}},
    }
    positive = ["6", 0]
    for n, (text, width, height, x, y) in enumerate(boxes):
        p[f"2{n}"] = {"class_type": "GLIGENTextBoxApply", "inputs": {
            "conditioning_to": positive, "clip": ["4", 1], "gligen_textbox_model": ["1", 0], "text": text,
            "width": width, "height": height, "x": x, "y": y}}
        positive = [f"2{n}", 0]
    p["3"] = {"class_type": "KSampler", "inputs": {
        "seed": 3, "steps": 3, "cfg": 5.0, "sampler_name": "euler", "scheduler": "normal", "denoise": 1.0,
        "model": ["4", 0], "positive": positive, "negative": ["7", 0], "latent_image": ["5", 0]}}
    p["99"] = {"class_type": "TestCapture", "inputs": {"value": positive if capture == "cond" else ["3", 0]}}
    return p


def _run(h, p):
    Capture.seen = []
    result = h.run(p)
    assert result.status == "success", result.error
    return Capture.seen[-1]


def test_text_boxes_accumulate_in_comfyui_shape(harness):
    cond = _run(harness, _prompt([("a dog", 32, 24, 8, 16), ("a ball", 16, 16, 40, 40)], capture="cond"))
    kind, model, params = cond[0][1]["gligen"]
    assert kind == "position" and len(params) == 2
    pooled, h, w, y, x = params[0]
    assert pooled.shape == (1, TEXT_WIDTH) and (h, w, y, x) == (3, 4, 2, 1)
    assert params[1][1:] == (2, 2, 5, 5)


def test_boxes_steer_the_image_and_closed_gates_change_nothing(harness, monkeypatch):
    plain = _run(harness, _prompt())["samples"]
    boxed = _run(harness, _prompt([("a dog", 32, 32, 0, 0)]))["samples"]
    assert (boxed - plain).abs().max() > 1e-4
    moved = _run(harness, _prompt([("a dog", 32, 32, 32, 32)]))["samples"]
    assert (moved - boxed).abs().max() > 1e-4
    closed = _run(harness, _prompt([("a dog", 32, 32, 0, 0)], name="gligen_closed.safetensors"))["samples"]
    torch.testing.assert_close(closed, plain, atol=1e-6, rtol=0)          # tanh(0) gates: the blocks add 0


def test_the_negative_shares_the_boxes_and_batches_with_the_positive(harness, monkeypatch):
    from models.gligen import GatedSelfAttention
    batches: list[int] = []
    original = GatedSelfAttention.forward

    def counting(self, x, entities):
        batches.append(x.shape[0])
        return original(self, x, entities)
    monkeypatch.setattr(GatedSelfAttention, "forward", counting)
    _run(harness, _prompt([("a dog", 32, 32, 0, 0)]))
    assert batches and set(batches) == {2}                               # cond + uncond in one forward
