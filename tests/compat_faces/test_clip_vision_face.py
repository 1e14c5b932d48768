"""comfy.clip_vision as IPAdapter-style packs use it: isinstance checks, `clip_vision.encode_image(image)`,
`comfy.clip_vision.load`, `clip_preprocess`, and building an `Output` by item assignment."""
from __future__ import annotations

import numpy as np
import torch
from PIL import Image

from models.testing_vision import tiny_clip_vision_config, write_random_clip_vision

from .harness import FaceHarness

PACK = {"__init__.py": """
    import torch
    import comfy.clip_vision
    import folder_paths

    class PackEmbeds:
        @classmethod
        def INPUT_TYPES(s):
            return {"required": {"clip_vision": ("CLIP_VISION",), "image": ("IMAGE",)}}
        RETURN_TYPES = ("CLIP_VISION_OUTPUT",)
        FUNCTION = "run"
        CATEGORY = "pack"

        def run(self, clip_vision, image):
            assert isinstance(clip_vision, comfy.clip_vision.ClipVisionModel)
            out = clip_vision.encode_image(image, crop=True)
            again = comfy.clip_vision.load(folder_paths.get_full_path("clip_vision", "vit.safetensors"))
            pixels = comfy.clip_vision.clip_preprocess(image, size=56)
            assert pixels.shape == (1, 3, 56, 56)
            merged = comfy.clip_vision.Output()
            merged["image_embeds"] = (out.image_embeds + again.encode_image(image).image_embeds) / 2
            merged["last_hidden_state"] = out["last_hidden_state"]
            merged["penultimate_hidden_states"] = out.penultimate_hidden_states
            return (merged,)

    NODE_CLASS_MAPPINGS = {"PackEmbeds": PackEmbeds}
"""}


class Keep:
    seen: list = []

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"value": ("*",)}}
    RETURN_TYPES = ()
    FUNCTION = "run"
    OUTPUT_NODE = True
    CATEGORY = "_for_testing"

    def run(self, value):
        Keep.seen.append(value)
        return {}


def test_pack_encodes_like_clip_vision_encode(tmp_path):
    h = FaceHarness(tmp_path)
    folder = h.folders.models_dir / "clip_vision"
    folder.mkdir(parents=True, exist_ok=True)
    write_random_clip_vision(folder / "vit.safetensors", tiny_clip_vision_config(), seed=2)
    h.pack("vision_pack", PACK)
    h.load()
    assert h.plugin("vision_pack").is_ok, h.report.lines()
    h.registry.register("Keep", Keep)
    h.folders.input.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.random.default_rng(1).integers(0, 256, (60, 70, 3), dtype=np.uint8)).save(h.folders.input / "i.png")
    prompt = {"1": {"class_type": "CLIPVisionLoader", "inputs": {"clip_name": "vit.safetensors"}},
              "2": {"class_type": "LoadImage", "inputs": {"image": "i.png"}},
              "3": {"class_type": "PackEmbeds", "inputs": {"clip_vision": ["1", 0], "image": ["2", 0]}},
              "4": {"class_type": "CLIPVisionEncode", "inputs": {"clip_vision": ["1", 0], "image": ["2", 0],
                                                                 "crop": "center"}},
              "5": {"class_type": "Keep", "inputs": {"value": ["3", 0]}},
              "6": {"class_type": "Keep", "inputs": {"value": ["4", 0]}}}
    Keep.seen = []
    try:
        result = h.run(prompt)
        assert result.status == "success", result.error
        assert len(Keep.seen) == 2
        by_pack = next(o for o in Keep.seen if "mm_projected" not in o)      # the pack's own Output()
        by_node = next(o for o in Keep.seen if "mm_projected" in o)
        torch.testing.assert_close(by_pack.image_embeds, by_node.image_embeds, atol=1e-6, rtol=0)
        assert torch.equal(by_pack["last_hidden_state"], by_node.last_hidden_state)
    finally:
        h.close()
