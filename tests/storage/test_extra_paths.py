"""storage.extra_paths: ComfyUI's extra_model_paths.yaml pointing at a fake A1111 / ComfyUI tree."""
from __future__ import annotations

from pathlib import Path

import pytest

from storage.errors import StorageError
from storage.extra_paths import apply_extra_paths, parse_extra_paths, read_extra_paths
from storage.folders import Folders

A1111_YAML = """
#config for a1111 ui
a111:
    base_path: {base}

    checkpoints: models/Stable-diffusion
    configs: models/Stable-diffusion
    vae: models/VAE
    loras: |
         models/Lora
         models/LyCORIS
    upscale_models: |
                  models/ESRGAN
                  models/RealESRGAN
                  models/SwinIR
    embeddings: embeddings
    hypernetworks: models/hypernetworks
    controlnet: models/ControlNet

#comfyui:
#     base_path: path/to/comfyui/
"""


def fake_a1111(root: Path) -> Path:
    files = ["models/Stable-diffusion/v1-5-pruned-emaonly.safetensors",
             "models/Stable-diffusion/v1-inference.yaml",
             "models/VAE/vae-ft-mse.safetensors",
             "models/Lora/style.safetensors",
             "models/LyCORIS/loha.safetensors",
             "models/ESRGAN/4x.pth",
             "models/SwinIR/swin.pth",
             "embeddings/easynegative.pt",
             "models/ControlNet/canny.pth"]
    for name in files:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(b"")
    return root


def test_a1111_section_adds_its_folders(tmp_path: Path) -> None:
    webui = fake_a1111(tmp_path / "stable-diffusion-webui")
    config = tmp_path / "extra_model_paths.yaml"
    config.write_text(A1111_YAML.format(base=webui))
    folders = Folders(tmp_path / "plexus")
    entries = apply_extra_paths(folders, config)

    assert {e.section for e in entries} == {"a111"}
    assert folders.list_files("checkpoints") == ["v1-5-pruned-emaonly.safetensors"]
    assert folders.list_files("configs") == ["v1-inference.yaml"]
    assert folders.list_files("loras") == ["loha.safetensors", "style.safetensors"]
    assert folders.list_files("upscale_models") == ["4x.pth", "swin.pth"]
    assert folders.list_files("embeddings") == ["easynegative.pt"]
    assert folders.list_files("controlnet") == ["canny.pth"]
    # not default: Plexus's own folder stays first
    assert folders.paths("loras") == [tmp_path / "plexus" / "models" / "loras",
                                      webui / "models" / "Lora", webui / "models" / "LyCORIS"]
    assert folders.find("vae", "vae-ft-mse.safetensors") == webui / "models" / "VAE" / "vae-ft-mse.safetensors"


def test_is_default_goes_first_and_legacy_names_map(tmp_path: Path) -> None:
    comfy = tmp_path / "ComfyUI"
    config = {"comfyui": {"base_path": str(comfy), "is_default": True,
                          "checkpoints": "models/checkpoints/", "unet": "models/unet", "clip": "models/clip"}}
    entries = parse_extra_paths(config, tmp_path)
    assert [(e.kind, e.is_default) for e in entries] == [("checkpoints", True), ("diffusion_models", True),
                                                         ("text_encoders", True)]
    folders = Folders(tmp_path / "plexus")
    for entry in entries:
        folders.add_path(entry.kind, entry.path, entry.is_default)
    assert folders.paths("checkpoints")[0] == comfy / "models" / "checkpoints"
    assert folders.paths("diffusion_models")[0] == comfy / "models" / "unet"


def test_relative_paths_are_relative_to_the_yaml(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MODELS_HOME", str(tmp_path / "env"))
    config = {"rel": {"base_path": "shared", "vae": "vae"},
              "nobase": {"loras": "my/loras", "checkpoints": str(tmp_path / "abs")},
              "env": {"base_path": "$MODELS_HOME/x", "vae": "v"},
              "lists": {"base_path": str(tmp_path), "loras": ["a", "b"]},
              "empty": None}
    entries = {(e.section, e.kind): e.path for e in parse_extra_paths(config, tmp_path / "cfg")}
    assert entries[("rel", "vae")] == tmp_path / "cfg" / "shared" / "vae"
    assert entries[("nobase", "loras")] == tmp_path / "cfg" / "my" / "loras"
    assert entries[("nobase", "checkpoints")] == tmp_path / "abs"
    assert entries[("env", "vae")] == tmp_path / "env" / "x" / "v"
    assert [e.path.name for e in parse_extra_paths(config, tmp_path) if e.section == "lists"] == ["a", "b"]


def test_custom_nodes_entry(tmp_path: Path) -> None:
    folders = Folders(tmp_path / "plexus")
    for entry in parse_extra_paths({"other_ui": {"base_path": str(tmp_path / "ui"),
                                                 "custom_nodes": "path/custom_nodes"}}, tmp_path):
        folders.add_path(entry.kind, entry.path, entry.is_default)
    assert folders.paths("custom_nodes")[-1] == tmp_path / "ui" / "path" / "custom_nodes"


@pytest.mark.parametrize("text, fragment", [
    ("a111: [1, 2]", "must map folder kinds"),
    ("- just\n- a list", "expected sections"),
    ("a111:\n  vae: 3", "must be a path"),
    ("a111: {vae: [unclosed", "not valid YAML"),
])
def test_invalid_files_name_the_problem(tmp_path: Path, text: str, fragment: str) -> None:
    config = tmp_path / "extra_model_paths.yaml"
    config.write_text(text)
    with pytest.raises(StorageError) as caught:
        read_extra_paths(config)
    assert fragment in str(caught.value) and caught.value.type == "invalid_extra_model_paths"


def test_missing_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(StorageError, match="cannot read"):
        read_extra_paths(tmp_path / "nope.yaml")


def test_empty_file_adds_nothing(tmp_path: Path) -> None:
    config = tmp_path / "extra_model_paths.yaml"
    config.write_text("# nothing\n")
    assert read_extra_paths(config) == []
