"""LoraLoader / HypernetworkLoader in real graphs: checkpoint loader -> LoRA -> CLIPTextEncode -> KSampler,
through the Engine, with a tiny SD1 checkpoint in the real layout."""
from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file

from model_management import MemorySettings
from models.testing import text_encoder_config, tiny_unet_config
from models.text import TextEncoder
from models.unet import UNetModel
from nodes import services
from tests.diffusion.helpers import install_checkpoint, write_tiny
from tests.lora import makers
from tests.lora.test_hypernetwork import write_hypernetwork
from tests.lora.test_patching import TE_TARGETS, UNET_TARGETS
from tests.nodes.engine_harness import Capture, Harness

CKPT = "tiny.safetensors"


def tiny_shapes() -> tuple[dict, dict]:
    with torch.device("meta"):
        unet = {k: tuple(v.shape) for k, v in UNetModel(tiny_unet_config("sd1")).state_dict().items()}
        text = {k: tuple(v.shape) for k, v in TextEncoder(text_encoder_config("sd1", 32)).state_dict().items()}
    return ({n: unet[k] for n, k in UNET_TARGETS.items()}, {n: text[k] for n, k in TE_TARGETS.items()})


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("lora_graph")
    unet_targets, te_targets = tiny_shapes()
    torch.manual_seed(3)
    loras = {"a.safetensors": {**makers.kohya_lora(unet_targets, alpha=4.0), **makers.kohya_lora(te_targets)},
             "b.safetensors": makers.lokr(unet_targets)}
    return root, write_tiny(root / CKPT), loras


def make_harness(tmp_path, files) -> Harness:
    _, ckpt, loras = files
    h = Harness(tmp_path)
    h.services = services.NodeServices(h.folders, settings=MemorySettings(force_fp32=True))
    services.install(h.services)
    install_checkpoint(ckpt, h.folders.paths("checkpoints")[0], CKPT)
    for name, tensors in loras.items():
        save_file(tensors, h.folders.paths("loras")[0] / name)
    write_hypernetwork(h.folders.paths("hypernetworks")[0] / "h.pt")
    h.registry.register("TestKeep", Capture)
    return h


@pytest.fixture
def harness(tmp_path, files):
    h = make_harness(tmp_path / "one", files)
    yield h
    h.close()


def prompt(*patches: tuple[str, dict]) -> dict:
    """checkpoint -> the given patch nodes in a chain -> encode -> KSampler (2 steps) -> keep the latent."""
    graph = {"1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": CKPT}}}
    model, clip = ["1", 0], ["1", 1]
    for i, (class_type, inputs) in enumerate(patches, start=10):
        node = {"class_type": class_type, "inputs": dict(inputs, model=model)}
        if class_type == "LoraLoader":
            node["inputs"]["clip"] = clip
            clip = [str(i), 1]
        graph[str(i)] = node
        model = [str(i), 0]
    graph.update({
        "2": {"class_type": "CLIPTextEncode", "inputs": {"text": "a cat", "clip": clip}},
        "3": {"class_type": "CLIPTextEncode", "inputs": {"text": "blurry", "clip": clip}},
        "4": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}},
        "5": {"class_type": "KSampler", "inputs": {"seed": 7, "steps": 2, "cfg": 5.0, "sampler_name": "euler",
                                                   "scheduler": "normal", "denoise": 1.0, "model": model,
                                                   "positive": ["2", 0], "negative": ["3", 0],
                                                   "latent_image": ["4", 0]}},
        "9": {"class_type": "TestKeep", "inputs": {"value": ["5", 0]}},
    })
    return graph


def latent_of(h: Harness, graph: dict) -> torch.Tensor:
    Capture.seen = []
    services.install(h.services)
    result = h.run(graph)
    assert result.status == "success", result.error
    return Capture.seen[-1]["samples"].clone()


def lora(name: str, strength_model: float = 1.0, strength_clip: float = 1.0) -> tuple[str, dict]:
    return ("LoraLoader", {"lora_name": name, "strength_model": strength_model, "strength_clip": strength_clip})


def test_two_graphs_with_different_loras_give_what_each_gives_alone(tmp_path, files, harness) -> None:
    graph_a, graph_b = prompt(lora("a.safetensors")), prompt(lora("b.safetensors", 0.8, 0.0))
    alone = {}
    for name, graph in (("a", graph_a), ("b", graph_b)):
        solo = make_harness(tmp_path / f"alone_{name}", files)
        alone[name] = latent_of(solo, graph)
        solo.close()
    plain = latent_of(harness, prompt())
    for name, graph in (("a", graph_a), ("b", graph_b), ("a", graph_a), ("b", graph_b)):
        harness.engine.clear_cache()
        assert torch.equal(latent_of(harness, graph), alone[name]), name
    assert not torch.equal(alone["a"], plain) and not torch.equal(alone["a"], alone["b"])
    harness.engine.clear_cache()
    assert torch.equal(latent_of(harness, prompt()), plain)           # and the checkpoint is clean again


def test_strength_zero_and_strength_changes(harness) -> None:
    plain = latent_of(harness, prompt())
    assert torch.equal(latent_of(harness, prompt(lora("a.safetensors", 0.0, 0.0))), plain)
    strong = latent_of(harness, prompt(lora("a.safetensors", 1.0, 1.0)))
    harness.seen.clear()
    weak = latent_of(harness, prompt(lora("a.safetensors", 0.3, 1.0)))   # only the strength changed
    assert not torch.equal(strong, weak)
    cached = [n for e in harness.seen if e.type == "execution_cached" for n in e.data["nodes"]]
    assert "1" in cached                                                 # the checkpoint was not loaded again
    stacked = latent_of(harness, prompt(lora("a.safetensors", -1.0, 0.5), lora("b.safetensors", 0.5, 0.0)))
    assert torch.isfinite(stacked).all() and not torch.equal(stacked, plain)


def test_hypernetwork_node_in_a_graph(harness) -> None:
    plain = latent_of(harness, prompt())
    hyper = ("HypernetworkLoader", {"hypernetwork_name": "h.pt", "strength": 1.0})
    assert not torch.equal(latent_of(harness, prompt(hyper)), plain)
    zero = ("HypernetworkLoader", {"hypernetwork_name": "h.pt", "strength": 0.0})
    assert torch.equal(latent_of(harness, prompt(zero)), plain)
    assert torch.equal(latent_of(harness, prompt()), plain)              # the hooks are gone afterwards


def test_the_loaders_objects_take_both_parts_of_a_lora(files, harness) -> None:
    from diffusion.loading import load_checkpoint_file
    from models.lora import apply_lora
    _, ckpt, loras = files
    model, clip, _ = load_checkpoint_file(ckpt, harness.services.model_manager())
    new_model, new_clip, report = apply_lora(model, clip, loras["a.safetensors"], 1.0, 0.5, "a.safetensors")
    assert report.unmatched == [] and type(new_model) is type(model) and type(new_clip) is type(clip)
    assert set(new_model.patches) == set(UNET_TARGETS.values())
    assert set(new_clip.patches) == {f"towers.clip_l.{k}" for k in TE_TARGETS.values()}
    assert model.patches == {} and clip.patches == {}
