"""ComfyUI module names packs import at load (found by scripts/packs_survey.py): comfy_extras.chainner_models
(Comfyroll's / WAS's upscaler loading), comfy.k_diffusion.utils (VideoHelperSuite), comfy.patcher_extension
(KJNodes, Advanced-ControlNet), comfy.diffusers_convert (WAS), comfy.samplers.sampling_function (KJNodes)."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from tests.models.test_upscale import tiny_state

from .harness import FaceHarness

PACK = '''
import torch
import comfy.samplers
import comfy.diffusers_convert
import comfy.patcher_extension
from comfy.patcher_extension import CallbacksMP, WrappersMP
from comfy.k_diffusion.utils import FolderOfImages
from comfy_extras.chainner_models import model_loading
import nodes


class UpscaleFromTensors:
    """Comfyroll's CR Upscale Image: the pack reads the file itself and hands the tensors to model_loading."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"image": ("IMAGE",)}}

    RETURN_TYPES = ("IMAGE",)
    FUNCTION = "upscale"
    CATEGORY = "test"
    STATE = None

    def upscale(self, image):
        model = model_loading.load_state_dict(self.STATE).eval()
        upscaler = nodes.NODE_CLASS_MAPPINGS["ImageUpscaleWithModel"]
        return getattr(upscaler(), upscaler.FUNCTION)(upscale_model=model, image=image)


NODE_CLASS_MAPPINGS = {"UpscaleFromTensors": UpscaleFromTensors}
'''


@pytest.fixture
def harness(tmp_path):
    h = FaceHarness(tmp_path)
    h.pack("faces_pack", {"__init__.py": PACK})
    h.load()
    assert h.plugin("faces_pack").is_ok, h.plugin("faces_pack").traceback
    yield h
    h.close()


def _module(name):
    import sys

    return sys.modules[name]


def test_chainner_model_loading_builds_an_upscale_model_from_tensors(harness) -> None:
    import sys

    pack = next(m for n, m in sys.modules.items() if n.endswith("faces_pack"))
    pack.UpscaleFromTensors.STATE = tiny_state(stages=1)
    image = torch.rand(1, 8, 12, 3)
    result = harness.run({
        "1": {"class_type": "EmptyImage", "inputs": {"width": 12, "height": 8, "batch_size": 1, "color": 0}},
        "2": {"class_type": "UpscaleFromTensors", "inputs": {"image": ["1", 0]}},
        "3": {"class_type": "PreviewImage", "inputs": {"images": ["2", 0]}}})
    assert result.status == "success", (result.error or {}).get("exception_message")
    (upscaled,) = pack.UpscaleFromTensors().upscale(image)
    assert upscaled.shape == (1, 16, 24, 3)
    with pytest.raises(Exception, match="does not fit|upscale"):
        _module("comfy_extras.chainner_models.model_loading").load_state_dict({"conv_first.weight": torch.zeros(1)})


def test_folder_of_images_lists_and_loads_like_k_diffusion(harness, tmp_path) -> None:
    utils = _module("comfy.k_diffusion.utils")
    folder = tmp_path / "frames"
    (folder / "sub").mkdir(parents=True)
    Image.fromarray(np.full((4, 6, 3), 255, np.uint8)).save(folder / "b.png")
    Image.fromarray(np.zeros((4, 6, 3), np.uint8)).save(folder / "sub" / "a.jpg")
    (folder / "notes.txt").write_text("x")
    dataset = utils.FolderOfImages(folder)
    assert ".png" in utils.FolderOfImages.IMG_EXTENSIONS and len(dataset) == 2
    (first,) = dataset[0]
    assert first.shape == (3, 4, 6) and float(first.min()) == 1.0
    assert utils.append_dims(torch.ones(2), 4).shape == (2, 1, 1, 1)


def test_patcher_extension_keeps_callbacks_and_wrappers_in_transformer_options(harness) -> None:
    ext = _module("comfy.patcher_extension")
    options: dict = {}
    ext.add_callback(ext.CallbacksMP.ON_PRE_RUN, print, options)
    ext.add_wrapper_with_key(ext.WrappersMP.APPLY_MODEL, "mine", lambda executor, x: executor(x) + 1, options,
                             is_model_options=True)
    ext.add_wrapper_with_key(ext.WrappersMP.APPLY_MODEL, "mine", lambda executor, x: executor(x) * 10, options,
                             is_model_options=True)
    assert options["callbacks"] == {"on_pre_run": {None: [print]}}
    wrappers = ext.get_wrappers_with_key("apply_model", "mine", options, is_model_options=True)
    assert len(wrappers) == 2 and ext.get_all_wrappers("apply_model", options["transformer_options"]) == wrappers
    # the first wrapper is outermost: (x * 10) + 1 around the original x + 0.5
    assert ext.WrapperExecutor.new_executor(lambda x: x + 0.5, wrappers).execute(1.0) == 16.0
    merged = ext.merge_nested_dicts({"a": {"b": [1]}, "c": 1}, {"a": {"b": [2]}, "c": 2})
    assert merged == {"a": {"b": [2, 1]}, "c": 2}


def test_names_plexus_lacks_raise_clear_errors_when_used(harness) -> None:
    with pytest.raises(NotImplementedError, match="sampling_function"):
        _module("comfy.samplers").sampling_function(None, None, None, None, None, 1.0)
    convert = _module("comfy.diffusers_convert")
    with pytest.raises(NotImplementedError, match="diffusers"):
        convert.convert_vae_state_dict({})
    assert convert.reshape_weight_for_sd(torch.ones(3, 2)).shape == (3, 2, 1, 1)
