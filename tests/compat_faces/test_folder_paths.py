"""folder_paths face: packs register model folders, list and resolve files the way ComfyUI's do."""
from __future__ import annotations

import os

import pytest

from .harness import FaceHarness

DETECTOR_PACK = {"__init__.py": """
    import os
    import folder_paths

    # the way detector packs register their own model kinds
    model_path = folder_paths.models_dir
    folder_paths.folder_names_and_paths["ultralytics_bbox"] = ([os.path.join(model_path, "ultralytics", "bbox")],
                                                               folder_paths.supported_pt_extensions)
    folder_paths.folder_names_and_paths["ultralytics_bbox"][0].append(os.path.join(model_path, "more_bbox"))
    folder_paths.add_model_folder_path("ipadapter", os.path.join(model_path, "ipadapter"))
    if "sams" in folder_paths.folder_names_and_paths:
        raise RuntimeError("sams should not exist yet")
    folder_paths.folder_names_and_paths["sams"] = ([os.path.join(model_path, "sams")], {".pth"})

    class BboxDetectorLoader:
        @classmethod
        def INPUT_TYPES(s):
            return {"required": {"model_name": (folder_paths.get_filename_list("ultralytics_bbox"),)}}
        RETURN_TYPES = ("STRING",)
        FUNCTION = "doit"
        CATEGORY = "test/detector"
        OUTPUT_NODE = True

        def doit(self, model_name):
            path = folder_paths.get_full_path("ultralytics_bbox", model_name)
            return {"ui": {"text": [path]}, "result": (path,)}

    NODE_CLASS_MAPPINGS = {"BboxDetectorLoader": BboxDetectorLoader}
"""}


@pytest.fixture
def harness(tmp_path):
    h = FaceHarness(tmp_path)
    yield h
    h.close()


def test_a_pack_registers_folders_and_lists_files_that_appear_later(harness) -> None:
    harness.pack("detector_pack", DETECTOR_PACK)
    report = harness.load()
    assert harness.plugin("detector_pack").is_ok, report.lines()
    import folder_paths

    models = harness.folders.models_dir
    assert harness.folders.paths("ultralytics_bbox") == [models / "ultralytics" / "bbox", models / "more_bbox"]
    assert folder_paths.get_folder_paths("ipadapter") == [str(models / "ipadapter")]
    assert folder_paths.get_filename_list("ultralytics_bbox") == []
    (models / "more_bbox").mkdir(parents=True)
    (models / "more_bbox" / "face_yolov8m.pt").write_bytes(b"x")
    (models / "more_bbox" / "notes.txt").write_text("not a model")
    assert folder_paths.get_filename_list("ultralytics_bbox") == ["face_yolov8m.pt"]   # fresh listing, filtered
    spec = harness.registry.get("BboxDetectorLoader").INPUT_TYPES()
    assert spec["required"]["model_name"][0] == ["face_yolov8m.pt"]
    result = harness.run({"1": {"class_type": "BboxDetectorLoader", "inputs": {"model_name": "face_yolov8m.pt"}}})
    assert result.status == "success", result.error
    assert result.outputs["1"]["text"] == [str(models / "more_bbox" / "face_yolov8m.pt")]
    assert folder_paths.get_full_path("ultralytics_bbox", "face_yolov8m.pt") == str(models / "more_bbox" / "face_yolov8m.pt")
    assert folder_paths.get_full_path("sams", "x.pth") is None
    assert folder_paths.get_full_path("no_such_kind", "x.pth") is None
    with pytest.raises(FileNotFoundError):
        folder_paths.get_full_path_or_raise("sams", "x.pth")
    with pytest.raises(KeyError):
        folder_paths.get_filename_list("no_such_kind")
    assert harness.folders.extensions("sams") == {".pth"}


def test_directories_annotations_and_legacy_names(harness) -> None:
    harness.load()
    import folder_paths

    assert folder_paths.get_output_directory() == str(harness.folders.output) == folder_paths.output_directory
    assert folder_paths.input_directory == str(harness.folders.input)
    assert folder_paths.models_dir == str(harness.folders.models_dir)
    assert folder_paths.get_directory_by_type("temp") == str(harness.folders.temp)
    assert folder_paths.get_directory_by_type("elsewhere") is None
    assert folder_paths.annotated_filepath("a.png [output]") == ("a.png", str(harness.folders.output))
    assert folder_paths.get_annotated_filepath("a.png") == os.path.join(str(harness.folders.input), "a.png")
    (harness.folders.input / "b.png").write_bytes(b"x")
    assert folder_paths.exists_annotated_filepath("b.png") and not folder_paths.exists_annotated_filepath("b.png [temp]")
    assert folder_paths.get_folder_paths("unet") == folder_paths.get_folder_paths("diffusion_models")
    assert ".safetensors" in folder_paths.folder_names_and_paths["checkpoints"][1]
    assert "custom_nodes" in folder_paths.folder_names_and_paths
    # a path that climbs out of the folder is resolved inside it, as ComfyUI does
    (harness.folders.models_dir / "loras").mkdir(parents=True, exist_ok=True)
    assert folder_paths.get_full_path("loras", "../../../etc/passwd") is None


def test_save_image_path_numbers_files_and_refuses_escapes(harness) -> None:
    harness.load()
    import folder_paths

    out = folder_paths.get_output_directory()
    folder, filename, counter, subfolder, prefix = folder_paths.get_save_image_path("sub/pic", out, 64, 64)
    assert (folder, filename, counter, subfolder) == (os.path.join(out, "sub"), "pic", 1, "sub")
    open(os.path.join(folder, "pic_00007_.png"), "wb").close()
    assert folder_paths.get_save_image_path("sub/pic", out)[2] == 8
    with pytest.raises(Exception, match="outside the output folder"):
        folder_paths.get_save_image_path("../../evil", out)
