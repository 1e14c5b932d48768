"""LoraLoader, LoraLoaderModelOnly and HypernetworkLoader: ComfyUI's specs, and what they return."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from model_management import MemorySettings, ModelHandle, ModelManager
from models.errors import UnsafePickleError
from models.lora import module_weight_shapes
from nodes import services
from nodes.builtin.lora import HypernetworkLoader, LoraLoader, LoraLoaderModelOnly
from storage.folders import Folders
from tests.lora import makers

UNET_NAME = "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q"
UNET_KEY = "input_blocks.1.1.transformer_blocks.0.attn1.to_q.weight"
TE_NAME = "lora_te_text_model_encoder_layers_0_self_attn_q_proj"
TE_KEY = "model.text_model.encoder.layers.0.self_attn.q_proj.weight"


@pytest.fixture
def folders(tmp_path: Path):
    folders = Folders(tmp_path)
    folders.ensure_dirs()
    services.install(services.NodeServices(folders))
    yield folders
    services.install(None)


@pytest.fixture
def handles(tiny_models):
    ckpt = tiny_models("sd1")
    return ModelHandle(ckpt.unet), ModelHandle(ckpt.text_encoders[0])


def lora_file(folders: Folders, handles, name: str = "style.safetensors") -> dict[str, torch.Tensor]:
    unet, clip = handles
    lora = {**makers.kohya_lora({UNET_NAME: module_weight_shapes(unet.module)[UNET_KEY]}),
            **makers.kohya_lora({TE_NAME: module_weight_shapes(clip.module)[TE_KEY]})}
    path = folders.paths("loras")[0] / name
    if name.endswith(".safetensors"):
        save_file(lora, path)
    else:
        torch.save(lora, path)
    return lora


def test_specs_match_comfyui(folders) -> None:
    (folders.paths("loras")[0] / "a.safetensors").write_bytes(b"")
    spec = LoraLoader.INPUT_TYPES()["required"]
    assert list(spec) == ["model", "clip", "lora_name", "strength_model", "strength_clip"]
    assert spec["lora_name"][0] == ["a.safetensors"]
    options = spec["strength_model"][1]
    assert spec["strength_model"][0] == "FLOAT" and {k: options[k] for k in ("default", "min", "max", "step")} == \
        {"default": 1.0, "min": -100.0, "max": 100.0, "step": 0.01}
    assert (LoraLoader.RETURN_TYPES, LoraLoader.CATEGORY) == (("MODEL", "CLIP"), "loaders")
    assert LoraLoader.FUNCTION in ("run", "load_lora")   # ComfyUI's name once registered (nodes.comfy_methods)
    assert list(LoraLoaderModelOnly.INPUT_TYPES()["required"]) == ["model", "lora_name", "strength_model"]
    assert LoraLoaderModelOnly.RETURN_TYPES == ("MODEL",)
    hyper = HypernetworkLoader.INPUT_TYPES()["required"]
    assert list(hyper) == ["model", "hypernetwork_name", "strength"]
    assert hyper["strength"] == ("FLOAT", {"default": 1.0, "min": -10.0, "max": 10.0, "step": 0.01})


@pytest.mark.parametrize("file_name", ["style.safetensors", "style.ckpt"])
def test_lora_loader_returns_patched_clones_and_leaves_its_inputs_alone(folders, handles, file_name) -> None:
    unet, clip = handles
    lora = lora_file(folders, handles, file_name)
    base_unet = unet.module.state_dict()[UNET_KEY].clone()
    model, new_clip = LoraLoader().run(unet, clip, file_name, 1.0, -0.5)
    assert unet.patches == {} and clip.patches == {}
    assert set(model.patches) == {UNET_KEY} and set(new_clip.patches) == {TE_KEY}
    assert model.is_clone_of(unet) and new_clip.is_clone_of(clip)

    manager = ModelManager(MemorySettings(device="cpu"))
    manager.load_models_for([model])
    expected = base_unet.double() + makers.expected_delta_lora(lora, UNET_NAME, tuple(base_unet.shape))
    torch.testing.assert_close(unet.module.state_dict()[UNET_KEY].double(), expected, atol=1e-5, rtol=1e-5)
    manager.unload(model)
    assert torch.equal(unet.module.state_dict()[UNET_KEY], base_unet)

    (only,) = LoraLoaderModelOnly().run(unet, file_name, 0.3)
    assert set(only.patches) == {UNET_KEY} and only.patches[UNET_KEY][0].strength == 0.3
    assert LoraLoader().run(unet, clip, file_name, 0.0, 0.0) == (unet, clip)


def test_an_unsafe_lora_pickle_is_refused(folders, handles) -> None:
    class Payload:
        def __reduce__(self):
            return (Path.touch, (folders.base / "ran",))
    torch.save({"x.lora_up.weight": torch.zeros(1), "y": Payload()}, folders.paths("loras")[0] / "evil.pt")
    with pytest.raises(UnsafePickleError):
        LoraLoader().run(*handles, "evil.pt", 1.0, 1.0)
    assert not (folders.base / "ran").exists()
