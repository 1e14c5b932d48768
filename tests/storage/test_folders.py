"""storage.folders: ComfyUI's layout, listings with cache, find() with a helpful error."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from storage.errors import StorageError, UnsafePathError
from storage.folders import Folders


def touch(path: Path, data: bytes = b"") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def test_default_layout(tmp_path: Path) -> None:
    folders = Folders(tmp_path)
    assert folders.output == tmp_path / "output" and folders.input == tmp_path / "input"
    assert folders.temp == tmp_path / "temp" and folders.user == tmp_path / "user"
    assert folders.paths("checkpoints") == [tmp_path / "models" / "checkpoints"]
    assert folders.paths("text_encoders") == [tmp_path / "models" / "text_encoders", tmp_path / "models" / "clip"]
    assert folders.paths("clip") == folders.paths("text_encoders")
    assert folders.paths("unet") == folders.paths("diffusion_models") == [
        tmp_path / "models" / "unet", tmp_path / "models" / "diffusion_models"]
    assert folders.paths("custom_nodes") == [tmp_path / "custom_nodes"]
    for kind in ("vae", "loras", "embeddings", "hypernetworks", "upscale_models", "vae_approx",
                 "controlnet", "clip_vision", "configs"):
        assert folders.paths(kind)[0].parent == tmp_path / "models"
    assert folders.directory("output") == folders.output and folders.directory("models") is None


def test_directory_options_override_base(tmp_path: Path) -> None:
    folders = Folders(tmp_path / "base", output_dir=tmp_path / "out", input_dir=tmp_path / "in",
                      temp_dir=tmp_path / "tmp", user_dir=tmp_path / "usr", models_dir=tmp_path / "m")
    assert (folders.output, folders.input, folders.temp, folders.user) == (
        tmp_path / "out", tmp_path / "in", tmp_path / "tmp", tmp_path / "usr")
    assert folders.paths("vae") == [tmp_path / "m" / "vae"]
    folders.ensure_dirs()
    assert (tmp_path / "out").is_dir() and (tmp_path / "m" / "checkpoints").is_dir()


def test_list_files_recursive_filtered_sorted(tmp_path: Path) -> None:
    folders = Folders(tmp_path)
    ckpt = tmp_path / "models" / "checkpoints"
    for name in ("b.safetensors", "a.ckpt", "sd/x.sft", "sd/deep/y.pth", "notes.txt", "c.SAFETENSORS",
                 ".git/objects/z.pt"):
        touch(ckpt / name)
    assert folders.list_files("checkpoints") == ["a.ckpt", "b.safetensors", "c.SAFETENSORS",
                                                 "sd/deep/y.pth", "sd/x.sft"]
    touch(tmp_path / "models" / "configs" / "v1.yaml")
    touch(tmp_path / "models" / "configs" / "v1.safetensors")
    assert folders.list_files("configs") == ["v1.yaml"]


def test_two_folders_one_kind_are_merged(tmp_path: Path) -> None:
    folders = Folders(tmp_path)
    touch(tmp_path / "models" / "clip" / "clip_l.safetensors")
    touch(tmp_path / "models" / "text_encoders" / "t5.safetensors")
    touch(tmp_path / "models" / "text_encoders" / "clip_l.safetensors")
    assert folders.list_files("clip") == ["clip_l.safetensors", "t5.safetensors"]
    # text_encoders/ comes first, so its copy wins
    assert folders.find("clip", "clip_l.safetensors") == tmp_path / "models" / "text_encoders" / "clip_l.safetensors"


def test_listing_cache_follows_mtimes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folders = Folders(tmp_path)
    loras = tmp_path / "models" / "loras"
    touch(loras / "sub" / "one.safetensors")
    assert folders.list_files("loras") == ["sub/one.safetensors"]

    import storage.folders as module
    scans: list[str] = []
    real_scan = module._scan
    monkeypatch.setattr(module, "_scan", lambda folder, mtimes: scans.append(folder) or real_scan(folder, mtimes))
    assert folders.list_files("loras") == ["sub/one.safetensors"]
    assert scans == []  # served from the cache

    new = touch(loras / "sub" / "two.safetensors")
    os.utime(loras / "sub", (1, 1))  # make sure the mtime differs even on coarse clocks
    assert folders.list_files("loras") == ["sub/one.safetensors", "sub/two.safetensors"]
    assert len(scans) == 1
    new.unlink()
    os.utime(loras / "sub", (2, 2))
    assert folders.list_files("loras") == ["sub/one.safetensors"]


def test_cache_notices_a_folder_that_appears(tmp_path: Path) -> None:
    folders = Folders(tmp_path)
    assert folders.list_files("vae") == []
    touch(tmp_path / "models" / "vae" / "vae.pt")
    assert folders.list_files("vae") == ["vae.pt"]


def test_add_path_priority_and_new_kind(tmp_path: Path) -> None:
    folders = Folders(tmp_path / "base")
    folders.add_path("checkpoints", tmp_path / "extra")
    folders.add_path("checkpoints", tmp_path / "first", is_default=True)
    assert folders.paths("checkpoints") == [tmp_path / "first", tmp_path / "base" / "models" / "checkpoints",
                                            tmp_path / "extra"]
    folders.add_path("unet", tmp_path / "u")
    assert folders.paths("diffusion_models")[-1] == tmp_path / "u"
    folders.add_path("my_kind", tmp_path / "mk")
    touch(tmp_path / "mk" / "anything.xyz")
    assert folders.list_files("my_kind") == ["anything.xyz"]


def test_find_and_its_error(tmp_path: Path) -> None:
    folders = Folders(tmp_path)
    target = touch(tmp_path / "models" / "checkpoints" / "SD1.5" / "v1-5-pruned-emaonly.safetensors")
    assert folders.find("checkpoints", "SD1.5/v1-5-pruned-emaonly.safetensors") == target

    with pytest.raises(StorageError) as caught:
        folders.find("checkpoints", "v1-5-pruned-emaonly.safetensors")
    error = caught.value
    assert error.type == "model_not_found"
    assert "checkpoints" in error.message and "v1-5-pruned-emaonly.safetensors" in error.message
    assert "did you mean 'SD1.5/v1-5-pruned-emaonly.safetensors'" in error.message
    assert error.to_json()["extra_info"]["closest"] == "SD1.5/v1-5-pruned-emaonly.safetensors"

    with pytest.raises(StorageError) as caught:
        folders.find("checkpoints", "v1-5-prunned-emaonly.safetensors")
    assert "did you mean" in caught.value.message

    with pytest.raises(StorageError) as caught:
        folders.find("loras", "missing.safetensors")
    assert "did you mean" not in caught.value.message and "loras" in caught.value.message

    with pytest.raises(UnsafePathError):
        folders.find("checkpoints", "../../etc/passwd")


def test_unknown_kind_is_named(tmp_path: Path) -> None:
    with pytest.raises(StorageError) as caught:
        Folders(tmp_path).list_files("checkpoint")
    assert caught.value.type == "unknown_folder_kind" and "'checkpoints'" in caught.value.message


@pytest.mark.skipif(not hasattr(os, "symlink"), reason="no symlinks")
def test_model_symlinked_from_another_disk_is_found(tmp_path: Path) -> None:
    elsewhere = touch(tmp_path / "disk2" / "big.safetensors")
    folders = Folders(tmp_path / "base")
    (tmp_path / "base" / "models" / "checkpoints").mkdir(parents=True)
    os.symlink(elsewhere, tmp_path / "base" / "models" / "checkpoints" / "big.safetensors")
    os.symlink(tmp_path / "disk2", tmp_path / "base" / "models" / "checkpoints" / "linked")
    assert folders.list_files("checkpoints") == ["big.safetensors", "linked/big.safetensors"]
    assert folders.find("checkpoints", "linked/big.safetensors").read_bytes() == b""


def test_annotated_path(tmp_path: Path) -> None:
    folders = Folders(tmp_path)
    assert folders.annotated_path("a.png") == Path(os.path.realpath(tmp_path)) / "input" / "a.png"
    assert folders.annotated_path("a.png [output]").parent.name == "output"
    assert folders.annotated_path("sub/a.png [temp]").parent.name == "sub"
    with pytest.raises(UnsafePathError):
        folders.annotated_path("../x.png [output]")


def test_save_target_numbering(tmp_path: Path) -> None:
    folders = Folders(tmp_path)
    target = folders.save_target("ComfyUI")
    assert (target.filename, target.counter, target.subfolder) == ("ComfyUI", 1, "")
    touch(target.path("png"))
    assert target.path("png").name == "ComfyUI_00001_.png"
    touch(folders.output / "ComfyUI_00007_.png")
    touch(folders.output / "Other_00099_.png")
    assert folders.save_target("ComfyUI").counter == 8
    sub = folders.save_target("runs/%width%x%height%/img", 64, 32)
    assert sub.subfolder == "runs/64x32" and sub.folder.is_dir() and sub.counter == 1
    for bad in ("../escape", "/abs/x", "a/../../b"):
        with pytest.raises(UnsafePathError):
            folders.save_target(bad)
