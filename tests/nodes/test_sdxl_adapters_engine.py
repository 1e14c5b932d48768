"""SDXL adapters through the real Engine on the tiny SDXL-layout checkpoints of test_sdxl_engine.py: LyCORIS
(LoHa, LoKr, LoCon) under kohya's SDXL names (`lora_unet_*`, `lora_te1_*`, `lora_te2_*`), diffusers / PEFT SDXL
names for both towers and the UNet, a two-tower textual inversion file (`clip_l` + `clip_g` in one file), and
TAESD-XL step previews from `vae_approx`. Patched weights are checked against the formulas of tests/lora/makers.py
(written independently of models/lora); the two-tower embedding against each tower encoding its own vectors."""
from __future__ import annotations

import torch
from safetensors.torch import save_file

from models.lora.apply import apply_lora
from nodes import services
from tests.lora import makers
from tests.nodes.test_sdxl_engine import BASE, harness, sampled, sdxl_encode, txt2img  # noqa: F401 (fixture)

TE1 = "towers.clip_l.model.text_model.encoder.layers."
TE2 = "towers.open_clip_g.model.text_model.encoder.layers."
# name in the file -> (Plexus key, weight shape) on the tiny layout (32-wide towers; UNet levels 32 / 64 / 64)
LYCORIS = {
    "loha": {"lora_te1_text_model_encoder_layers_0_self_attn_q_proj": (TE1 + "0.self_attn.q_proj.weight", (32, 32)),
             "lora_unet_input_blocks_3_1_transformer_blocks_0_attn2_to_k":
                 ("input_blocks.3.1.transformer_blocks.0.attn2.to_k.weight", (64, 64))},
    "lokr": {"lora_te2_text_model_encoder_layers_1_mlp_fc1": (TE2 + "1.mlp.fc1.weight", (64, 32)),
             # diffusers' names, underscored (kohya's usual SDXL UNet naming): level 2's second transformer block
             "lora_unet_down_blocks_2_attentions_0_transformer_blocks_1_attn1_to_q":
                 ("input_blocks.5.1.transformer_blocks.1.attn1.to_q.weight", (64, 64))},
    "locon": {"lora_unet_output_blocks_0_0_in_layers_2": ("output_blocks.0.0.in_layers.2.weight", (64, 128, 3, 3)),
              "lora_te2_text_model_encoder_layers_0_self_attn_out_proj":
                  (TE2 + "0.self_attn.out_proj.weight", (32, 32))},
}
EXPECTED = {"loha": makers.expected_delta_loha, "lokr": makers.expected_delta_lokr,
            "locon": makers.expected_delta_lora}


def lycoris_file() -> dict[str, torch.Tensor]:
    torch.manual_seed(3)
    shapes = {kind: {name: shape for name, (_, shape) in names.items()} for kind, names in LYCORIS.items()}
    return {**makers.loha(shapes["loha"]), **makers.lokr(shapes["lokr"]),
            **makers.kohya_lora(shapes["locon"], mid=True)}


def patched_weights(h, model, clip, lora: dict, strength_model: float, strength_clip: float) -> dict:
    """{Plexus key: weight} of both parts with `lora` applied, as model management puts them on the device."""
    patched_model, patched_clip, report = apply_lora(model, clip, lora, strength_model, strength_clip, "x.safetensors")
    assert report.unmatched == [], report.unmatched
    manager = services.current().model_manager()
    manager.load_models_for([patched_model, patched_clip])
    out = {**{k: v.clone() for k, v in model.module.state_dict().items()},
           **{k: v.clone() for k, v in clip.module.state_dict().items()}}
    manager.load_models_for([model, clip])                                # patches off again
    return out


def base_weights(model, clip) -> dict:
    return {**{k: v.clone() for k, v in model.module.state_dict().items()},
            **{k: v.clone() for k, v in clip.module.state_dict().items()}}


def test_lycoris_on_sdxl_names_patches_both_towers_and_the_unet_by_the_formulas(harness):  # noqa: F811
    model, clip = sampled(harness, txt2img(), ("4", 0)), sampled(harness, txt2img(), ("4", 1))
    base = base_weights(model, clip)
    lora = lycoris_file()
    got = patched_weights(harness, model, clip, lora, 0.7, -1.3)
    for kind, names in LYCORIS.items():
        for name, (key, shape) in names.items():
            strength = -1.3 if name.startswith("lora_te") else 0.7
            expected = base[key].double() + strength * EXPECTED[kind](lora, name, shape)
            torch.testing.assert_close(got[key].double(), expected, atol=1e-5, rtol=1e-5, msg=f"{kind} {name}")
    touched = {key for names in LYCORIS.values() for key, _ in names.values()}
    assert all(torch.equal(got[k], base[k]) for k in base.keys() - touched)
    assert all(torch.equal(v, base[k]) for k, v in base_weights(model, clip).items())     # base untouched


def test_lycoris_through_lora_loader_changes_the_image_and_strength_zero_does_not(harness):  # noqa: F811
    lora_dir = harness.folders.paths("loras")[0]
    lora_dir.mkdir(parents=True, exist_ok=True)
    save_file(lycoris_file(), lora_dir / "xl-lycoris.safetensors")
    plain = sampled(harness, txt2img())["samples"]

    def with_lora(strength: float) -> dict:
        prompt = txt2img()
        prompt["40"] = {"class_type": "LoraLoader", "inputs": {"model": ["4", 0], "clip": ["4", 1],
                                                               "lora_name": "xl-lycoris.safetensors",
                                                               "strength_model": strength, "strength_clip": strength}}
        prompt["6"]["inputs"]["clip"] = prompt["7"]["inputs"]["clip"] = ["40", 1]
        prompt["3"]["inputs"]["model"] = ["40", 0]
        return prompt
    assert (sampled(harness, with_lora(1.0))["samples"] - plain).abs().max() > 1e-3
    torch.testing.assert_close(sampled(harness, with_lora(0.0))["samples"], plain, rtol=0, atol=0)


def test_diffusers_and_peft_sdxl_names_for_both_towers_and_the_unet(harness):  # noqa: F811
    """diffusers' SDXL LoRA files name the towers `text_encoder.` (CLIP-L) and `text_encoder_2.` (bigG) and the
    UNet `unet.` with diffusers' block names; PEFT's lora_A / lora_B and diffusers' lora.down / lora.up."""
    model, clip = sampled(harness, txt2img(), ("4", 0)), sampled(harness, txt2img(), ("4", 1))
    base = base_weights(model, clip)
    targets = {  # file name -> (Plexus key, shape, style)
        "text_encoder.text_model.encoder.layers.1.self_attn.v_proj": (TE1 + "1.self_attn.v_proj.weight", (32, 32), "peft"),
        "text_encoder_2.text_model.encoder.layers.0.mlp.fc2": (TE2 + "0.mlp.fc2.weight", (32, 64), "peft"),
        "unet.down_blocks.1.attentions.0.transformer_blocks.0.attn2.to_v":
            ("input_blocks.3.1.transformer_blocks.0.attn2.to_v.weight", (64, 64), "diffusers"),
        "unet.up_blocks.0.attentions.1.proj_out": ("output_blocks.1.1.proj_out.weight", (64, 64), "diffusers"),
    }
    torch.manual_seed(4)
    lora = {}
    for name, (_, shape, style) in targets.items():
        lora |= makers.peft_lora({name: shape}, style=style)
    got = patched_weights(harness, model, clip, lora, 0.5, 2.0)
    for name, (key, shape, style) in targets.items():
        strength = 2.0 if name.startswith("text_encoder") else 0.5
        expected = base[key].double() + strength * makers.expected_delta_peft(lora, name, shape, style)
        torch.testing.assert_close(got[key].double(), expected, atol=1e-5, rtol=1e-5, msg=name)
    touched = {key for key, _, _ in targets.values()}
    assert all(torch.equal(got[k], base[k]) for k in base.keys() - touched)


def test_a_two_tower_embedding_gives_each_tower_its_own_vectors(harness):  # noqa: F811
    """An SDXL textual inversion file holds `clip_l` [n, 768] and `clip_g` [n, 1280] (32 wide each here):
    CLIP-L encodes the clip_l rows and bigG the clip_g rows, in CLIPTextEncode and CLIPTextEncodeSDXL."""
    folder = harness.folders.paths("embeddings")[0]
    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(5)
    vectors = {"clip_l": torch.randn(2, 32) * 0.1, "clip_g": torch.randn(2, 32) * 0.1}
    save_file(vectors, folder / "xl-style.safetensors")
    text = "a photo of embedding:xl-style cat"
    clip = sampled(harness, txt2img(), ("4", 1))
    clip_l, big_g = clip.towers

    def expected(tower, rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return tower.encode(text, clip_skip=clip.clip_skip, embeddings=lambda name: rows if name == "xl-style" else None)
    cond_l, _ = expected(clip_l, vectors["clip_l"])
    cond_g, pooled = expected(big_g, vectors["clip_g"])
    plain_l, _ = clip_l.encode("a photo of cat", clip_skip=clip.clip_skip)
    assert (cond_l - plain_l).abs().max() > 1e-3            # the vectors are really in the prompt
    for positive in ({"class_type": "CLIPTextEncode", "inputs": {"text": text, "clip": ["4", 1]}},
                     sdxl_encode(64, 64, 0, 0, 64, 64, text_g=text, text_l=text)):
        [[cond, options]] = sampled(harness, txt2img(positive), ("6", 0))
        torch.testing.assert_close(cond, torch.cat([cond_l, cond_g], dim=-1), rtol=0, atol=1e-6)
        torch.testing.assert_close(options["pooled_output"], pooled, rtol=0, atol=1e-6)


def test_taesd_xl_previews_use_the_sdxl_decoder_from_vae_approx(harness, tmp_path):  # noqa: F811
    """With both taesd_decoder and taesdxl_decoder in vae_approx, an SDXL model previews with TAESD-XL."""
    from diffusion import previews
    from models.testing import random_tensor, write_safetensors_streaming
    layout = {k: (tuple(v.shape), torch.float32) for k, v in previews.taesd_decoder().state_dict().items()}
    for seed, name in ((0, "taesd_decoder"), (1, "taesdxl_decoder")):
        write_safetensors_streaming(tmp_path / f"{name}.safetensors", layout,
                                    lambda k, seed=seed: random_tensor(k, layout[k][0], torch.float32, seed))
    model = sampled(harness, txt2img(), ("4", 0))
    x0 = torch.randn(1, 4, 8, 8)
    rgb = previews.previewer_for(model, [tmp_path], "taesd")(x0)
    xl = previews.taesd_previewer(previews.load_taesd_decoder(tmp_path / "taesdxl_decoder.safetensors", 4))(x0)
    sd1 = previews.taesd_previewer(previews.load_taesd_decoder(tmp_path / "taesd_decoder.safetensors", 4))(x0)
    assert rgb.shape == (64, 64, 3) and rgb.dtype == torch.uint8
    assert torch.equal(rgb, xl) and not torch.equal(rgb, sd1)
