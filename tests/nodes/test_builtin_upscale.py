"""UpscaleModelLoader -> ImageUpscaleWithModel through the real Engine, with a file in models/upscale_models."""
import pytest
import torch
from PIL import Image

from tests.models.test_upscale import tiny_state, to_old_layout
from tests.nodes.engine_harness import Harness


@pytest.fixture
def harness(tmp_path):
    h = Harness(tmp_path)
    yield h
    h.close()


def test_upscale_nodes_run_through_the_engine(harness, tmp_path):
    models_dir = harness.folders.paths("upscale_models")[0]
    torch.save(to_old_layout(tiny_state(), 1, 2), models_dir / "tiny_x4.pth")
    prompt = {
        "1": {"class_type": "EmptyImage", "inputs": {"width": 24, "height": 16, "batch_size": 1, "color": 0x336699}},
        "2": {"class_type": "UpscaleModelLoader", "inputs": {"model_name": "tiny_x4.pth"}},
        "3": {"class_type": "ImageUpscaleWithModel", "inputs": {"upscale_model": ["2", 0], "image": ["1", 0]}},
        "4": {"class_type": "SaveImage", "inputs": {"images": ["3", 0], "filename_prefix": "up"}},
    }
    result = harness.run(prompt)
    assert result.status == "success", result.error
    (saved,) = result.outputs["4"]["images"]
    with Image.open(harness.folders.output / saved["subfolder"] / saved["filename"]) as image:
        assert image.size == (96, 64)
    assert any(e.type == "progress" for e in harness.seen)
