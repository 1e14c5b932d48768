"""nodes.spec: the declarative helper emits exactly ComfyUI's classic protocol."""
from __future__ import annotations

import sys
import types

import pytest

from nodes.spec import (Boolean, Combo, Float, Hidden, Input, Int, Output, String, module_mappings, node,
                        node_mappings, optional)


@node("KSamplerLike", category="sampling", display_name="KSampler (like)", description="Denoises.")
class KSamplerLike:
    model = Input("MODEL", tooltip="The model used for denoising the input latent.")
    seed = Int(0, min=0, max=0xffffffffffffffff, control_after_generate=True, tooltip="The random seed.")
    steps = Int(20, min=1, max=10000)
    cfg = Float(8.0, min=0.0, max=100.0, step=0.1, round=0.01)
    sampler_name = Combo(["euler", "euler_ancestral"])
    text = String("", multiline=True, dynamic_prompts=True)
    flag = optional(Boolean(True, label_on="yes", label_off="no"))
    latent = optional(Input("LATENT", lazy=True, force_input=True))
    prompt = Hidden("PROMPT")
    unique_id = Hidden("UNIQUE_ID")
    RETURNS = (Output("LATENT", tooltip="The denoised latent."),)

    def run(self, **kwargs):
        return (kwargs,)


def test_classic_attributes() -> None:
    cls = KSamplerLike
    assert cls.FUNCTION == "run" and cls.CATEGORY == "sampling" and cls.OUTPUT_NODE is False
    assert cls.RETURN_TYPES == ("LATENT",) and cls.RETURN_NAMES == ("LATENT",)
    assert cls.OUTPUT_TOOLTIPS == ("The denoised latent.",)
    assert cls.DESCRIPTION == "Denoises."
    for absent in ("OUTPUT_IS_LIST", "INPUT_IS_LIST", "DEPRECATED", "EXPERIMENTAL", "NOT_IDEMPOTENT"):
        assert not hasattr(cls, absent)
    assert not hasattr(cls, "seed")  # descriptors do not linger on the class


def test_input_types_exact_specs_in_declaration_order() -> None:
    spec = KSamplerLike.INPUT_TYPES()
    assert list(spec) == ["required", "optional", "hidden"]
    assert list(spec["required"]) == ["model", "seed", "steps", "cfg", "sampler_name", "text"]
    assert spec["required"]["model"] == ("MODEL", {"tooltip": "The model used for denoising the input latent."})
    assert spec["required"]["seed"] == ("INT", {"default": 0, "min": 0, "max": 18446744073709551615,
                                                "control_after_generate": True, "tooltip": "The random seed."})
    assert spec["required"]["steps"] == ("INT", {"default": 20, "min": 1, "max": 10000})
    assert spec["required"]["cfg"] == ("FLOAT", {"default": 8.0, "min": 0.0, "max": 100.0, "step": 0.1, "round": 0.01})
    assert spec["required"]["sampler_name"] == (["euler", "euler_ancestral"],)
    assert spec["required"]["text"] == ("STRING", {"default": "", "multiline": True, "dynamicPrompts": True})
    assert spec["optional"] == {"flag": ("BOOLEAN", {"default": True, "label_on": "yes", "label_off": "no"}),
                                "latent": ("LATENT", {"forceInput": True, "lazy": True})}
    assert spec["hidden"] == {"prompt": "PROMPT", "unique_id": "UNIQUE_ID"}


def test_run_is_the_function() -> None:
    instance = KSamplerLike()
    assert getattr(instance, KSamplerLike.FUNCTION)(seed=3) == ({"seed": 3},)


def test_combo_callable_is_evaluated_each_time() -> None:
    files = ["a.safetensors"]

    @node("Loader", category="loaders")
    class Loader:
        ckpt_name = Combo(lambda: list(files), tooltip="The checkpoint.")
        image = Combo(lambda: ["x.png"], image_upload=True)
        RETURNS = ("MODEL", Output("CLIP", name="clip"))

        def run(self, ckpt_name, image):
            return (ckpt_name, image)

    assert Loader.INPUT_TYPES()["required"]["ckpt_name"] == (["a.safetensors"], {"tooltip": "The checkpoint."})
    files.append("b.safetensors")
    assert Loader.INPUT_TYPES()["required"]["ckpt_name"][0] == ["a.safetensors", "b.safetensors"]
    assert Loader.INPUT_TYPES()["required"]["image"] == (["x.png"], {"image_upload": True})
    assert Loader.RETURN_TYPES == ("MODEL", "CLIP") and Loader.RETURN_NAMES == ("MODEL", "clip")
    assert not hasattr(Loader, "OUTPUT_TOOLTIPS") and not hasattr(Loader, "DESCRIPTION")


def test_flags_and_list_outputs() -> None:
    @node("Batch", category="latent/batch", output_node=True, deprecated=True, experimental=True,
          input_is_list=True, not_idempotent=True, search_aliases=["rebatch"])
    class Batch:
        latents = Input("LATENT")
        RETURNS = (Output("LATENT", is_list=True), Output("INT"))

        def run(self, latents):
            return (latents, len(latents))

    assert Batch.OUTPUT_NODE is True and Batch.DEPRECATED and Batch.EXPERIMENTAL and Batch.INPUT_IS_LIST
    assert Batch.NOT_IDEMPOTENT and Batch.SEARCH_ALIASES == ["rebatch"]
    assert Batch.OUTPUT_IS_LIST == (True, False)
    from execution.registry import NodeRegistry
    registry = NodeRegistry()
    registry.register("Batch", Batch)
    info = registry.object_info("Batch")
    assert info["search_aliases"] == ["rebatch"] and info["deprecated"] and info["output_is_list"] == [True, False]


def test_no_inputs_no_outputs() -> None:
    @node("Nothing", category="utils")
    class Nothing:
        def run(self):
            return ()

    assert Nothing.INPUT_TYPES() == {"required": {}} and Nothing.RETURN_TYPES == ()


def test_misuse_is_reported_early() -> None:
    with pytest.raises(TypeError, match="run"):
        @node("NoRun", category="x")
        class NoRun:
            a = Int(1)

    with pytest.raises(TypeError, match="classic protocol"):
        @node("Both", category="x")
        class Both:
            RETURN_TYPES = ()

            def run(self):
                return ()


def test_mappings_from_classes_and_modules() -> None:
    class_map, display_map = node_mappings([KSamplerLike])
    assert class_map == {"KSamplerLike": KSamplerLike} and display_map == {"KSamplerLike": "KSampler (like)"}

    module = types.ModuleType("fake_node_module")
    exec("from nodes.spec import node, Int\n"
         "from tests.nodes.test_spec import KSamplerLike\n"   # imported, not defined here: not collected
         "@node('B', category='x')\nclass B:\n    def run(self): return ()\n"
         "@node('A', category='x', display_name='Aa')\nclass A:\n    def run(self): return ()\n",
         module.__dict__)
    class_map, display_map = module_mappings(module)
    assert list(class_map) == ["B", "A"] and display_map == {"A": "Aa"}

    classic = types.ModuleType("classic_module")
    classic.NODE_CLASS_MAPPINGS = {"K": KSamplerLike}
    assert module_mappings(classic) == ({"K": KSamplerLike}, {})


def test_builtin_utility_nodes_match_comfyui() -> None:
    from nodes.builtin import utility

    class_map, display_map = module_mappings(utility)
    assert display_map["PrimitiveInt"] == "Int" and display_map["PrimitiveStringMultiline"] == "String (Multiline)"
    assert class_map["PrimitiveInt"].INPUT_TYPES() == {"required": {"value": (
        "INT", {"min": -sys.maxsize, "max": sys.maxsize, "control_after_generate": True})}}
    assert class_map["PrimitiveFloat"].INPUT_TYPES()["required"]["value"] == (
        "FLOAT", {"min": -sys.maxsize, "max": sys.maxsize, "step": 0.1})
    assert class_map["PrimitiveString"].INPUT_TYPES()["required"]["value"] == ("STRING", {"multiline": False})
    assert class_map["PrimitiveStringMultiline"].INPUT_TYPES()["required"]["value"] == ("STRING", {"multiline": True})
    assert class_map["PrimitiveBoolean"].INPUT_TYPES()["required"]["value"] == ("BOOLEAN",)
    for name in ("PrimitiveInt", "PrimitiveFloat", "PrimitiveString", "PrimitiveBoolean"):
        assert class_map[name].CATEGORY == "utils/primitive"
    assert class_map["PrimitiveBoolean"]().run(True) == (True,)
    assert class_map["StringConcatenate"]().run("a", "b", "-") == ("a-b",)
    assert class_map["PreviewAny"]().run({"a": 1}) == {"ui": {"text": ['{\n    "a": 1\n}']},
                                                        "result": ('{\n    "a": 1\n}',)}
