"""workflow_to_prompt: the editor's saved format to API format, checked against exact prompts."""
from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from execution.errors import PlexusError
from execution.workflow import workflow_to_prompt
from tests.execution.workflow_nodes import core_registry

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "workflows"
CKPT = "v1-5-pruned-emaonly.safetensors"
POS = "beautiful scenery nature glass bottle landscape, , purple galaxy bottle,"


@pytest.fixture(scope="module")
def registry():
    return core_registry()


def load(name: str) -> dict:
    return json.loads((FIXTURES / name).read_text())


def api(class_type, inputs, title):
    return {"inputs": inputs, "class_type": class_type, "_meta": {"title": title}}


DEFAULT_PROMPT = {
    "3": api("KSampler", {"seed": 156680208700286, "steps": 20, "cfg": 8, "sampler_name": "euler",
                          "scheduler": "normal", "denoise": 1, "model": ["4", 0], "positive": ["6", 0],
                          "negative": ["7", 0], "latent_image": ["5", 0]}, "KSampler"),
    "4": api("CheckpointLoaderSimple", {"ckpt_name": CKPT}, "Load Checkpoint"),
    "5": api("EmptyLatentImage", {"width": 512, "height": 512, "batch_size": 1}, "Empty Latent Image"),
    "6": api("CLIPTextEncode", {"text": POS, "clip": ["4", 1]}, "CLIP Text Encode (Prompt)"),
    "7": api("CLIPTextEncode", {"text": "text, watermark", "clip": ["4", 1]}, "CLIP Text Encode (Prompt)"),
    "8": api("VAEDecode", {"samples": ["3", 0], "vae": ["4", 2]}, "VAE Decode"),
    "9": api("SaveImage", {"images": ["8", 0], "filename_prefix": "ComfyUI"}, "Save Image"),
}


def test_default_graph_version_04(registry):
    assert workflow_to_prompt(load("sd15_txt2img.json"), registry) == DEFAULT_PROMPT


def test_default_graph_version_1_with_link_objects(registry):
    expected = copy.deepcopy(DEFAULT_PROMPT)
    expected["6"]["_meta"]["title"] = "Positive"
    expected["7"]["_meta"]["title"] = "Negative"
    assert workflow_to_prompt(load("sd15_txt2img_v1.json"), registry) == expected


def test_everything_reroutes_bypass_mute_primitives_group_node_and_subgraph(registry):
    prompt = workflow_to_prompt(load("everything.json"), registry)
    assert prompt == {
        "4": api("CheckpointLoaderSimple", {"ckpt_name": CKPT}, "Load Checkpoint"),
        # primitive "size" feeds both converted widgets; the saved widget values are replaced by its value
        "5": api("EmptyLatentImage", {"width": 768, "height": 768, "batch_size": 1}, "Empty Latent Image"),
        # subgraph instance 40: inner nodes as 40:<id>; its clip input comes through the bypassed LoRA
        "40:1": api("CLIPTextEncode", {"text": "a photo of a cat", "clip": ["4", 1]},
                    "CLIP Text Encode (Prompt)"),
        "40:2": api("CLIPTextEncode", {"text": "studio lighting", "clip": ["4", 1]}, "Style"),
        "40:3": api("ConditioningCombine", {"conditioning_1": ["40:1", 0], "conditioning_2": ["40:2", 0]},
                    "Conditioning (Combine)"),
        "7": api("CLIPTextEncode", {"text": "text, watermark", "clip": ["4", 1]}, "Negative"),
        # group node 30: widget values of the instance override the definition's; model through a reroute
        # and the bypassed LoRA, vae through two reroutes
        "30:0": api("KSampler", {"seed": 42, "steps": 25, "cfg": 7.5, "sampler_name": "euler_ancestral",
                                 "scheduler": "karras", "denoise": 1, "model": ["4", 0],
                                 "positive": ["40:3", 0], "negative": ["7", 0], "latent_image": ["5", 0]},
                    "KSampler"),
        "30:1": api("VAEDecode", {"samples": ["30:0", 0], "vae": ["4", 2]}, "VAE Decode"),
        # converted filename_prefix fed by a STRING primitive; muted PreviewImage 60 and the Note are gone
        "9": api("SaveImage", {"images": ["30:1", 0], "filename_prefix": "plexus_test"}, "Save Image"),
    }


def test_conversion_does_not_modify_the_workflow(registry):
    workflow = load("everything.json")
    before = copy.deepcopy(workflow)
    workflow_to_prompt(workflow, registry)
    assert workflow == before


# -- small graphs built here ------------------------------------------------------------------------


def graph(*nodes, links=(), **extra):
    return {"last_node_id": 99, "last_link_id": 99, "nodes": list(nodes),
            "links": [list(link) for link in links],
            "groups": [], "config": {}, "extra": extra.pop("extra", {}), "version": 0.4, **extra}


def n(id, type, inputs=(), outputs=(), widgets=None, mode=0, title=None):
    node = {"id": id, "type": type, "pos": [0, 0], "size": [200, 100], "flags": {}, "order": id, "mode": mode,
            "inputs": [dict(i) for i in inputs], "outputs": [dict(o) for o in outputs], "properties": {}}
    if widgets is not None:
        node["widgets_values"] = widgets
    if title:
        node["title"] = title
    return node


def i(name, type, link=None, widget=False):
    d = {"name": name, "type": type, "link": link}
    if widget:
        d["widget"] = {"name": name}
    return d


def o(name, type, links=()):
    return {"name": name, "type": type, "links": list(links)}


def inputs_of(prompt, node_id):
    return prompt[node_id]["inputs"]


def test_control_after_generate_entries_are_skipped(registry):
    workflow = graph(n(1, "KSamplerAdvanced", widgets=["enable", 7, "increment", 30, 6.5, "heun", "karras",
                                                       0, 20, "disable"]))
    assert inputs_of(workflow_to_prompt(workflow, registry), "1") == {
        "add_noise": "enable", "noise_seed": 7, "steps": 30, "cfg": 6.5, "sampler_name": "heun",
        "scheduler": "karras", "start_at_step": 0, "end_at_step": 20, "return_with_leftover_noise": "disable"}


def test_a_missing_control_entry_is_tolerated(registry):
    workflow = graph(n(1, "KSampler", widgets=[5, 20, 8, "euler", "normal", 1]))
    assert inputs_of(workflow_to_prompt(workflow, registry), "1")["seed"] == 5


def test_combo_with_control_after_generate_has_an_entry():
    class Pick:
        RETURN_TYPES = ("STRING",)
        FUNCTION = "run"

        @classmethod
        def INPUT_TYPES(cls):
            return {"required": {"choice": (["a", "b"], {"control_after_generate": True}),
                                 "count": ("INT", {"default": 1})},
                    "optional": {"note": ("STRING", {"default": ""})}}
    registry = core_registry()
    registry.register("Pick", Pick)
    expected = {"choice": "b", "count": 3, "note": "hi"}
    # with the control_filter_list entry, without it (older), without both (newest editors)
    for widgets in (["b", "increment-wrap", "", 3, "hi"], ["b", "randomize", 3, "hi"], ["b", 3, "hi"]):
        assert inputs_of(workflow_to_prompt(graph(n(1, "Pick", widgets=widgets)), registry), "1") == expected


def test_control_after_generate_false_turns_off_the_seed_entry():
    class Seeded:
        RETURN_TYPES = ("INT",)
        FUNCTION = "run"

        @classmethod
        def INPUT_TYPES(cls):
            return {"required": {"seed": ("INT", {"control_after_generate": False}),
                                 "mode": (["fixed", "other"],),
                                 "strength": ("FLOAT", {"default": 1.0, "control_after_generate": True})}}
    registry = core_registry()
    registry.register("Seeded", Seeded)
    prompt = workflow_to_prompt(graph(n(1, "Seeded", widgets=[3, "fixed", 0.5, "randomize"])), registry)
    assert inputs_of(prompt, "1") == {"seed": 3, "mode": "fixed", "strength": 0.5}


def test_converted_widget_linked_to_a_real_node_output():
    class SeedSource:
        RETURN_TYPES = ("INT",)
        FUNCTION = "run"

        @classmethod
        def INPUT_TYPES(cls):
            return {"required": {"value": ("INT", {"default": 0})}}
    registry = core_registry()
    registry.register("SeedSource", SeedSource)
    workflow = graph(
        n(1, "SeedSource", outputs=[o("INT", "INT", [1])], widgets=[99]),
        n(2, "KSampler", inputs=[i("seed", "INT", 1, widget=True)], outputs=[o("LATENT", "LATENT")],
          widgets=[5, "fixed", 20, 8, "euler", "normal", 1]),
        links=[[1, 1, 0, 2, 0, "INT"]])
    assert inputs_of(workflow_to_prompt(workflow, registry), "2") == {
        "seed": ["1", 0], "steps": 20, "cfg": 8, "sampler_name": "euler", "scheduler": "normal", "denoise": 1}


def test_load_image_upload_entry_is_not_an_input(registry):
    workflow = graph(n(1, "LoadImage", outputs=[o("IMAGE", "IMAGE"), o("MASK", "MASK")],
                       widgets=["example.png", "image"]))
    assert inputs_of(workflow_to_prompt(workflow, registry), "1") == {"image": "example.png"}


def test_list_values_are_boxed():
    class Takes:
        RETURN_TYPES = ()
        FUNCTION = "run"

        @classmethod
        def INPUT_TYPES(cls):
            return {"required": {"values": ("STRING", {})}}
    registry = core_registry()
    registry.register("Takes", Takes)
    prompt = workflow_to_prompt(graph(n(1, "Takes", widgets=[["a", "b"]])), registry)
    assert inputs_of(prompt, "1") == {"values": {"__value__": ["a", "b"]}}


def test_widget_values_saved_by_name(registry):
    workflow = graph(n(1, "EmptyLatentImage", widgets={"width": 640, "height": 384, "batch_size": 2}))
    expected = {"width": 640, "height": 384, "batch_size": 2}
    assert inputs_of(workflow_to_prompt(workflow, registry), "1") == expected


def test_missing_widgets_values_use_spec_defaults(registry):
    workflow = graph(n(1, "EmptyLatentImage"))
    expected = {"width": 512, "height": 512, "batch_size": 1}
    assert inputs_of(workflow_to_prompt(workflow, registry), "1") == expected


def latent_chain(middle_mode, middle_type="LatentUpscaleBy", middle_widgets=("bilinear", 2)):
    return graph(
        n(1, "EmptyLatentImage", outputs=[o("LATENT", "LATENT", [1])], widgets=[512, 512, 1]),
        n(2, middle_type, inputs=[i("samples", "LATENT", 1)], outputs=[o("LATENT", "LATENT", [2])],
          widgets=list(middle_widgets), mode=middle_mode),
        n(3, "LatentUpscaleBy", inputs=[i("samples", "LATENT", 2)], outputs=[o("LATENT", "LATENT")],
          widgets=["area", 1.5]),
        links=[[1, 1, 0, 2, 0, "LATENT"], [2, 2, 0, 3, 0, "LATENT"]])


def test_bypassed_node_passes_its_matching_input_through(registry):
    prompt = workflow_to_prompt(latent_chain(4), registry)
    assert "2" not in prompt and inputs_of(prompt, "3")["samples"] == ["1", 0]


def test_muted_node_is_dropped_with_the_links_from_it(registry):
    prompt = workflow_to_prompt(latent_chain(2), registry)
    assert set(prompt) == {"1", "3"} and inputs_of(prompt, "3") == {"upscale_method": "area", "scale_by": 1.5}


def test_bypass_with_no_matching_input_type_drops_the_link(registry):
    workflow = graph(
        n(1, "EmptyLatentImage", outputs=[o("LATENT", "LATENT", [1])], widgets=[512, 512, 1]),
        n(2, "CheckpointLoaderSimple", outputs=[o("MODEL", "MODEL"), o("CLIP", "CLIP"), o("VAE", "VAE", [2])],
          widgets=[CKPT]),
        n(3, "VAEDecode", inputs=[i("samples", "LATENT", 1), i("vae", "VAE", 2)],
          outputs=[o("IMAGE", "IMAGE", [3])], mode=4),
        n(4, "PreviewImage", inputs=[i("images", "IMAGE", 3)]),
        links=[[1, 1, 0, 3, 0, "LATENT"], [2, 2, 2, 3, 1, "VAE"], [3, 3, 0, 4, 0, "IMAGE"]])
    assert inputs_of(workflow_to_prompt(workflow, registry), "4") == {}


def test_bypass_picks_the_first_input_of_the_wanted_type(registry):
    # a bypassed LoraLoader: its CLIP output (slot 1) passes its clip input (slot 1), not the model
    workflow = graph(
        n(1, "CheckpointLoaderSimple",
          outputs=[o("MODEL", "MODEL", [1]), o("CLIP", "CLIP", [2]), o("VAE", "VAE")], widgets=[CKPT]),
        n(2, "LoraLoader", inputs=[i("model", "MODEL", 1), i("clip", "CLIP", 2)],
          outputs=[o("MODEL", "MODEL"), o("CLIP", "CLIP", [3])], widgets=["detail.safetensors", 1, 1],
          mode=4),
        n(3, "CLIPTextEncode", inputs=[i("clip", "CLIP", 3)], outputs=[o("CONDITIONING", "CONDITIONING")],
          widgets=["x"]),
        links=[[1, 1, 0, 2, 0, "MODEL"], [2, 1, 1, 2, 1, "CLIP"], [3, 2, 1, 3, 0, "CLIP"]])
    assert inputs_of(workflow_to_prompt(workflow, registry), "3") == {"text": "x", "clip": ["1", 1]}


def test_unconnected_reroute_leaves_the_widget_value(registry):
    workflow = graph(
        n(1, "Reroute", inputs=[{"name": "", "type": "*", "link": None}], outputs=[o("", "INT", [1])]),
        n(2, "EmptyLatentImage", inputs=[i("width", "INT", 1, widget=True)], outputs=[o("LATENT", "LATENT")],
          widgets=[640, 512, 1]),
        links=[[1, 1, 0, 2, 0, "INT"]])
    expected = {"width": 640, "height": 512, "batch_size": 1}
    assert inputs_of(workflow_to_prompt(workflow, registry), "2") == expected


def test_primitive_through_a_reroute_is_inlined(registry):
    workflow = graph(
        n(1, "PrimitiveNode",
          outputs=[{"name": "INT", "type": "INT", "links": [1], "widget": {"name": "seed"}}],
          widgets=[1234, "fixed"]),
        n(2, "Reroute", inputs=[{"name": "", "type": "*", "link": 1}], outputs=[o("", "INT", [2])]),
        n(3, "KSampler", inputs=[i("seed", "INT", 2, widget=True)], outputs=[o("LATENT", "LATENT")],
          widgets=[0, "randomize", 20, 8, "euler", "normal", 1]),
        links=[[1, 1, 0, 2, 0, "INT"], [2, 2, 0, 3, 0, "INT"]])
    assert inputs_of(workflow_to_prompt(workflow, registry), "3")["seed"] == 1234


def subgraph_definition(sub_id="sub-1", inner_type="CLIPTextEncode"):
    return {"id": sub_id, "version": 1, "state": {"lastGroupId": 0, "lastNodeId": 1, "lastLinkId": 3,
                                                 "lastRerouteId": 0},
            "revision": 0, "config": {}, "name": "Encode",
            "inputNode": {"id": -10, "bounding": [0, 0, 120, 60]},
            "outputNode": {"id": -20, "bounding": [0, 0, 120, 60]},
            "inputs": [{"id": "a", "name": "clip", "type": "CLIP", "linkIds": [1]},
                       {"id": "b", "name": "text", "type": "STRING", "linkIds": [3]}],
            "outputs": [{"id": "c", "name": "CONDITIONING", "type": "CONDITIONING", "linkIds": [2]}],
            "widgets": [], "groups": [],
            "nodes": [n(1, inner_type, inputs=[i("clip", "CLIP", 1), i("text", "STRING", 3, widget=True)],
                        outputs=[o("CONDITIONING", "CONDITIONING", [2])], widgets=["inner text"])],
            "links": [{"id": 1, "origin_id": -10, "origin_slot": 0, "target_id": 1, "target_slot": 0,
                       "type": "CLIP"},
                      {"id": 2, "origin_id": 1, "origin_slot": 0, "target_id": -20, "target_slot": 0,
                       "type": "CONDITIONING"},
                      {"id": 3, "origin_id": -10, "origin_slot": 1, "target_id": 1, "target_slot": 1,
                       "type": "STRING"}],
            "extra": {}}


def subgraph_workflow(instance_mode=0, instance_widgets=("outer text",)):
    return graph(
        n(1, "CheckpointLoaderSimple", outputs=[o("MODEL", "MODEL"), o("CLIP", "CLIP", [1]), o("VAE", "VAE")],
          widgets=[CKPT]),
        n(2, "sub-1", inputs=[i("clip", "CLIP", 1), i("text", "STRING", None, widget=True)],
          outputs=[o("CONDITIONING", "CONDITIONING", [2])], widgets=list(instance_widgets),
          mode=instance_mode),
        n(3, "ConditioningCombine", inputs=[i("conditioning_1", "CONDITIONING", 2)],
          outputs=[o("CONDITIONING", "CONDITIONING")]),
        links=[[1, 1, 1, 2, 0, "CLIP"], [2, 2, 0, 3, 0, "CONDITIONING"]],
        definitions={"subgraphs": [subgraph_definition()]})


def test_subgraph_widget_promoted_to_the_instance(registry):
    prompt = workflow_to_prompt(subgraph_workflow(), registry)
    assert inputs_of(prompt, "2:1") == {"text": "outer text", "clip": ["1", 1]}
    assert inputs_of(prompt, "3") == {"conditioning_1": ["2:1", 0]}


def test_subgraph_without_instance_widget_values_keeps_the_inner_value(registry):
    prompt = workflow_to_prompt(subgraph_workflow(instance_widgets=()), registry)
    assert inputs_of(prompt, "2:1")["text"] == "inner text"


def test_muted_subgraph_drops_its_nodes(registry):
    prompt = workflow_to_prompt(subgraph_workflow(instance_mode=2), registry)
    assert set(prompt) == {"1", "3"} and inputs_of(prompt, "3") == {}


def test_nested_subgraphs_get_colon_paths(registry):
    inner = subgraph_definition("sub-inner")
    outer = subgraph_definition("sub-1", inner_type="sub-inner")
    outer["nodes"][0]["widgets_values"] = []
    workflow = subgraph_workflow()
    workflow["definitions"] = {"subgraphs": [outer, inner]}
    prompt = workflow_to_prompt(workflow, registry)
    assert inputs_of(prompt, "2:1:1")["clip"] == ["1", 1]
    assert inputs_of(prompt, "3") == {"conditioning_1": ["2:1:1", 0]}


def test_old_group_node_prefix_and_primitive_inside_a_group(registry):
    definition = {
        "nodes": [
            {"id": -1, "type": "PrimitiveNode", "pos": [0, 0], "size": [200, 80], "flags": {}, "order": 0,
             "mode": 0,
             "outputs": [{"name": "INT", "type": "INT", "links": [], "widget": {"name": "width"}}],
             "title": "side", "properties": {}, "widgets_values": [256, "fixed"], "index": 0},
            {"id": -1, "type": "EmptyLatentImage", "pos": [0, 0], "size": [200, 100], "flags": {}, "order": 1,
             "mode": 0, "inputs": [i("width", "INT", None, widget=True)],
             "outputs": [o("LATENT", "LATENT")], "properties": {}, "widgets_values": [256, 512, 1],
             "index": 1},
        ],
        "links": [[0, 0, 1, 0, 5, "INT"]],
        "external": [],
    }
    workflow = graph(
        n(7, "workflow/Latent", outputs=[o("LATENT", "LATENT", [1])], widgets=[320, "fixed", 448, 2]),
        n(8, "LatentUpscaleBy", inputs=[i("samples", "LATENT", 1)], outputs=[o("LATENT", "LATENT")],
          widgets=["area", 2]),
        links=[[1, 7, 0, 8, 0, "LATENT"]], extra={"groupNodes": {"Latent": definition}})
    prompt = workflow_to_prompt(workflow, registry)
    assert prompt == {
        "7:1": api("EmptyLatentImage", {"width": 320, "height": 448, "batch_size": 2}, "Empty Latent Image"),
        "8": api("LatentUpscaleBy", {"samples": ["7:1", 0], "upscale_method": "area", "scale_by": 2},
                 "Upscale Latent By"),
    }


# -- errors ------------------------------------------------------------------------------------------


def test_unknown_node_type_names_the_node(registry):
    with pytest.raises(PlexusError) as caught:
        workflow_to_prompt(graph(n(12, "FancySampler", widgets=[])), registry)
    error = caught.value
    assert error.type == "invalid_workflow" and "FancySampler #12" in error.message
    assert "unknown node type" in error.message and error.extra_info["node_id"] == "12"


def test_unknown_node_type_is_fine_when_muted(registry):
    assert workflow_to_prompt(graph(n(12, "FancySampler", mode=2)), registry) == {}


def test_widget_count_mismatch(registry):
    with pytest.raises(PlexusError, match=r"EmptyLatentImage #5: widget count mismatch") as caught:
        workflow_to_prompt(graph(n(5, "EmptyLatentImage", widgets=[512, 512, 1, 3])), registry)
    assert "width, height, batch_size" in caught.value.message


def test_missing_trailing_widgets_take_the_spec_defaults_as_the_editor_does(registry):
    """litegraph's LGraphNode.configure assigns widgets_values[i] to widgets[i] for the values saved and
    leaves the later widgets at their defaults: a workflow saved before a node gained trailing widgets
    (ResolutionSelector's `multiple`, ImageScaleToTotalPixels' `resolution_steps`) loads with them."""
    prompt = workflow_to_prompt(graph(n(5, "EmptyLatentImage", widgets=[512, 256])), registry)
    assert prompt["5"]["inputs"] == {"width": 512, "height": 256, "batch_size": 1}
    # a KSampler saved with its seed's control value and fewer trailing widgets
    prompt = workflow_to_prompt(graph(n(7, "KSampler", inputs=[i("model", "MODEL"), i("positive", "CONDITIONING"),
                                                               i("negative", "CONDITIONING"),
                                                               i("latent_image", "LATENT")],
                                        widgets=[5, "fixed", 12, 7.0])), registry)
    assert prompt["7"]["inputs"] == {"seed": 5, "steps": 12, "cfg": 7.0, "sampler_name": "euler",
                                     "scheduler": "normal", "denoise": 1.0}


def test_trailing_null_widgets_of_a_newer_node_are_ignored(registry):
    """A newer PreviewAny saves three display widgets as null; 0.3.64's has none (the editor drops them too)."""
    assert workflow_to_prompt(graph(n(9, "VAEDecode", inputs=[i("samples", "LATENT"), i("vae", "VAE")],
                                      widgets=[None, None, None])), registry)["9"]["inputs"] == {}
    prompt = workflow_to_prompt(graph(n(5, "EmptyLatentImage", widgets=[512, 256, 1, None])), registry)
    assert prompt["5"]["inputs"] == {"width": 512, "height": 256, "batch_size": 1}
    with pytest.raises(PlexusError, match=r"widget count mismatch"):                    # a real value still counts
        workflow_to_prompt(graph(n(5, "EmptyLatentImage", widgets=[512, 256, 1, 7])), registry)


def test_dangling_link_id(registry):
    workflow = graph(n(8, "VAEDecode", inputs=[i("samples", "LATENT", 41), i("vae", "VAE")]))
    with pytest.raises(PlexusError, match=r"VAEDecode #8: dangling link 41 on input 'samples'"):
        workflow_to_prompt(workflow, registry)


def test_link_from_a_missing_node(registry):
    workflow = graph(n(8, "VAEDecode", inputs=[i("samples", "LATENT", 1), i("vae", "VAE")]),
                     links=[[1, 77, 0, 8, 0, "LATENT"]])
    with pytest.raises(PlexusError, match=r"VAEDecode #8: dangling link: it comes from node 77"):
        workflow_to_prompt(workflow, registry)


def test_an_api_prompt_is_not_a_workflow(registry):
    with pytest.raises(PlexusError, match="Not a saved workflow"):
        workflow_to_prompt({"3": {"class_type": "KSampler", "inputs": {}}}, registry)


def test_reroute_cycle_is_reported(registry):
    workflow = graph(
        n(1, "Reroute", inputs=[{"name": "", "type": "*", "link": 2}], outputs=[o("", "LATENT", [1])]),
        n(2, "Reroute", inputs=[{"name": "", "type": "*", "link": 1}], outputs=[o("", "LATENT", [2, 3])]),
        n(3, "LatentUpscaleBy", inputs=[i("samples", "LATENT", 3)], widgets=["area", 2]),
        links=[[1, 1, 0, 2, 0, "LATENT"], [2, 2, 0, 1, 0, "LATENT"], [3, 2, 0, 3, 0, "LATENT"]])
    with pytest.raises(PlexusError, match="loop"):
        workflow_to_prompt(workflow, registry)


def test_bypassed_subgraph_passes_its_input_through():
    class Pass:
        RETURN_TYPES = ("CLIP",)
        FUNCTION = "run"

        @classmethod
        def INPUT_TYPES(cls):
            return {"required": {"clip": ("CLIP",)}}
    registry = core_registry()
    registry.register("Pass", Pass)
    workflow = subgraph_workflow(instance_mode=4)
    workflow["nodes"][1]["outputs"] = [o("CLIP", "CLIP", [2])]
    workflow["nodes"][2] = n(3, "Pass", inputs=[i("clip", "CLIP", 2)], outputs=[o("CLIP", "CLIP")])
    workflow["links"][1] = [2, 2, 0, 3, 0, "CLIP"]
    prompt = workflow_to_prompt(workflow, registry)
    assert set(prompt) == {"1", "3"} and inputs_of(prompt, "3") == {"clip": ["1", 1]}


def test_a_subgraph_that_contains_itself_is_refused(registry):
    definition = subgraph_definition()
    definition["nodes"][0]["type"] = "sub-1"
    workflow = subgraph_workflow()
    workflow["definitions"] = {"subgraphs": [definition]}
    with pytest.raises(PlexusError, match="a subgraph contains itself"):
        workflow_to_prompt(workflow, registry)


def test_subgraph_instance_inputs_match_the_definition_by_name(registry):
    # The editor may save an instance's inputs in another order than the definition's slots (or
    # only some of them): the definition's "clip" slot 0 must find the instance's "clip" input.
    workflow = subgraph_workflow()
    instance = workflow["nodes"][1]
    instance["inputs"] = list(reversed(instance["inputs"]))       # [text, clip]
    workflow["links"] = [[1, 1, 1, 2, 1, "CLIP"], [2, 2, 0, 3, 0, "CONDITIONING"]]
    prompt = workflow_to_prompt(workflow, registry)
    assert inputs_of(prompt, "2:1") == {"text": "outer text", "clip": ["1", 1]}
