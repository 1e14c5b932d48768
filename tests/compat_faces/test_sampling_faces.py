"""comfy.samplers / comfy.sample / comfy.k_diffusion.sampling / comfy.model_patcher / comfy.sd as packs use
them (Impact's detailer, KJNodes' custom samplers, Efficiency's samplers): each route must give the image
Plexus's own KSampler / SamplerCustom gives for the same inputs."""
from __future__ import annotations

import shutil

import pytest
import torch

from .harness import FaceHarness

SAMPLING_PACK = {"__init__.py": """
    import torch
    import comfy.samplers
    import comfy.sample
    import comfy.sd
    import comfy.model_management
    import comfy.k_diffusion.sampling as k_sampling
    import folder_paths
    import latent_preview
    import node_helpers
    from comfy.model_patcher import ModelPatcher
    from comfy.comfy_types import IO, InputTypeDict
    from comfy_extras.nodes_custom_sampler import Noise_RandomNoise

    class PackSample:
        @classmethod
        def INPUT_TYPES(s) -> InputTypeDict:
            return {"required": {"model": (IO.MODEL,), "positive": (IO.CONDITIONING,), "negative": (IO.CONDITIONING,),
                                 "latent": (IO.LATENT,), "seed": (IO.INT, {"default": 0}),
                                 "sampler_name": (comfy.samplers.KSampler.SAMPLERS,),
                                 "scheduler": (comfy.samplers.KSampler.SCHEDULERS,),
                                 "route": (["sample", "sample_custom", "ksampler_function", "guider"],)}}
        RETURN_TYPES = ("LATENT",)
        FUNCTION = "doit"
        CATEGORY = "test"

        def doit(self, model, positive, negative, latent, seed, sampler_name, scheduler, route):
            assert isinstance(model, ModelPatcher)
            samples = comfy.sample.fix_empty_latent_channels(model, latent["samples"])
            noise = comfy.sample.prepare_noise(samples, seed, latent.get("batch_index"))
            callback = latent_preview.prepare_callback(model, 4)
            if route == "sample":
                out = comfy.sample.sample(model, noise, 4, 7.0, sampler_name, scheduler, positive, negative, samples,
                                          callback=callback, seed=seed)
                return ({"samples": out},)
            sigmas = comfy.samplers.calculate_sigmas(model.get_model_object("model_sampling"), scheduler, 4).cpu()
            if route == "sample_custom":
                sampler = comfy.samplers.sampler_object(sampler_name)
            else:
                base = getattr(k_sampling, "sample_" + sampler_name)
                def my_sampler(model, x, sigmas, extra_args=None, callback=None, disable=None):
                    return base(model, x, sigmas, extra_args=extra_args, callback=callback, disable=disable)
                sampler = comfy.samplers.KSAMPLER(my_sampler)
            if route == "guider":
                guider = comfy.samplers.CFGGuider(model)
                guider.set_conds(positive, negative)
                guider.set_cfg(7.0)
                out = guider.sample(Noise_RandomNoise(seed).generate_noise({"samples": samples}), samples, sampler,
                                    sigmas, callback=callback, seed=seed)
            else:
                out = comfy.sample.sample_custom(model, noise, 7.0, sampler, sigmas, positive, negative, samples,
                                                 callback=callback, seed=seed)
            return ({"samples": out},)

    class PackLoad:
        @classmethod
        def INPUT_TYPES(s):
            return {"required": {"ckpt_name": (folder_paths.get_filename_list("checkpoints"),)}}
        RETURN_TYPES = ("MODEL", "CLIP", "VAE")
        FUNCTION = "load"
        CATEGORY = "test"

        def load(self, ckpt_name):
            path = folder_paths.get_full_path("checkpoints", ckpt_name)
            model, clip, vae, _ = comfy.sd.load_checkpoint_guess_config(path, output_vae=True, output_clip=True)
            assert isinstance(vae, comfy.sd.VAE) and isinstance(clip, comfy.sd.CLIP)
            return (model, clip, vae)

    class PackEncode:
        @classmethod
        def INPUT_TYPES(s):
            return {"required": {"clip": ("CLIP",), "text": ("STRING", {"default": ""})}}
        RETURN_TYPES = ("CONDITIONING",)
        FUNCTION = "encode"
        CATEGORY = "test"

        def encode(self, clip, text):
            tokens = clip.tokenize(text)
            cond, pooled = clip.encode_from_tokens(tokens, return_pooled=True)
            return (node_helpers.conditioning_set_values([[cond, {}]], {"pooled_output": pooled}),)

    NODE_CLASS_MAPPINGS = {"PackSample": PackSample, "PackLoad": PackLoad, "PackEncode": PackEncode}
"""}


@pytest.fixture
def harness(tmp_path, tiny_checkpoint):
    h = FaceHarness(tmp_path)
    (h.folders.models_dir / "checkpoints").mkdir(parents=True, exist_ok=True)
    shutil.copyfile(tiny_checkpoint, h.folders.models_dir / "checkpoints" / "tiny.safetensors")
    h.pack("sampling_pack", SAMPLING_PACK)
    h.load()
    assert h.plugin("sampling_pack").is_ok, h.report.lines()
    yield h
    h.close()


def _prompt(sampler_node: dict, loader: str = "CheckpointLoaderSimple", encoder: str = "CLIPTextEncode") -> dict:
    load_inputs = {"ckpt_name": "tiny.safetensors"}
    return {
        "1": {"class_type": loader, "inputs": load_inputs},
        "2": {"class_type": encoder, "inputs": {"clip": ["1", 1], "text": "a cat"}},
        "3": {"class_type": encoder, "inputs": {"clip": ["1", 1], "text": ""}},
        "4": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}},
        "5": sampler_node,
        "6": {"class_type": "Capture", "inputs": {}},
    }


class Capture:
    """An output node that reports the latent's values in its UI output."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"latent": ("LATENT",)}}
    RETURN_TYPES = ()
    FUNCTION = "run"
    OUTPUT_NODE = True
    CATEGORY = "test"

    def run(self, latent):
        return {"ui": {"values": latent["samples"].flatten().tolist()}}


def _run(harness, prompt: dict) -> torch.Tensor:
    if "Capture" not in harness.registry:
        harness.registry.register("Capture", Capture)
    prompt["6"]["inputs"] = {"latent": ["5", 0]}
    result = harness.run(prompt)
    assert result.status == "success", result.error
    return torch.tensor(result.outputs["6"]["values"])


KSAMPLER_NODE = {"class_type": "KSampler", "inputs": {
    "model": ["1", 0], "positive": ["2", 0], "negative": ["3", 0], "latent_image": ["4", 0], "seed": 5, "steps": 4,
    "cfg": 7.0, "sampler_name": "euler_ancestral", "scheduler": "karras", "denoise": 1.0}}


def _pack_node(route: str) -> dict:
    return {"class_type": "PackSample", "inputs": {
        "model": ["1", 0], "positive": ["2", 0], "negative": ["3", 0], "latent": ["4", 0], "seed": 5,
        "sampler_name": "euler_ancestral", "scheduler": "karras", "route": route}}


def test_every_sampling_route_gives_plexus_ksampler_result(harness) -> None:
    reference = _run(harness, _prompt(KSAMPLER_NODE))
    for route in ("sample", "sample_custom", "ksampler_function", "guider"):
        got = _run(harness, _prompt(_pack_node(route)))
        assert torch.allclose(got, reference, atol=1e-5), route
    progress = [e.data for e in harness.seen if e.type == "progress" and e.data.get("node") == "5"]
    assert progress and progress[-1]["value"] == progress[-1]["max"] == 4


def test_comfy_sd_loader_and_clip_tokens_match_core_nodes(harness) -> None:
    reference = _run(harness, _prompt(KSAMPLER_NODE))
    got = _run(harness, _prompt(dict(KSAMPLER_NODE), loader="PackLoad", encoder="PackEncode"))
    assert torch.allclose(got, reference, atol=1e-5)


def test_names_lists_and_patcher_surface(harness) -> None:
    import comfy.k_diffusion.sampling as k_sampling
    import comfy.model_base
    import comfy.samplers
    from sampling.samplers import SAMPLERS
    from sampling.schedules import SCHEDULERS

    assert comfy.samplers.SAMPLER_NAMES[-3:] == ["ddim", "uni_pc", "uni_pc_bh2"]
    assert set(comfy.samplers.SAMPLER_NAMES) == set(SAMPLERS) and comfy.samplers.SCHEDULER_NAMES == list(SCHEDULERS)
    assert comfy.samplers.KSampler.DISCARD_PENULTIMATE_SIGMA_SAMPLERS == {"dpm_2", "dpm_2_ancestral", "uni_pc", "uni_pc_bh2"}
    with pytest.raises(ValueError):
        comfy.samplers.sampler_object("euler_anc")
    with pytest.raises(AttributeError):
        k_sampling.sample_no_such_sampler
    import comfy.sd
    import folder_paths
    model = comfy.sd.load_checkpoint_guess_config(folder_paths.get_full_path("checkpoints", "tiny.safetensors"))[0]
    clone = model.clone()
    clone.set_model_attn1_patch(lambda q, k, v, extra: (q, k, v))
    assert "attn1_patch" in clone.model_options["transformer_options"]["patches"]
    assert "transformer_options" not in model.model_options
    assert isinstance(model.model, comfy.model_base.SD15) and not isinstance(model.model, comfy.model_base.SDXL)
    assert model.model.model_sampling is model.get_model_object("model_sampling")
    assert model.load_device == model.manager.device and model.model_dtype() == next(model.module.parameters()).dtype
    key = next(iter(model.get_key_patches("input_blocks.0")))
    assert key.startswith("input_blocks.0")


def test_controlnet_names_import_and_fail_clearly(harness) -> None:
    import comfy.controlnet

    class MyControl(comfy.controlnet.ControlBase):   # packs subclass at import (test_controlnet_face.py runs one)
        pass

    control = MyControl().set_cond_hint(torch.zeros(1, 3, 8, 8), 0.5, (0.0, 0.5))
    assert control.strength == 0.5 and control.get_models() == [] and control.previous_controlnet is None
    from models.errors import ModelFileError
    with pytest.raises(ModelFileError, match="Model file not found: x.safetensors"):
        comfy.controlnet.load_controlnet("x.safetensors")
