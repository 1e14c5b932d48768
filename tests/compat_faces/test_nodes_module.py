"""``import nodes`` as packs use it: ComfyUI's names, core classes with ComfyUI's methods, subclasses."""
from __future__ import annotations

import shutil

import pytest
import torch

from tests.nodes.engine_harness import Capture

from .harness import FaceHarness

STYLE_PACK = {"__init__.py": """
    import nodes
    from .styles import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS
    assert "KSampler" in nodes.NODE_CLASS_MAPPINGS          # packs look up core nodes at import
""", "styles.py": """
    import nodes
    import folder_paths

    class StyledTextEncode(nodes.CLIPTextEncode):
        @classmethod
        def INPUT_TYPES(s):
            spec = nodes.CLIPTextEncode.INPUT_TYPES()
            spec["required"]["style"] = (["none", "oil painting"],)
            return spec
        FUNCTION = "encode_styled"
        CATEGORY = "test/style"

        def encode_styled(self, clip, text, style):
            return super().encode(clip, text if style == "none" else f"{text}, {style}")

    class LoaderAndSampler:
        '''The way many packs chain core nodes inside one node.'''
        @classmethod
        def INPUT_TYPES(s):
            return {"required": {"ckpt_name": (folder_paths.get_filename_list("checkpoints"),),
                                 "seed": ("INT", {"default": 0, "min": 0, "max": 0xffffffffffffffff}),
                                 "width": ("INT", {"default": 64, "min": 16, "max": nodes.MAX_RESOLUTION, "step": 8})}}
        RETURN_TYPES = ("LATENT", "IMAGE")
        FUNCTION = "doit"
        CATEGORY = "test/style"

        def doit(self, ckpt_name, seed, width):
            model, clip, vae = nodes.CheckpointLoaderSimple().load_checkpoint(ckpt_name)[:3]
            positive = nodes.CLIPTextEncode().encode(clip, "a cat")[0]
            negative = nodes.CLIPTextEncode().encode(clip, "")[0]
            latent = nodes.EmptyLatentImage().generate(width, 64, 1)[0]
            latent = nodes.common_ksampler(model, seed, 2, 7.0, "euler", "normal", positive, negative, latent,
                                           denoise=1.0)[0]
            return (latent, nodes.VAEDecode().decode(vae, latent)[0])

    class PreviewBridgeLike(nodes.PreviewImage):
        def __init__(self):
            super().__init__()
            self.prefix_append = "_bridge"

    class SaveElsewhere(nodes.SaveImage):
        def __init__(self):
            self.output_dir = folder_paths.get_temp_directory()
            self.type = "temp"
            self.prefix_append = "_kept"
            self.compress_level = 1

    NODE_CLASS_MAPPINGS = {"StyledTextEncode": StyledTextEncode, "LoaderAndSampler": LoaderAndSampler,
                           "PreviewBridgeLike": PreviewBridgeLike, "SaveElsewhere": SaveElsewhere}
    NODE_DISPLAY_NAME_MAPPINGS = {"StyledTextEncode": "Styled Text Encode"}
"""}


@pytest.fixture
def harness(tmp_path, tiny_checkpoint):
    h = FaceHarness(tmp_path)
    (h.folders.models_dir / "checkpoints").mkdir(parents=True, exist_ok=True)
    shutil.copyfile(tiny_checkpoint, h.folders.models_dir / "checkpoints" / "tiny.safetensors")
    h.pack("style_pack", STYLE_PACK)
    h.load()
    assert h.plugin("style_pack").is_ok, h.report.lines()
    h.registry.register("Capture", Capture)
    Capture.seen = []
    yield h
    h.close()


def test_comfyui_names_of_the_nodes_module(harness) -> None:
    import nodes

    assert nodes.MAX_RESOLUTION == 16384
    assert nodes.NODE_CLASS_MAPPINGS["StyledTextEncode"] is harness.registry.get("StyledTextEncode")
    assert nodes.NODE_DISPLAY_NAME_MAPPINGS["StyledTextEncode"] == "Styled Text Encode"
    assert set(nodes.NODE_CLASS_MAPPINGS) == set(harness.registry.names())
    assert nodes.CLIPTextEncode.FUNCTION == "encode" and nodes.KSampler.FUNCTION == "sample"
    assert nodes.VAEDecode.FUNCTION == "decode" and nodes.LoraLoader.FUNCTION == "load_lora"
    assert nodes.CheckpointLoaderSimple.FUNCTION == "load_checkpoint" and nodes.SaveImage.FUNCTION == "save_images"
    assert list(__import__("inspect").signature(nodes.KSampler.sample).parameters)[:4] == ["self", "model", "seed", "steps"]
    with pytest.raises(AttributeError):
        nodes.NoSuchNode
    nodes.NODE_CLASS_MAPPINGS["LateNode"] = Capture            # writing registers
    assert harness.registry.get("LateNode") is Capture


def test_core_node_subclasses_and_chained_core_calls_run(harness) -> None:
    prompt = {
        "1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "tiny.safetensors"}},
        "2": {"class_type": "StyledTextEncode", "inputs": {"clip": ["1", 1], "text": "a cat", "style": "oil painting"}},
        "3": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["1", 1], "text": "a cat, oil painting"}},
        "4": {"class_type": "Capture", "inputs": {"value": ["2", 0]}},
        "5": {"class_type": "Capture", "inputs": {"value": ["3", 0]}},
        "6": {"class_type": "LoaderAndSampler", "inputs": {"ckpt_name": "tiny.safetensors", "seed": 3, "width": 64}},
        "7": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}},
        "8": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["1", 1], "text": "a cat"}},
        "9": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["1", 1], "text": ""}},
        "10": {"class_type": "KSampler", "inputs": {"model": ["1", 0], "seed": 3, "steps": 2, "cfg": 7.0,
                                                    "sampler_name": "euler", "scheduler": "normal", "positive": ["8", 0],
                                                    "negative": ["9", 0], "latent_image": ["7", 0], "denoise": 1.0}},
        "11": {"class_type": "Capture", "inputs": {"value": ["6", 0]}},
        "12": {"class_type": "Capture", "inputs": {"value": ["10", 0]}},
        "13": {"class_type": "PreviewBridgeLike", "inputs": {"images": ["6", 1]}},
        "14": {"class_type": "SaveElsewhere", "inputs": {"images": ["6", 1], "filename_prefix": "mine"}},
    }
    result = harness.run(prompt)
    assert result.status == "success", result.error
    conds = [v for v in Capture.seen if isinstance(v, list)]
    latents = [v for v in Capture.seen if isinstance(v, dict)]
    assert len(conds) == 2 and torch.equal(conds[0][0][0], conds[1][0][0])
    assert len(latents) == 2 and torch.equal(latents[0]["samples"], latents[1]["samples"])
    preview = result.outputs["13"]["images"][0]
    assert preview["type"] == "temp" and preview["filename"].startswith("ComfyUI_bridge")
    kept = result.outputs["14"]["images"][0]
    assert kept["type"] == "temp" and kept["filename"].startswith("mine_kept")
    assert (harness.folders.temp / kept["filename"]).is_file()
