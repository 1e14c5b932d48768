"""SD3 / SD3.5 through the real Engine with tiny random-weight SD3-layout files written by models.testing:
the all-in-one checkpoint (CLIP-L, CLIP-G, T5 in fp8), the diffusion model alone, standalone encoders."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from model_management import MemorySettings
from models.testing import (
    tiny_sd3_spec,
    write_random_sd3_checkpoint,
    write_random_text_encoder,
)
from nodes import services
from tests.nodes.engine_harness import Capture, Harness

CKPT = "tiny-sd3.safetensors"
CKPT35 = "tiny-sd35.safetensors"


@pytest.fixture(scope="module")
def harness_sd3(tmp_path_factory):
    h = Harness(tmp_path_factory.mktemp("base"))
    h.services = services.NodeServices(h.folders, settings=MemorySettings(force_fp32=True))
    ckpts = h.folders.paths("checkpoints")[0]
    ckpts.mkdir(parents=True, exist_ok=True)
    spec = tiny_sd3_spec(t5_dtype=torch.float8_e4m3fn)
    write_random_sd3_checkpoint(ckpts / CKPT, spec)
    write_random_sd3_checkpoint(ckpts / CKPT35, tiny_sd3_spec(qk_norm=True, dual=(0,), seed=1))
    unets = h.folders.paths("diffusion_models")[0]
    unets.mkdir(parents=True, exist_ok=True)
    write_random_sd3_checkpoint(unets / "tiny-mmdit.safetensors", tiny_sd3_spec(text=(), with_vae=False))
    encoders = h.folders.paths("text_encoders")[0]
    encoders.mkdir(parents=True, exist_ok=True)
    for kind, config in spec.text_configs.items():
        write_random_text_encoder(encoders / f"{kind}.safetensors", kind, config,
                                  torch.float8_e4m3fn if kind == "t5xxl" else torch.float16)
    h.registry.register("TestCapture", Capture)
    yield h
    h.close()


@pytest.fixture
def harness(harness_sd3):
    h = harness_sd3
    services.install(h.services)
    h.engine.clear_cache()
    Capture.seen = []
    yield h
    services.install(None)


def txt2img(ckpt=CKPT, seed=7, steps=3, cfg=4.0, sampler="euler", scheduler="simple"):
    return {
        "4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": ckpt}},
        "5": {"class_type": "EmptySD3LatentImage", "inputs": {"width": 64, "height": 48, "batch_size": 1}},
        "6": {"class_type": "CLIPTextEncode", "inputs": {"text": "a (red:1.2) cat", "clip": ["4", 1]}},
        "7": {"class_type": "CLIPTextEncode", "inputs": {"text": "", "clip": ["4", 1]}},
        "3": {"class_type": "KSampler", "inputs": {"seed": seed, "steps": steps, "cfg": cfg, "sampler_name": sampler,
                                                   "scheduler": scheduler, "denoise": 1.0, "model": ["4", 0],
                                                   "positive": ["6", 0], "negative": ["7", 0],
                                                   "latent_image": ["5", 0]}},
        "8": {"class_type": "VAEDecode", "inputs": {"samples": ["3", 0], "vae": ["4", 2]}},
        "9": {"class_type": "SaveImage", "inputs": {"filename_prefix": "sd3", "images": ["8", 0]}},
    }


def pixels(h: Harness, prompt: dict) -> np.ndarray:
    result = h.run(prompt)
    assert result.status == "success", result.error
    item = result.outputs["9"]["images"][0]
    return np.asarray(Image.open(h.folders.output / item["subfolder"] / item["filename"])).astype(np.int16)


def captured(h: Harness, prompt: dict, link: list):
    prompt = {**prompt, "99": {"class_type": "TestCapture", "inputs": {"value": link}}}
    result = h.run(prompt)
    assert result.status == "success", result.error
    return Capture.seen[-1]


@pytest.mark.parametrize("ckpt", [CKPT, CKPT35])
def test_txt2img_same_seed_same_pixels(harness, ckpt):
    a = pixels(harness, txt2img(ckpt))
    harness.engine.clear_cache()
    b = pixels(harness, txt2img(ckpt))
    assert a.shape == (48, 64, 3) and np.array_equal(a, b) and a.std() > 0
    harness.engine.clear_cache()
    assert not np.array_equal(a, pixels(harness, txt2img(ckpt, seed=8)))


def test_conditioning_is_sd3_shaped(harness):
    cond = captured(harness, txt2img(), ["6", 0])
    tensor, options = cond[0]
    # 77 CLIP tokens (L 32 + G 32 wide, padded to T5's 64) followed by 77 T5 tokens
    assert tensor.shape == (1, 154, 64) and options["pooled_output"].shape == (1, 64)


@pytest.mark.parametrize("drop", ["clip_l", "clip_g", "t5xxl"])
def test_without_each_encoder(harness, drop):
    """CLIPTextEncodeSD3 with an empty prompt and empty_padding none leaves that encoder out (zeros)."""
    texts = {"clip_l": "a cat", "clip_g": "a cat", "t5xxl": "a cat", drop: ""}
    prompt = txt2img()
    prompt["6"] = {"class_type": "CLIPTextEncodeSD3", "inputs": {"clip": ["4", 1], **texts, "empty_padding": "none"}}
    cond = captured(harness, prompt, ["6", 0])
    tensor, options = cond[0]
    pooled = options["pooled_output"]
    if drop == "t5xxl":
        assert tensor.shape == (1, 78, 64)                     # 77 CLIP tokens + T5's bare end token
    else:                                                      # the empty CLIP is padded with the empty prompt
        assert tensor.shape == (1, 154, 64) and pooled.abs().sum() > 0
    assert pixels(harness, prompt).std() > 0


def test_all_encoders_empty_gives_zeros_of_clip_width(harness):
    prompt = txt2img()
    prompt["6"] = {"class_type": "CLIPTextEncodeSD3",
                   "inputs": {"clip": ["4", 1], "clip_l": "", "clip_g": "", "t5xxl": "", "empty_padding": "none"}}
    tensor, options = captured(harness, prompt, ["6", 0])[0]
    assert tensor.shape == (1, 1, 64) and options["pooled_output"].abs().sum() == 0


def test_img2img_and_every_sampler_path(harness):
    prompt = txt2img(sampler="dpmpp_2m", scheduler="normal")
    prompt["10"] = {"class_type": "VAEEncode", "inputs": {"pixels": ["8", 0], "vae": ["4", 2]}}
    prompt["11"] = {"class_type": "KSampler", "inputs": {**prompt["3"]["inputs"], "latent_image": ["10", 0],
                                                          "denoise": 0.5, "sampler_name": "euler_ancestral"}}
    prompt["8b"] = {"class_type": "VAEDecode", "inputs": {"samples": ["11", 0], "vae": ["4", 2]}}
    prompt["9"]["inputs"]["images"] = ["8b", 0]
    assert pixels(harness, prompt).shape == (48, 64, 3)


def test_model_sampling_sd3_shift_changes_the_image(harness):
    base = pixels(harness, txt2img())
    prompt = txt2img()
    prompt["12"] = {"class_type": "ModelSamplingSD3", "inputs": {"model": ["4", 0], "shift": 3.0}}
    prompt["3"]["inputs"]["model"] = ["12", 0]
    harness.engine.clear_cache()
    assert np.array_equal(base, pixels(harness, prompt))       # 3.0 is the checkpoint's default
    prompt["12"]["inputs"]["shift"] = 1.0
    assert not np.array_equal(base, pixels(harness, prompt))


def test_skip_layer_guidance(harness):
    base = pixels(harness, txt2img(steps=4))
    prompt = txt2img(steps=4)
    prompt["12"] = {"class_type": "SkipLayerGuidanceSD3",
                    "inputs": {"model": ["4", 0], "layers": "1", "scale": 3.0, "start_percent": 0.0, "end_percent": 1.0}}
    prompt["3"]["inputs"]["model"] = ["12", 0]
    guided = pixels(harness, prompt)
    assert not np.array_equal(base, guided)
    prompt["12"]["inputs"]["scale"] = 0.0
    assert np.array_equal(base, pixels(harness, prompt))


def test_diffusion_model_alone_and_triple_clip_loader(harness):
    prompt = txt2img()
    prompt["20"] = {"class_type": "UNETLoader", "inputs": {"unet_name": "tiny-mmdit.safetensors",
                                                           "weight_dtype": "default"}}
    prompt["21"] = {"class_type": "TripleCLIPLoader", "inputs": {"clip_name1": "clip_l.safetensors",
                                                                 "clip_name2": "clip_g.safetensors",
                                                                 "clip_name3": "t5xxl.safetensors"}}
    prompt["3"]["inputs"]["model"] = ["20", 0]
    prompt["6"]["inputs"]["clip"] = ["21", 0]
    prompt["7"]["inputs"]["clip"] = ["21", 0]
    image = pixels(harness, prompt)
    assert image.shape == (48, 64, 3) and image.std() > 0
    # T5 alone: the absent CLIPs' pooled outputs are zeros of SD3's widths (768 + 1280)
    alone = {"22": {"class_type": "CLIPLoader", "inputs": {"clip_name": "t5xxl.safetensors", "type": "sd3"}},
             "6": {"class_type": "CLIPTextEncode", "inputs": {"text": "a cat", "clip": ["22", 0]}}}
    tensor, options = captured(harness, alone, ["6", 0])[0]
    assert tensor.shape == (1, 77, 64) and options["pooled_output"].shape == (1, 768 + 1280)
    assert options["pooled_output"].abs().sum() == 0


@pytest.mark.parametrize("weight_dtype", ["fp8_e4m3fn", "fp8_e4m3fn_fast", "fp8_e5m2"])
def test_unet_loader_fp8_weight_dtype(harness, weight_dtype):
    def with_unet(dtype):
        prompt = txt2img()
        prompt["20"] = {"class_type": "UNETLoader", "inputs": {"unet_name": "tiny-mmdit.safetensors",
                                                               "weight_dtype": dtype}}
        prompt["3"]["inputs"]["model"] = ["20", 0]
        return prompt
    default = pixels(harness, with_unet("default"))
    image = pixels(harness, with_unet(weight_dtype))
    assert image.shape == default.shape and image.std() > 0
    assert not np.array_equal(image, default)                       # the weights were rounded to fp8
    assert np.abs(image.astype(int) - default.astype(int)).mean() < 40
    harness.engine.clear_cache()
    assert np.array_equal(image, pixels(harness, with_unet(weight_dtype)))


def write_sd3_lora(path, hidden=128, rank=4, seed=0):
    """kohya (single-file names), ComfyUI (diffusion_model.) and diffusers/PEFT (transformer.) keys."""
    from safetensors.torch import save_file
    g = torch.Generator().manual_seed(seed)
    tensors = {}

    def pair(name, out_features, in_features, up="lora_up", down="lora_down", alpha=True):
        tensors[f"{name}.{down}.weight"] = torch.randn(rank, in_features, generator=g) * 0.3
        tensors[f"{name}.{up}.weight"] = torch.randn(out_features, rank, generator=g) * 0.3
        if alpha:
            tensors[f"{name}.alpha"] = torch.tensor(float(rank))
    pair("lora_unet_joint_blocks_0_x_block_attn_qkv", 3 * hidden, hidden)
    pair("diffusion_model.joint_blocks.1.x_block.mlp.fc2", hidden, 4 * hidden)
    pair("transformer.transformer_blocks.0.ff_context.net.0.proj", 4 * hidden, hidden, "lora_B", "lora_A", False)
    pair("transformer.transformer_blocks.0.attn.to_q", hidden, hidden, "lora_B", "lora_A", False)   # a qkv slice
    save_file(tensors, str(path))
    return path


def test_sd3_lora(harness):
    loras = harness.folders.paths("loras")[0]
    loras.mkdir(parents=True, exist_ok=True)
    write_sd3_lora(loras / "sd3-lora.safetensors")
    base = pixels(harness, txt2img())
    prompt = txt2img()
    prompt["30"] = {"class_type": "LoraLoaderModelOnly",
                    "inputs": {"model": ["4", 0], "lora_name": "sd3-lora.safetensors", "strength_model": 1.0}}
    prompt["3"]["inputs"]["model"] = ["30", 0]
    patched = pixels(harness, prompt)
    assert not np.array_equal(base, patched)
    again = pixels(harness, prompt)
    assert np.array_equal(patched, again)
    prompt["30"]["inputs"]["strength_model"] = 0.0
    assert np.array_equal(base, pixels(harness, prompt))
    harness.engine.clear_cache()
    assert np.array_equal(base, pixels(harness, txt2img()))          # patches came off bit-identically


def test_sd3_lora_names_map_onto_the_mmdit():
    import pathlib
    import tempfile

    from models.lora.keys import lora_names_for, module_weight_shapes
    from models.lora.loader import build_patches, load_lora_state_dict
    from models.mmdit import MMDiT
    spec = tiny_sd3_spec()
    with torch.device("meta"):
        model = MMDiT(spec.mmdit)
    names = lora_names_for(model)
    assert names["lora_unet_joint_blocks_0_x_block_attn_qkv"] == "joint_blocks.0.x_block.attn.qkv.weight"
    assert names["transformer.transformer_blocks.0.attn.to_add_out"] == "joint_blocks.0.context_block.attn.proj.weight"
    assert names["transformer.proj_out"] == "final_layer.linear.weight"
    assert "transformer.transformer_blocks.1.attn.to_add_out" not in names     # pre-only last context block
    with tempfile.TemporaryDirectory() as d:
        lora = load_lora_state_dict(write_sd3_lora(pathlib.Path(d) / "l.safetensors"))
    result = build_patches(lora, names, module_weight_shapes(model))
    assert not result.unmatched and result.formats["lora"] == 4
    # the kohya qkv LoRA and the PEFT to_q one (rows 0..D) land on the same weight: one patch, whole first
    qkv = result.patches["joint_blocks.0.x_block.attn.qkv.weight"]
    assert len(result.patches) == 3 and [(s, n) for s, n, _ in qkv.blocks] == [(0, 3 * 128), (0, 128)]


def test_sd3_peft_qkv_slices_give_the_pixels_of_the_fused_kohya_lora(harness):
    """PEFT to_q / to_k / to_v (and add_*_proj) LoRAs through the engine: the same image as one kohya LoRA on
    the fused qkv whose up is block-diagonal and down stacked (delta rows [Bq Aq; Bk Ak; Bv Av])."""
    from safetensors.torch import save_file
    loras = harness.folders.paths("loras")[0]
    loras.mkdir(parents=True, exist_ok=True)
    g = torch.Generator().manual_seed(5)
    d, r = 128, 2
    peft, kohya = {}, {}
    for block, (peft_names, kohya_name) in {
            "x": (("to_q", "to_k", "to_v"), "lora_unet_joint_blocks_0_x_block_attn_qkv"),
            "context": (("add_q_proj", "add_k_proj", "add_v_proj"), "lora_unet_joint_blocks_0_context_block_attn_qkv")}.items():
        downs, ups = [], []
        for name in peft_names:
            downs.append(torch.randn(r, d, generator=g) * 0.3)
            ups.append(torch.randn(d, r, generator=g) * 0.3)
            peft[f"transformer.transformer_blocks.0.attn.{name}.lora_A.weight"] = downs[-1]
            peft[f"transformer.transformer_blocks.0.attn.{name}.lora_B.weight"] = ups[-1]
        kohya[f"{kohya_name}.lora_down.weight"] = torch.cat(downs)                 # [3r, d]
        kohya[f"{kohya_name}.lora_up.weight"] = torch.block_diag(*ups)             # [3d, 3r]
        kohya[f"{kohya_name}.alpha"] = torch.tensor(3.0 * r)                      # scale 1, as PEFT's
    save_file(peft, str(loras / "sd3-peft-slices.safetensors"))
    save_file(kohya, str(loras / "sd3-kohya-fused.safetensors"))

    def with_lora(name):
        prompt = txt2img()
        prompt["30"] = {"class_type": "LoraLoaderModelOnly",
                        "inputs": {"model": ["4", 0], "lora_name": name, "strength_model": 0.8}}
        prompt["3"]["inputs"]["model"] = ["30", 0]
        return prompt
    base = pixels(harness, txt2img())
    sliced = pixels(harness, with_lora("sd3-peft-slices.safetensors"))
    fused = pixels(harness, with_lora("sd3-kohya-fused.safetensors"))
    assert not np.array_equal(base, sliced)
    assert np.abs(sliced.astype(int) - fused.astype(int)).max() <= 1


def test_dual_clip_loader_type_sd3(harness):
    prompt = {"21": {"class_type": "DualCLIPLoader", "inputs": {"clip_name1": "clip_g.safetensors",
                                                                "clip_name2": "clip_l.safetensors", "type": "sd3"}},
              "6": {"class_type": "CLIPTextEncode", "inputs": {"text": "a cat", "clip": ["21", 0]}}}
    tensor, options = captured(harness, prompt, ["6", 0])[0]
    # CLIP-L 32 + CLIP-G 32 side by side, padded to 4096 (no T5 to give the width)
    assert tensor.shape == (1, 77, 4096) and tensor[..., 64:].abs().sum() == 0
    assert options["pooled_output"].shape == (1, 64)
