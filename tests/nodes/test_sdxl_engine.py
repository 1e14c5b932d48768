"""SDXL workflows through the real Engine with tiny SDXL-layout checkpoints (models.testing.write_sdxl_checkpoint,
loaded by the real loader): txt2img, CLIPTextEncodeSDXL and its sizes, img2img, inpainting, base -> refiner."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from model_management import MemorySettings
from models.testing import tiny_sdxl_text_configs, tiny_sdxl_unet_config, tiny_vae_config, write_sdxl_checkpoint
from nodes import services
from tests.diffusion.helpers import install_checkpoint
from tests.nodes.engine_harness import Capture, Harness

BASE, REFINER, INPAINT = "xl-base.safetensors", "xl-refiner.safetensors", "xl-inpaint.safetensors"


@pytest.fixture(scope="module")
def harness(tmp_path_factory):
    root = tmp_path_factory.mktemp("xl")
    text = tiny_sdxl_text_configs()
    files = {BASE: write_sdxl_checkpoint(root / BASE, tiny_sdxl_unet_config(), text=text, vae=tiny_vae_config()),
             REFINER: write_sdxl_checkpoint(root / REFINER, tiny_sdxl_unet_config(refiner=True), refiner=True,
                                            text=text, vae=tiny_vae_config(), seed=1),
             INPAINT: write_sdxl_checkpoint(root / INPAINT, tiny_sdxl_unet_config(in_channels=9), text=text,
                                            vae=tiny_vae_config(), seed=2)}
    h = Harness(tmp_path_factory.mktemp("base"))
    h.services = services.NodeServices(h.folders, settings=MemorySettings(force_fp32=True))
    for name, path in files.items():
        install_checkpoint(path, h.folders.paths("checkpoints")[0], name)
    h.registry.register("TestCapture", Capture)
    services.install(h.services)
    yield h
    services.install(None)
    h.close()


def sampled(h: Harness, prompt: dict, link=("3", 0)) -> torch.Tensor:
    prompt = dict(prompt) | {"99": {"class_type": "TestCapture", "inputs": {"value": list(link)}}}
    h.engine.clear_cache()
    Capture.seen = []
    checked = h.engine.validate(prompt)
    assert not checked.node_errors, checked.node_errors
    result = h.run(prompt)
    assert result.status == "success", (result.error.get("exception_message"), result.error.get("traceback"))
    return Capture.seen[-1]


def txt2img(positive: dict | None = None, seed: int = 7, ckpt: str = BASE, latent: dict | None = None,
            denoise: float = 1.0) -> dict:
    return {
        "4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": ckpt}},
        "5": latent or {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}},
        "6": positive or {"class_type": "CLIPTextEncode", "inputs": {"text": "a (red:1.2) cat", "clip": ["4", 1]}},
        "7": {"class_type": "CLIPTextEncode", "inputs": {"text": "blurry", "clip": ["4", 1]}},
        "3": {"class_type": "KSampler", "inputs": {"seed": seed, "steps": 3, "cfg": 5.0, "sampler_name": "euler",
                                                   "scheduler": "normal", "denoise": denoise, "model": ["4", 0],
                                                   "positive": ["6", 0], "negative": ["7", 0],
                                                   "latent_image": ["5", 0]}},
    }


def sdxl_encode(width=1024, height=1024, crop_w=0, crop_h=0, target_width=1024, target_height=1024,
                text_g="a (red:1.2) cat", text_l="a (red:1.2) cat") -> dict:
    return {"class_type": "CLIPTextEncodeSDXL", "inputs": {
        "clip": ["4", 1], "width": width, "height": height, "crop_w": crop_w, "crop_h": crop_h,
        "target_width": target_width, "target_height": target_height, "text_g": text_g, "text_l": text_l}}


def test_txt2img_is_deterministic_and_seeded(harness):
    a = sampled(harness, txt2img())["samples"]
    b = sampled(harness, txt2img())["samples"]
    c = sampled(harness, txt2img(seed=8))["samples"]
    assert a.shape == (1, 4, 8, 8) and torch.isfinite(a).all()
    assert torch.equal(a, b) and not torch.allclose(a, c)


def test_plain_clip_text_encode_means_the_latent_size_and_sdxl_sizes_matter(harness):
    """ComfyUI (samplers.encode_model_conds): a CONDITIONING without sizes is embedded at the latent's size
    in pixels (8 per latent pixel: 64 x 64 here), crop 0, target the same; not at encode_adm's 768."""
    plain = sampled(harness, txt2img())["samples"]
    same = sampled(harness, txt2img(sdxl_encode(64, 64, 0, 0, 64, 64)))["samples"]
    torch.testing.assert_close(same, plain, rtol=0, atol=1e-5)
    assert (sampled(harness, txt2img(sdxl_encode(768, 768, 0, 0, 768, 768)))["samples"] - plain).abs().max() > 1e-3
    other = sampled(harness, txt2img(sdxl_encode(1024, 640, 16, 32, 896, 1152)))["samples"]
    assert (other - plain).abs().max() > 1e-3


def test_clip_text_encode_sdxl_conditioning(harness):
    cond = sampled(harness, txt2img(sdxl_encode(1024, 640, 16, 32, 896, 1152, text_g="cat " * 90,
                                                text_l="dog")), ("6", 0))
    tensor, options = cond[0]
    assert tensor.shape == (1, 154, 64)                      # 32 (CLIP-L) + 32 (bigG); text_l padded to 2 chunks
    assert options["pooled_output"].shape == (1, 1280)
    assert {k: options[k] for k in ("width", "height", "crop_w", "crop_h", "target_width", "target_height")} == \
        {"width": 1024, "height": 640, "crop_w": 16, "crop_h": 32, "target_width": 896, "target_height": 1152}


def test_img2img(harness):
    image = Image.fromarray((np.random.default_rng(0).random((32, 32, 3)) * 255).astype(np.uint8))
    image.save(harness.folders.input / "xl-src.png")
    prompt = txt2img(denoise=0.6, latent={"class_type": "VAEEncode", "inputs": {"pixels": ["10", 0], "vae": ["4", 2]}})
    prompt["10"] = {"class_type": "LoadImage", "inputs": {"image": "xl-src.png"}}
    out = sampled(harness, prompt)["samples"]
    assert out.shape == (1, 4, 8, 8) and torch.isfinite(out).all()


def test_inpainting_checkpoint_with_inpaint_model_conditioning(harness):
    image = Image.fromarray((np.random.default_rng(1).random((32, 32, 3)) * 255).astype(np.uint8))
    image.save(harness.folders.input / "xl-inpaint.png")
    prompt = txt2img(ckpt=INPAINT)
    prompt["10"] = {"class_type": "LoadImage", "inputs": {"image": "xl-inpaint.png"}}
    prompt["11"] = {"class_type": "SolidMask", "inputs": {"value": 1.0, "width": 32, "height": 32}}
    prompt["12"] = {"class_type": "InpaintModelConditioning", "inputs": {
        "positive": ["6", 0], "negative": ["7", 0], "vae": ["4", 2], "pixels": ["10", 0], "mask": ["11", 0],
        "noise_mask": True}}
    prompt["3"]["inputs"].update(positive=["12", 0], negative=["12", 1], latent_image=["12", 2])
    out = sampled(harness, prompt)["samples"]
    assert out.shape == (1, 4, 8, 8) and torch.isfinite(out).all()


def _advanced(model, positive, negative, latent, start, end, add_noise, leftover):
    return {"class_type": "KSamplerAdvanced", "inputs": {
        "model": model, "add_noise": add_noise, "noise_seed": 5, "steps": 6, "cfg": 5.0, "sampler_name": "euler",
        "scheduler": "normal", "positive": positive, "negative": negative, "latent_image": latent,
        "start_at_step": start, "end_at_step": end, "return_with_leftover_noise": leftover}}


def test_base_then_refiner_with_two_ksampler_advanced(harness):
    prompt = txt2img(sdxl_encode())
    prompt["20"] = {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": REFINER}}
    prompt["21"] = {"class_type": "CLIPTextEncodeSDXLRefiner", "inputs": {
        "ascore": 6.0, "width": 1024, "height": 1024, "text": "a cat", "clip": ["20", 1]}}
    prompt["22"] = {"class_type": "CLIPTextEncodeSDXLRefiner", "inputs": {
        "ascore": 2.5, "width": 1024, "height": 1024, "text": "blurry", "clip": ["20", 1]}}
    prompt["3"] = _advanced(["4", 0], ["6", 0], ["7", 0], ["5", 0], 0, 4, "enable", "enable")
    prompt["30"] = _advanced(["20", 0], ["21", 0], ["22", 0], ["3", 0], 4, 10000, "disable", "disable")
    handed = sampled(harness, prompt, ("3", 0))["samples"]
    final = sampled(harness, prompt, ("30", 0))["samples"]
    assert torch.isfinite(final).all() and (final - handed).abs().max() > 1e-3
    # ComfyUI's defaults for a plain CLIPTextEncode on the refiner: the latent's size (64 x 64) and, as a
    # negative, score 2.5
    prompt["22"]["inputs"].update(width=64, height=64)
    explicit = sampled(harness, prompt, ("30", 0))["samples"]
    prompt["22"] = {"class_type": "CLIPTextEncode", "inputs": {"text": "blurry", "clip": ["20", 1]}}
    torch.testing.assert_close(sampled(harness, prompt, ("30", 0))["samples"], explicit, rtol=0, atol=1e-5)
    prompt["22"] = {"class_type": "CLIPTextEncodeSDXLRefiner", "inputs": {
        "ascore": 6.0, "width": 64, "height": 64, "text": "blurry", "clip": ["20", 1]}}
    assert (sampled(harness, prompt, ("30", 0))["samples"] - explicit).abs().max() > 1e-4


def test_clip_text_encode_sdxl_on_the_refiner_clip_is_refused_with_a_reason(harness):
    prompt = txt2img(sdxl_encode())
    prompt["4"]["inputs"]["ckpt_name"] = REFINER
    prompt["99"] = {"class_type": "TestCapture", "inputs": {"value": ["3", 0]}}
    harness.engine.clear_cache()
    result = harness.run(prompt)
    assert result.status == "error" and result.error["node_type"] == "CLIPTextEncodeSDXL"
    assert "clip_l" in result.error["exception_message"]


# --- LoRA ---------------------------------------------------------------------------------------------------

def _sdxl_lora() -> dict[str, torch.Tensor]:
    """kohya names for both towers and the UNet, plus PEFT/diffusers names for a UNet attention (tiny layout:
    input_blocks.3 is level 1's res + transformer block, down_blocks.2 is level 2 with depth 2)."""
    from tests.lora.makers import kohya_lora, peft_lora
    torch.manual_seed(0)
    kohya = kohya_lora({"lora_te1_text_model_encoder_layers_0_self_attn_q_proj": (32, 32),
                        "lora_te2_text_model_encoder_layers_1_mlp_fc1": (64, 32),
                        "lora_unet_input_blocks_3_1_transformer_blocks_0_attn2_to_k": (64, 64),
                        "lora_unet_output_blocks_0_0_in_layers_2": (64, 128, 3, 3)})
    peft = peft_lora({"unet.down_blocks.2.attentions.0.transformer_blocks.1.attn1.to_q": (64, 64)})
    return kohya | peft


def test_an_sdxl_lora_patches_both_towers_and_the_unet(harness, tmp_path):
    from models.lora.apply import apply_lora
    model = sampled(harness, txt2img(), ("4", 0))
    clip = sampled(harness, txt2img(), ("4", 1))
    _, _, report = apply_lora(model, clip, _sdxl_lora(), 1.0, 1.0, "xl-lora.safetensors")
    assert report.unmatched == [] and report.patched_weights == 5


def test_lora_loader_on_sdxl_changes_the_image_and_strength_zero_does_not(harness):
    from safetensors.torch import save_file
    lora_dir = harness.folders.paths("loras")[0]
    lora_dir.mkdir(parents=True, exist_ok=True)
    save_file(_sdxl_lora(), lora_dir / "xl-lora.safetensors")
    plain = sampled(harness, txt2img())["samples"]

    def with_lora(strength: float) -> dict:
        prompt = txt2img()
        prompt["40"] = {"class_type": "LoraLoader", "inputs": {"model": ["4", 0], "clip": ["4", 1],
                                                               "lora_name": "xl-lora.safetensors",
                                                               "strength_model": strength, "strength_clip": strength}}
        prompt["6"]["inputs"]["clip"] = prompt["7"]["inputs"]["clip"] = ["40", 1]
        prompt["3"]["inputs"]["model"] = ["40", 0]
        return prompt
    assert (sampled(harness, with_lora(1.0))["samples"] - plain).abs().max() > 1e-3
    torch.testing.assert_close(sampled(harness, with_lora(0.0))["samples"], plain, rtol=0, atol=0)


# --- standalone text encoders -------------------------------------------------------------------------------

def test_dual_clip_loader_sdxl_equals_the_checkpoint_clip(harness):
    """The checkpoint's towers saved as a clip_l file (HF) and a clip_g file (HF layout, as standalone bigG
    files are) load through DualCLIPLoader type sdxl, in either order, and condition exactly alike."""
    from safetensors.torch import save_file

    from models.files import load_state_dict
    from tests.models.test_text_encoder import open_clip_to_transformers
    folder = harness.folders.paths("text_encoders")[0]
    folder.mkdir(parents=True, exist_ok=True)
    with load_state_dict(harness.folders.find("checkpoints", BASE)) as source:
        l_sd = {k.removeprefix("conditioner.embedders.0.transformer."): source[k].clone() for k in source
                if k.startswith("conditioner.embedders.0.transformer.")}
        g_open = {k.removeprefix("conditioner.embedders.1.model."): source[k].clone() for k in source
                  if k.startswith("conditioner.embedders.1.model.")}
    g_hf = {(k if k.startswith("text_projection") else "text_model." + k): v.contiguous()
            for k, v in open_clip_to_transformers(g_open, 2).items()}
    save_file(l_sd, folder / "xl_clip_l.safetensors")
    save_file(g_hf, folder / "xl_clip_g.safetensors")
    reference = sampled(harness, txt2img(sdxl_encode(1024, 640, 16, 32, 896, 1152)), ("6", 0))
    for first, second in (("xl_clip_l.safetensors", "xl_clip_g.safetensors"),
                          ("xl_clip_g.safetensors", "xl_clip_l.safetensors")):
        prompt = txt2img(sdxl_encode(1024, 640, 16, 32, 896, 1152))
        prompt["50"] = {"class_type": "DualCLIPLoader", "inputs": {"clip_name1": first, "clip_name2": second,
                                                                   "type": "sdxl"}}
        prompt["6"]["inputs"]["clip"] = ["50", 0]
        got = sampled(harness, prompt, ("6", 0))
        torch.testing.assert_close(got[0][0], reference[0][0], rtol=0, atol=1e-5)
        torch.testing.assert_close(got[0][1]["pooled_output"], reference[0][1]["pooled_output"], rtol=0, atol=1e-5)
    prompt["50"]["inputs"]["clip_name2"] = "xl_clip_l.safetensors"
    prompt["50"]["inputs"]["clip_name1"] = "xl_clip_l.safetensors"
    prompt["99"] = {"class_type": "TestCapture", "inputs": {"value": ["6", 0]}}
    harness.engine.clear_cache()
    result = harness.run(prompt)
    assert result.status == "error" and "clip_g" in result.error["exception_message"]
