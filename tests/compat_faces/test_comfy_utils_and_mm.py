"""comfy.utils / comfy.model_management as packs use them inside a node: progress, resizing, devices,
interruption checks, loading a state dict."""
from __future__ import annotations

import pytest
import torch

from .harness import FaceHarness

PROGRESS_PACK = {"__init__.py": """
    import torch
    import comfy.utils
    import comfy.model_management as mm

    class SlowResize:
        @classmethod
        def INPUT_TYPES(s):
            return {"required": {"steps": ("INT", {"default": 3})}}
        RETURN_TYPES = ("IMAGE",)
        FUNCTION = "doit"
        CATEGORY = "test"
        OUTPUT_NODE = True

        def doit(self, steps):
            pbar = comfy.utils.ProgressBar(steps)
            image = torch.ones(1, 3, 8, 8, device=mm.intermediate_device())
            for _ in range(steps):
                mm.throw_exception_if_processing_interrupted()
                image = comfy.utils.common_upscale(image, image.shape[-1] * 2, image.shape[-2] * 2, "bilinear", "disabled")
                pbar.update(1)
            return {"ui": {"size": [list(image.shape)], "device": [str(mm.get_torch_device())]},
                    "result": (image.movedim(1, -1),)}

    NODE_CLASS_MAPPINGS = {"SlowResize": SlowResize}
"""}


@pytest.fixture
def harness(tmp_path):
    h = FaceHarness(tmp_path)
    h.pack("progress_pack", PROGRESS_PACK)
    h.load()
    assert h.plugin("progress_pack").is_ok, h.report.lines()
    yield h
    h.close()


def test_progress_resizing_and_devices_inside_a_node(harness) -> None:
    result = harness.run({"1": {"class_type": "SlowResize", "inputs": {"steps": 3}}})
    assert result.status == "success", result.error
    assert result.outputs["1"]["size"] == [[1, 3, 64, 64]]
    progress = [(e.data["value"], e.data["max"]) for e in harness.seen if e.type == "progress"]
    assert progress == [(1, 3), (2, 3), (3, 3)]
    import comfy.model_management as mm

    assert result.outputs["1"]["device"] == [str(mm.get_torch_device())]
    assert issubclass(mm.InterruptProcessingException, Exception) and not mm.processing_interrupted()


def test_load_torch_file_and_batch_helpers(harness, tmp_path) -> None:
    from safetensors.torch import save_file

    import comfy.utils

    path = tmp_path / "w.safetensors"
    save_file({"a.weight": torch.arange(6.0).reshape(2, 3)}, str(path), metadata={"ss_network_dim": "4"})
    state, metadata = comfy.utils.load_torch_file(str(path), safe_load=True, return_metadata=True)
    assert torch.equal(state["a.weight"], torch.arange(6.0).reshape(2, 3)) and metadata == {"ss_network_dim": "4"}
    assert comfy.utils.repeat_to_batch_size(torch.zeros(2, 1), 5).shape == (5, 1)
    assert comfy.utils.get_tiled_scale_steps(128, 128, 64, 64, 8) == 9
