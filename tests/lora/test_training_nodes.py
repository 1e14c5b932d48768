"""The data and result nodes of ComfyUI's training set (nodes/builtin/training.py): the data set loaders
against Pillow/NumPy reading the same files, LoraModelLoader against LoraLoaderModelOnly on the same LoRA,
SaveLoRANode's file names and contents, LossGraphNode's image."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from diffusion import conditioning, loading
from execution.errors import PlexusError
from model_management import MemorySettings, ModelManager
from nodes.builtin import training
from nodes.builtin.lora import LoraLoaderModelOnly
from tests.lora.test_nodes import UNET_KEY, folders, handles, lora_file  # noqa: F401  (fixtures)


def _write_image(path, size, seed: int) -> np.ndarray:
    pixels = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path)
    return pixels


def _as_float(image: Image.Image) -> torch.Tensor:
    return torch.from_numpy(np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0)


def test_input_subfolders_are_every_folder_below_input(folders) -> None:  # noqa: F811
    for sub in ("set/a", "set/b", "other"):
        (folders.input / sub).mkdir(parents=True)
    assert training.input_subfolders() == ["other", "set", "set/a", "set/b"]
    spec = training.LoadImageSetFromFolderNode.INPUT_TYPES()
    assert spec["required"]["folder"][0] == ["other", "set", "set/a", "set/b"]


def test_image_set_loads_every_image_sorted_and_refuses_mixed_sizes(folders) -> None:  # noqa: F811
    data = folders.input / "data"
    data.mkdir()
    first = _write_image(data / "b.png", (12, 8), 1)
    second = _write_image(data / "a.png", (12, 8), 2)
    (data / "notes.txt").write_text("not an image")
    (images,) = training.LoadImageSetFromFolderNode().run("data")
    torch.testing.assert_close(images, torch.from_numpy(np.stack([second, first]).astype(np.float32) / 255.0))
    _write_image(data / "c.png", (10, 14), 3)
    with pytest.raises(PlexusError, match="another size"):
        training.LoadImageSetFromFolderNode().run("data", "None")


@pytest.mark.parametrize("method", ["Stretch", "Pad", "Crop"])
def test_image_set_resize_methods_match_pillow(folders, method) -> None:  # noqa: F811
    data = folders.input / "data"
    data.mkdir()
    _write_image(data / "a.png", (12, 8), 1)
    _write_image(data / "b.png", (10, 14), 2)
    (images,) = training.LoadImageSetFromFolderNode().run("data", method)
    odd = Image.open(data / "b.png")
    expected = odd.crop((0, 0, 12, 8)) if method == "Crop" else odd.resize((12, 8), Image.Resampling.LANCZOS)
    assert images.shape == (2, 8, 12, 3)
    torch.testing.assert_close(images[1], _as_float(expected))


def test_a_folder_outside_input_is_refused(folders) -> None:  # noqa: F811
    with pytest.raises(PlexusError):
        training.LoadImageSetFromFolderNode().run("../output")


def test_image_text_set_encodes_each_caption_with_kohya_repeats(folders, tmp_path_factory) -> None:  # noqa: F811
    from tests.diffusion.helpers import write_tiny
    path = write_tiny(tmp_path_factory.mktemp("ckpt") / "tiny.safetensors")
    _, clip, _ = loading.load_checkpoint_file(path, ModelManager(MemorySettings(force_fp32=True)))
    data = folders.input / "captioned"
    (data / "2_dog").mkdir(parents=True)
    _write_image(data / "cat.png", (16, 16), 1)
    (data / "cat.txt").write_text("  a cat \n", encoding="utf-8")
    _write_image(data / "bare.png", (16, 16), 2)                   # no caption: ""
    _write_image(data / "2_dog" / "dog.png", (8, 8), 3)             # kohya-ss layout: twice
    (data / "2_dog" / "dog.txt").write_text("a dog", encoding="utf-8")
    images, entries = training.LoadImageTextSetFromFolderNode().run("captioned", clip, "Stretch", 16, 16)
    assert images.shape == (4, 16, 16, 3) and len(entries) == 4
    for entry, text in zip(entries, ["", "a cat", "a dog", "a dog"]):
        (reference,) = conditioning.encode_text(clip, text)
        torch.testing.assert_close(entry[0], reference[0])
    dog = Image.open(data / "2_dog" / "dog.png").resize((16, 16), Image.Resampling.LANCZOS)
    torch.testing.assert_close(images[2], _as_float(dog))
    torch.testing.assert_close(images[3], images[2])


def test_lora_model_loader_equals_lora_loader_model_only(folders, handles) -> None:  # noqa: F811
    unet, _ = handles
    lora = lora_file(folders, handles)
    (from_memory,) = training.LoraModelLoader().run(unet, lora, 0.7)
    (from_file,) = LoraLoaderModelOnly().run(unet, "style.safetensors", 0.7)
    assert set(from_memory.patches) == set(from_file.patches) == {UNET_KEY}
    manager = ModelManager(MemorySettings(device="cpu"))
    manager.load_models_for([from_file])
    reference = unet.module.state_dict()[UNET_KEY].clone()
    manager.unload(from_file)
    manager.load_models_for([from_memory])
    torch.testing.assert_close(unet.module.state_dict()[UNET_KEY], reference)
    manager.unload(from_memory)
    assert training.LoraModelLoader().run(unet, lora, 0.0) == (unet,) and unet.patches == {}


def test_save_lora_names_files_like_comfyui_and_keeps_every_tensor(folders) -> None:  # noqa: F811
    lora = {"a.lora_up.weight": torch.randn(4, 2), "a.lora_down.weight": torch.randn(2, 4).t()}  # a non-contiguous one
    assert training.SaveLoRANode().run(lora, "loras/trained") == {}
    training.SaveLoRANode().run(lora, "loras/trained", steps=120)
    names = sorted(p.name for p in (folders.output / "loras").iterdir())
    assert names == ["trained_00001_.safetensors", "trained_120_steps_00002_.safetensors"]
    saved = load_file(folders.output / "loras" / names[1])
    assert saved.keys() == lora.keys() and all(torch.equal(saved[k], lora[k]) for k in lora)


def test_loss_graph_draws_the_curve_into_the_temp_folder(folders) -> None:  # noqa: F811
    result = training.LossGraphNode().run({"loss": [1.0, 0.5, 0.25, 0.2]}, "loss", prompt={"1": {}})
    [entry] = result["ui"]["images"]
    assert entry["type"] == "temp" and entry["filename"].startswith("loss_")
    image = Image.open(folders.temp / entry["filename"])
    assert image.size == (840, 520) and image.info.get("prompt") == '{"1": {}}'
    pixels = np.asarray(image.convert("RGB"))
    blue = (pixels[..., 2] > 200) & (pixels[..., 0] < 60) & (pixels[..., 1] < 60)
    assert blue[:5, 38:45].any()                       # the first point is the maximum, at the top left
    assert blue.sum() > 300
    training.LossGraphNode().run({"loss": [0.3, 0.3]}, "flat")      # a flat curve is drawn, not a crash
