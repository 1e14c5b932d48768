"""Every official SD1.x / SD2.x / SDXL / SD3.5 / FLUX.1 template whose node types Plexus has runs end to end
through the Engine on tiny random-weight models written in the real key layouts under the file names its
loaders name (scripts/template_runner.py), with generated input images and shrunk sizes / steps, and ends
with an image; so do the model-free templates (the SD3.5 large blur / canny ControlNet templates included: their
ControlNets are written in Stability's own SD3.5 layout)."""
from __future__ import annotations

import logging
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "scripts"))
import template_runner  # noqa: E402
import templates_report  # noqa: E402

from execution.registry import NodeRegistry  # noqa: E402
from nodes.registry import register_builtins  # noqa: E402
from web.template_catalog import assess, model_family, read_workflow  # noqa: E402

FOLDER = templates_report.templates_dir()
# template -> the family its index tags name (None: it names no model). Kept explicit so that a template
# that stops running, or a new runnable one, shows up (test_the_runnable_set_is_this_list).
RUNNABLE = {
    "image_sdxl_simple": "sdxl", "sdxl_simple_example": "sdxl", "sdxlturbo_example": "sdxl",
    "sdxl_refiner_prompt_example": "sdxl", "sdxl_revision_text_prompts": "sdxl",
    "sd3.5_simple_example": "sd3", "sd3.5_large_blur": "sd3", "sd3.5_large_canny_controlnet_example": "sd3",
    "flux_dev_full_text_to_image": "flux", "flux_dev_checkpoint_example": "flux", "flux1_krea_dev": "flux",
    "flux_schnell_full_text_to_image": "flux", "flux_schnell": "flux", "flux_fill_inpaint_example": "flux",
    "flux_fill_outpaint_example": "flux", "image_flux.1_fill_dev_OneReward": "flux",
    "flux_canny_model_example": "flux", "flux_redux_model_example": "flux", "flux_kontext_dev_basic": "flux",
    "basic_mask_operations_and_compositing": None, "utility_image_stitch": None,
    "utility_interpolation_image_upscale": None,
}
# Model-free templates whose outputs are texts (PreviewAny), not images.
TEXT_ONLY = {"basic_datatype_conversion"}


@pytest.fixture(scope="module")
def registry() -> NodeRegistry:
    registry = NodeRegistry()
    register_builtins(registry)
    return registry


def entries() -> dict[str, dict]:
    return {str(e["name"]): e for e in templates_report.index_entries(FOLDER)} if FOLDER else {}


def test_the_runnable_set_is_this_list(registry) -> None:
    assert FOLDER is not None, "comfyui-workflow-templates-json (requirements.txt) is not installed"
    found = {}
    for name, entry in entries().items():
        workflow = read_workflow(FOLDER, name)
        support = assess(entry, workflow, registry)
        if workflow is None or support.missing_types:
            continue
        family = model_family(entry)
        if family is not None or not templates_report.named_models(workflow):
            found[name] = family
    assert found == {**RUNNABLE, **{n: None for n in TEXT_ONLY}}


@pytest.mark.parametrize("name", sorted(RUNNABLE))
def test_template_runs_end_to_end_on_tiny_models(name, registry, tmp_path, caplog) -> None:
    caplog.set_level(logging.ERROR)
    outcome = template_runner.run_tiny(read_workflow(FOLDER, name), RUNNABLE[name] or "none", registry, tmp_path)
    assert outcome.ok, outcome.error
    assert outcome.images >= 1
    outputs = list((tmp_path / "output").rglob("*.png")) + list((tmp_path / "temp").rglob("*.png"))
    assert outputs, "no image file was written"


def test_the_datatype_conversion_template_previews_each_converted_value(registry, tmp_path) -> None:
    """basic_datatype_conversion: the string "1", the int 0 and the float 1.5 through ComfyNumberConvert and
    ComfyMathExpression into PreviewAny nodes (saved with the editor's display widgets, which are no inputs)."""
    workflow = read_workflow(FOLDER, "basic_datatype_conversion")
    outcome = template_runner.run_tiny(workflow, "none", registry, tmp_path)
    assert outcome.ok, outcome.error
    titled = {str(node["id"]): node.get("title") for node in workflow["nodes"] if node["type"] == "PreviewAny"}
    assert len(titled) == 13
    texts = outcome.texts
    assert set(texts) == set(titled) and outcome.images == 0
    # ComfyNumberConvert of the string "1": FLOAT 1.0 and INT 1; of the float 1.5 via the expression "a":
    # FLOAT 1.5, INT 1 (truncated), BOOLEAN True
    assert texts["5"] == "1.0" and texts["6"] == "1"
    assert (texts["20"], texts["21"], texts["22"]) == ("1.5", "1", "True")



def test_sd35_controlnet_files_are_written_in_stabilitys_layout(tmp_path) -> None:
    from models.files import load_state_dict
    from models.detection import detect_control_model
    assert template_runner.sd35_control_type("sd3.5_large_controlnet_canny.safetensors") == "canny"
    assert template_runner.sd35_control_type("sd3.5_large_controlnet_depth.safetensors") == "depth"
    assert template_runner.sd35_control_type("control_v11p_sd15_canny.safetensors") is None
    folders = template_runner.Folders(tmp_path)
    path = template_runner.write_model(folders, "controlnet", "sd3.5_large_controlnet_blur.safetensors", "test", "sd3")
    with load_state_dict(path) as source:
        assert detect_control_model(source.shapes()).kind == "sd35_controlnet"
        assert float(source["control_type"]) == 0.0


def test_shrink_cuts_sizes_steps_and_keeps_a_refiner_split() -> None:
    prompt = {"1": {"class_type": "EmptyLatentImage", "inputs": {"width": 1024, "height": 768, "batch_size": 4}},
              "2": {"class_type": "KSamplerAdvanced", "inputs": {"steps": 25, "start_at_step": 0, "end_at_step": 20}},
              "3": {"class_type": "KSamplerAdvanced", "inputs": {"steps": 25, "start_at_step": 20,
                                                                 "end_at_step": 10000}},
              "4": {"class_type": "ImagePadForOutpaint", "inputs": {"left": 400, "top": 0, "feathering": 24,
                                                                    "image": ["9", 0]}},
              "5": {"class_type": "ImageScale", "inputs": {"width": ["7", 0], "height": 32}}}
    out = template_runner.shrink(prompt)
    assert out["1"]["inputs"] == {"width": 64, "height": 64, "batch_size": 1}
    base, refiner = out["2"]["inputs"], out["3"]["inputs"]
    assert base["steps"] == refiner["steps"] == 3
    assert 0 == base["start_at_step"] < base["end_at_step"] == refiner["start_at_step"] < 3 <= refiner["end_at_step"]
    assert out["4"]["inputs"] == {"left": 16, "top": 0, "feathering": 16, "image": ["9", 0]}
    assert out["5"]["inputs"] == {"width": ["7", 0], "height": 32}      # links and small values stay


def test_input_images_have_a_mask_and_fit_the_suffix(tmp_path) -> None:
    import numpy as np
    from PIL import Image
    template_runner.write_input_image(tmp_path / "a.png")
    template_runner.write_input_image(tmp_path / "b.jpg")
    rgba = np.asarray(Image.open(tmp_path / "a.png"))
    assert rgba.shape == (64, 64, 4) and (rgba[..., 3] == 0).any() and (rgba[..., 3] == 255).any()
    assert Image.open(tmp_path / "b.jpg").mode == "RGB"


def test_model_family_reads_the_index_tags() -> None:
    assert model_family({"models": ["SDXL", "Stability"]}) == "sdxl"
    assert model_family({"models": ["SD3.5", "Stability"]}) == "sd3"
    assert model_family({"models": ["FLUX", "FLUX.1 Krea"]}) == "flux"
    assert model_family({"models": ["FLUX", "FLUX.2 Klein"]}) is None      # bare "FLUX" also tags FLUX.2
    assert model_family({"models": ["Wan"]}) is None and model_family({}) is None


def test_text_encoder_kind_follows_the_file_name() -> None:
    assert template_runner.text_encoder_kind("t5xxl_fp8_e4m3fn_scaled.safetensors") == "t5xxl"
    assert template_runner.text_encoder_kind("clip_l.safetensors") == "clip_l"
    with pytest.raises(template_runner.NoTinyLayout):
        template_runner.text_encoder_kind("qwen_3_4b.safetensors")


def test_the_browser_index_marks_the_unloadable_and_not_the_runnable(registry) -> None:
    import json

    from web.template_catalog import UNSUPPORTED_TAG, mark_index
    index = json.loads((FOLDER / "index.json").read_text(encoding="utf-8"))
    marked = {e["name"]: e for c in mark_index(index, lambda n: read_workflow(FOLDER, n), registry)
              for e in c.get("templates") or []}
    for name in RUNNABLE:
        assert UNSUPPORTED_TAG not in marked[name].get("tags", []), (name, marked[name]["description"])
    assert UNSUPPORTED_TAG in marked["sd3.5_large_depth"]["tags"]           # LotusConditioning is missing
    assert UNSUPPORTED_TAG in marked["image_flux2"]["tags"]                  # "FLUX" + "FLUX.2 Dev"
