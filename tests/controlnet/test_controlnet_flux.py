"""FLUX ControlNets: InstantX / Shakker-Labs Union(-Pro) files (diffusers' FluxControlNetModel layout) and XLabs'
(BFL names, an RGB hint), detected from tensors and checked against diffusers' FluxControlNetModel on tiny random
weights; the FLUX transformer taking their residuals against diffusers' FluxTransformer2DModel; and through the
engine on a tiny FLUX (strength 0 is exactly the plain image; SetUnionControlNetType picks the mode)."""
from __future__ import annotations

import pytest
import torch

from models.controlnet_flux import BASE_DOUBLE, BASE_SINGLE, FluxControlNet, spread_outputs
from models.convert.controlnet_flux import instantx_state, mistoline_state
from models.detection import detect_control_model
from models.errors import UnsupportedModelError
from models.flux import image_ids

diffusers = pytest.importorskip("diffusers")

TINY = dict(patch_size=1, in_channels=64, attention_head_dim=32, num_attention_heads=2, joint_attention_dim=48,
            pooled_projection_dim=40, axes_dims_rope=[4, 14, 14])   # the split detection assumes


def random_reference(seed: int = 0, **config) -> torch.nn.Module:
    """A diffusers FluxControlNetModel with every tensor random (its zero-initialised projections included)."""
    torch.manual_seed(seed)
    model = diffusers.FluxControlNetModel(**{**TINY, **config}).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.ndim > 1:                                         # weights ~ 1 / sqrt(fan-in), as models.testing
                p.copy_(torch.randn_like(p) / p[0].numel() ** 0.5)
            elif "norm" in name and name.endswith("weight"):       # QK-norm scales
                p.copy_(1.0 + 0.1 * torch.randn_like(p))
            else:
                p.copy_(0.02 * torch.randn_like(p))
    return model


def ours_from(state: dict) -> FluxControlNet:
    info = detect_control_model({k: tuple(v.shape) for k, v in state.items()})
    assert info.kind == "flux_controlnet"
    model = FluxControlNet(info.config, "sdpa")
    converted = instantx_state(state) if info.layout == "diffusers" else mistoline_state(state)
    model.load_state_dict(converted, strict=True)
    return model.eval()


def xlabs_file(reference_state: dict) -> dict:
    """The same weights in XLabs' file layout: BFL block names, `input_hint_block.{0,2,...,14}` (the Sequential of
    8 convs with SiLUs between, x-flux's controlnet.py), `pos_embed_input` for the hint tokens."""
    hint = {k: v for k, v in reference_state.items() if k.startswith("input_hint_block.")}
    out = instantx_state({k: v for k, v in reference_state.items() if k not in hint})
    for key, t in hint.items():
        rest = key[len("input_hint_block."):]
        if rest.startswith("conv_in."):
            index, leaf = 0, rest[len("conv_in."):]
        elif rest.startswith("conv_out."):
            index, leaf = 14, rest[len("conv_out."):]
        else:
            block, leaf = rest[len("blocks."):].split(".", 1)
            index = 2 * (int(block) + 1)
        out[f"input_hint_block.{index}.{leaf}"] = t
    return out


def inputs(b: int = 2, h: int = 6, w: int = 8, tokens: int = 5, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    return dict(x=torch.randn(b, 16, h, w, generator=g), context=torch.randn(b, tokens, 48, generator=g),
                y=torch.randn(b, 40, generator=g), timesteps=torch.tensor([0.9, 0.35])[:b],
                guidance=torch.full((b,), 3.5))


def packed(x: torch.Tensor) -> torch.Tensor:
    b, c, h, w = x.shape                                          # [B, C, H, W] -> [B, HW/4, 4C]
    return x.view(b, c, h // 2, 2, w // 2, 2).permute(0, 2, 4, 1, 3, 5).reshape(b, -1, c * 4)


def reference_outputs(ref, a: dict, cond: torch.Tensor, mode: torch.Tensor | None = None):
    h, w = a["x"].shape[-2] // 2, a["x"].shape[-1] // 2
    with torch.no_grad():
        doubles, singles = ref(hidden_states=packed(a["x"]), controlnet_cond=cond, controlnet_mode=mode,
                               encoder_hidden_states=a["context"], pooled_projections=a["y"], timestep=a["timesteps"],
                               img_ids=image_ids(h, w, 1)[0], txt_ids=torch.zeros(a["context"].shape[1], 3),
                               guidance=a["guidance"] if ref.config.guidance_embeds else None, return_dict=False)
    return list(doubles or []), list(singles or [])


def assert_outputs_close(got: tuple[list, list], want: tuple[list, list]):
    assert [len(g) for g in got] == [len(w) for w in want]
    for g, w in zip(got[0] + got[1], want[0] + want[1]):
        assert w.abs().mean() > 1e-2                               # a real signal
        torch.testing.assert_close(g, w, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("guidance", [True, False], ids=["dev", "schnell"])
def test_instantx_matches_diffusers(guidance):
    ref = random_reference(num_layers=2, num_single_layers=2, guidance_embeds=guidance)
    ours = ours_from(ref.state_dict())
    assert ours.config.latent_hint and ours.config.hint_channels == 16 and ours.config.union_modes == 0
    a = inputs()
    hint = torch.randn(2, 16, 6, 8, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        got = ours.block_outputs(a["x"], hint, a["timesteps"], a["context"], a["y"], a["guidance"])
    assert_outputs_close(got, reference_outputs(ref, a, packed(hint)))


def test_union_pro_mode_matches_diffusers_and_changes_the_output():
    ref = random_reference(num_layers=2, num_single_layers=1, guidance_embeds=True, num_mode=10)
    ours = ours_from(ref.state_dict())
    assert ours.config.union_modes == 10
    a = inputs()
    hint = torch.randn(1, 16, 6, 8, generator=torch.Generator().manual_seed(3))      # one hint for the batch
    with torch.no_grad():
        got = ours.block_outputs(a["x"], hint, a["timesteps"], a["context"], a["y"], a["guidance"], control_types=(3,))
        other = ours.block_outputs(a["x"], hint, a["timesteps"], a["context"], a["y"], a["guidance"], control_types=(1,))
    want = reference_outputs(ref, a, packed(hint).expand(2, -1, -1), mode=torch.full((2, 1), 3))
    assert_outputs_close(got, want)
    assert (got[0][0] - other[0][0]).abs().max() > 1e-3


def test_xlabs_matches_diffusers_with_its_pixel_hint():
    ref = random_reference(num_layers=2, num_single_layers=0, guidance_embeds=True, conditioning_embedding_channels=16,
                           patch_size=2)                    # diffusers packs the encoded hint 2x2 by its patch size
    state = xlabs_file(ref.state_dict())
    info = detect_control_model({k: tuple(v.shape) for k, v in state.items()})
    assert (info.kind, info.layout, info.config.hint_format) == ("flux_controlnet", "xlabs", "pixels")
    ours = FluxControlNet(info.config, "sdpa")
    ours.load_state_dict(state, strict=True)
    a = inputs()
    pixels = torch.rand(2, 3, 48, 64, generator=torch.Generator().manual_seed(4))    # [0, 1], 8x the latent
    with torch.no_grad():
        got = ours.eval().block_outputs(a["x"], pixels, a["timesteps"], a["context"], a["y"], a["guidance"])
    assert_outputs_close(got, reference_outputs(ref, a, pixels * 2 - 1))            # diffusers takes [-1, 1]


def test_inpainting_net_has_a_keep_mask_channel():
    ref = random_reference(num_layers=1, num_single_layers=1, in_channels=64)
    state = ref.state_dict()
    state["controlnet_x_embedder.weight"] = torch.randn(state["controlnet_x_embedder.weight"].shape[0], 68)
    info = detect_control_model({k: tuple(v.shape) for k, v in state.items()})
    assert info.config.hint_channels == 17 and info.config.is_inpaint


def test_spread_over_the_base_blocks_as_comfyui():
    outs = [torch.full((1,), float(i)) for i in range(5)]
    consecutive = spread_outputs(outs, BASE_DOUBLE, True)            # InstantX: ceil(19 / 5) = 4 blocks each
    assert [int(consecutive[j]) for j in range(BASE_DOUBLE)] == [j // 4 for j in range(19)]
    cycled = spread_outputs(outs[:2], BASE_DOUBLE, False)           # XLabs: 0 1 0 1 ...
    assert [int(cycled[j]) for j in range(BASE_DOUBLE)] == [j % 2 for j in range(19)]
    assert sorted(spread_outputs(outs, BASE_SINGLE, True)) == list(range(38)) and spread_outputs([], 38, True) == {}


def test_mistoline_names_are_detected_and_qwen_is_refused():
    ref = random_reference(num_layers=1, num_single_layers=1, guidance_embeds=True, conditioning_embedding_channels=16)
    state = xlabs_file(ref.state_dict())
    misto = {}
    for k, v in state.items():
        if k.startswith("input_hint_block."):
            continue
        for group, renamed in (("controlnet_blocks.", "controlnet_blocks."),
                               ("controlnet_single_blocks.", "single_controlnet_blocks.")):
            if k.startswith(group):
                index, leaf = k[len(group):].split(".", 1)
                k = f"{renamed}{index}.linear.{leaf}"
                break
        misto[k] = v
    model = None
    info = detect_control_model({k: tuple(v.shape) for k, v in misto.items()})
    assert (info.layout, info.config.hint_format) == ("mistoline", "mistoline")
    model = FluxControlNet(info.config)
    encoder = {k: v for k, v in model.state_dict().items() if k.startswith("input_cond_block.")}
    assert len(encoder) == 20                                          # 10 convs, weight and bias
    model.load_state_dict({**mistoline_state(misto), **encoder}, strict=True)
    qwen = {"controlnet_x_embedder.weight": (64, 64), "transformer_blocks.0.img_mlp.net.0.proj.weight": (8, 8),
            "controlnet_blocks.0.weight": (8, 8)}
    with pytest.raises(UnsupportedModelError, match="Qwen"):
        detect_control_model(qwen)


# --- the FLUX transformer with control residuals, against diffusers ----------------------------------------

def test_flux_adds_residuals_as_diffusers_transformer():
    from tests.models.test_flux import DEV_TINY, ours, random_flux_state, reference
    from models.controlnet import ControlResiduals
    state = random_flux_state(DEV_TINY)
    model, ref = ours(DEV_TINY, state), reference(DEV_TINY, state)
    a = inputs(h=6, w=8, tokens=7)
    g = torch.Generator().manual_seed(9)
    doubles = [torch.randn(2, 12, 64, generator=g) for _ in range(DEV_TINY.depth)]
    singles = [torch.randn(2, 12, 64, generator=g) for _ in range(DEV_TINY.depth_single_blocks)]
    control = ControlResiduals(after_block=dict(enumerate(doubles)), after_single=dict(enumerate(singles)))
    with torch.no_grad():
        got = model(a["x"], a["timesteps"], a["context"], a["y"], a["guidance"], control=control)
        plain = model(a["x"], a["timesteps"], a["context"], a["y"], a["guidance"])
        want = ref(hidden_states=packed(a["x"]), encoder_hidden_states=a["context"], pooled_projections=a["y"],
                   timestep=a["timesteps"], img_ids=image_ids(3, 4, 1)[0], txt_ids=torch.zeros(7, 3),
                   guidance=a["guidance"], controlnet_block_samples=doubles,
                   controlnet_single_block_samples=singles).sample
    assert (got - plain).abs().max() > 1e-2
    assert (got - model.unpatchify(want, 3, 4)).abs().max() < 1e-4


@pytest.mark.parametrize("layout", ["diffusers", "xlabs", "mistoline"])
def test_written_files_round_trip_through_detection_and_conversion(tmp_path, layout):
    from safetensors.torch import load_file

    from models.testing import module_layout, random_tensor, tiny_flux_controlnet_config, write_random_flux_controlnet
    config = tiny_flux_controlnet_config(layout=layout, double=2, single=1, union_modes=4 if layout == "diffusers" else 0)
    path = write_random_flux_controlnet(tmp_path / "cn.safetensors", config, layout=layout, seed=3)
    state = load_file(str(path))
    info = detect_control_model({k: tuple(v.shape) for k, v in state.items()})
    assert (info.kind, info.layout, info.config) == ("flux_controlnet", layout, config)
    converted = instantx_state(state) if layout == "diffusers" else mistoline_state(state)
    expected = {k: random_tensor(k, s, torch.float32, 3) for k, s in module_layout(FluxControlNet, config, "").items()}
    assert converted.keys() == expected.keys()
    assert all(torch.equal(converted[k], expected[k]) for k in expected)


# --- through the engine on a tiny FLUX ------------------------------------------------------------------------

@pytest.fixture(scope="module")
def flux_harness(tmp_path_factory):
    from model_management import MemorySettings
    from models.testing import (flux_vae_config, tiny_flux_config, tiny_flux_controlnet_config, tiny_sd3_spec,
                                write_random_flux, write_random_flux_controlnet, write_random_text_encoder,
                                write_random_vae)
    from nodes import services
    from tests.nodes.engine_harness import Capture, Harness, write_reference_image
    h = Harness(tmp_path_factory.mktemp("flux-cn"))
    h.services = services.NodeServices(h.folders, settings=MemorySettings(force_fp32=True))
    folders = {kind: h.folders.paths(kind)[0] for kind in ("diffusion_models", "text_encoders", "vae", "controlnet")}
    for path in folders.values():
        path.mkdir(parents=True, exist_ok=True)
    write_random_flux(folders["diffusion_models"] / "flux-dev.safetensors", tiny_flux_config())
    for kind, config in tiny_sd3_spec(text=("clip_l", "t5xxl")).text_configs.items():
        write_random_text_encoder(folders["text_encoders"] / f"{kind}.safetensors", kind, config)
    write_random_vae(folders["vae"] / "ae.safetensors", flux_vae_config())
    nets = {"instantx": ("diffusers", {}), "union": ("diffusers", {"union_modes": 10, "double": 2}),
            "inpaint": ("diffusers", {"hint_channels": 17}), "xlabs": ("xlabs", {"double": 2, "single": 0}),
            "mistoline": ("mistoline", {})}
    for name, (layout, extra) in nets.items():
        write_random_flux_controlnet(folders["controlnet"] / f"{name}.safetensors",
                                     tiny_flux_controlnet_config(layout=layout, **extra), layout=layout, seed=5)
    write_reference_image(h, (64, 48), "hint.png")
    h.registry.register("TestCapture", Capture)
    yield h
    h.close()


@pytest.fixture
def fh(flux_harness):
    from tests.nodes.engine_harness import installed
    yield from installed(flux_harness)


def flux_prompt(net: str | None = None, strength: float = 1.0, *, union_type: str | None = None, vae: bool = True,
                window: tuple[float, float] = (0.0, 1.0), cfg: float = 1.0, mask: bool = False) -> dict:
    p = {
        "1": {"class_type": "UNETLoader", "inputs": {"unet_name": "flux-dev.safetensors", "weight_dtype": "default"}},
        "2": {"class_type": "DualCLIPLoader", "inputs": {"clip_name1": "t5xxl.safetensors",
                                                         "clip_name2": "clip_l.safetensors", "type": "flux"}},
        "3": {"class_type": "VAELoader", "inputs": {"vae_name": "ae.safetensors"}},
        "4": {"class_type": "CLIPTextEncode", "inputs": {"text": "a red cat", "clip": ["2", 0]}},
        "5": {"class_type": "FluxGuidance", "inputs": {"conditioning": ["4", 0], "guidance": 3.5}},
        "6": {"class_type": "CLIPTextEncode", "inputs": {"text": "", "clip": ["2", 0]}},
        "7": {"class_type": "EmptySD3LatentImage", "inputs": {"width": 48, "height": 64, "batch_size": 1}},
        "8": {"class_type": "KSampler", "inputs": {"seed": 7, "steps": 3, "cfg": cfg, "sampler_name": "euler",
                                                   "scheduler": "simple", "denoise": 1.0, "model": ["1", 0],
                                                   "positive": ["5", 0], "negative": ["6", 0], "latent_image": ["7", 0]}},
        "99": {"class_type": "TestCapture", "inputs": {"value": ["8", 0]}},
    }
    if net is not None:
        p["10"] = {"class_type": "ControlNetLoader", "inputs": {"control_net_name": f"{net}.safetensors"}}
        p["11"] = {"class_type": "LoadImage", "inputs": {"image": "hint.png"}}
        control = ["10", 0]
        if union_type is not None:
            p["13"] = {"class_type": "SetUnionControlNetType", "inputs": {"control_net": control, "type": union_type}}
            control = ["13", 0]
        inputs = {"positive": ["5", 0], "negative": ["6", 0], "control_net": control, "image": ["11", 0],
                  "strength": strength, "start_percent": window[0], "end_percent": window[1]}
        if vae:
            inputs["vae"] = ["3", 0]
        p["12"] = {"class_type": "ControlNetApplyAdvanced", "inputs": inputs}
        if mask:
            p["14"] = {"class_type": "SolidMask", "inputs": {"value": 1.0, "width": 48, "height": 64}}
            p["12"] = {"class_type": "ControlNetInpaintingAliMamaApply",
                       "inputs": {**inputs, "vae": ["3", 0], "mask": ["14", 0]}}
        p["8"]["inputs"]["positive"], p["8"]["inputs"]["negative"] = ["12", 0], ["12", 1]
    return p


def flux_latent(h, prompt: dict) -> torch.Tensor:
    from tests.nodes.engine_harness import Capture
    Capture.seen = []
    result = h.run(prompt)
    assert result.status == "success", (result.error or {}).get("exception_message")
    return Capture.seen[-1]["samples"]


@pytest.mark.parametrize("net", ["instantx", "xlabs", "mistoline"])
def test_strength_zero_is_the_plain_image_and_strength_steers(fh, net):
    plain = flux_latent(fh, flux_prompt())
    assert torch.equal(flux_latent(fh, flux_prompt(net, 0.0)), plain)
    controlled = flux_latent(fh, flux_prompt(net, 1.0, vae=net == "instantx"))     # XLabs' hint is the image itself
    assert (controlled - plain).abs().max() > 1e-3
    assert not torch.equal(flux_latent(fh, flux_prompt(net, 0.5, vae=net == "instantx")), controlled)


def test_union_pro_mode_from_set_union_controlnet_type(fh):
    auto = flux_latent(fh, flux_prompt("union"))
    assert torch.equal(flux_latent(fh, flux_prompt("union", union_type="auto")), auto)
    depth, canny = (flux_latent(fh, flux_prompt("union", union_type=t))
                    for t in ("depth", "canny/lineart/anime_lineart/mlsd"))
    assert (depth - auto).abs().max() > 1e-4 and (canny - depth).abs().max() > 1e-4


def test_window_and_cfg_batch(fh):
    """A window that ends before the last step differs from the full one; with CFG the pair is still batched
    through the ControlNet (the result is finite and differs from cfg 1)."""
    full = flux_latent(fh, flux_prompt("instantx"))
    early = flux_latent(fh, flux_prompt("instantx", window=(0.0, 0.3)))
    assert (early - full).abs().max() > 1e-4
    guided = flux_latent(fh, flux_prompt("instantx", cfg=2.0))
    assert torch.isfinite(guided).all() and (guided - full).abs().max() > 1e-4


def test_latent_hint_without_vae_is_a_clear_error(fh):
    result = fh.run(flux_prompt("instantx", vae=False))
    assert result.status == "error" and "VAE" in str(result.error)


def test_inpainting_net_takes_the_keep_mask(fh):
    plain_hint = flux_latent(fh, flux_prompt("inpaint"))                      # no mask: keep-mask all ones
    masked = flux_latent(fh, flux_prompt("inpaint", mask=True))               # mask 1: hint blacked out, keep 0
    assert (masked - plain_hint).abs().max() > 1e-4


def test_latent_hint_is_in_flux_latent_format(fh):
    from diffusion import controlnet, vae_ops
    from diffusion.loading import load_vae_file
    manager = fh.services.model_manager()
    vae = load_vae_file(fh.folders.find("vae", "ae.safetensors"), manager)
    net = controlnet.load_control_file(fh.folders.find("controlnet", "instantx.safetensors"), manager)
    image = torch.rand(1, 64, 48, 3, generator=torch.Generator().manual_seed(0))
    (positive,), _ = controlnet.apply_control([[torch.zeros(1, 1, 1), {}]], [[torch.zeros(1, 1, 1), {}]], net,
                                              image, strength=1.0, vae=vae)
    application = positive[1]["control"]
    application.models(None)
    hint = application._latent_hint_at(8, 6, torch.device("cpu"), torch.float32)
    torch.testing.assert_close(hint, (vae_ops.encode(vae, image) - 0.1159) * 0.3611, atol=1e-5, rtol=1e-5)


def test_deprecated_apply_refuses_a_latent_hint_net_and_runs_xlabs(fh):
    p = flux_prompt("xlabs", 1.0, vae=False)
    p["12"] = {"class_type": "ControlNetApply", "inputs": {"conditioning": ["5", 0], "control_net": ["10", 0],
                                                            "image": ["11", 0], "strength": 1.0}}
    p["8"]["inputs"]["positive"], p["8"]["inputs"]["negative"] = ["12", 0], ["6", 0]
    assert (flux_latent(fh, p) - flux_latent(fh, flux_prompt())).abs().max() > 1e-3
    p["10"]["inputs"]["control_net_name"] = "instantx.safetensors"
    result = fh.run(p)
    assert result.status == "error" and "VAE" in str(result.error)


def test_streamed_under_a_device_budget_gives_the_same_latent(fh, tmp_path):
    """The FLUX ControlNet is a managed model like any: with nothing resident (--novram, a 12 MB budget: the tiny T5 embedding is 8 MB) the
    ControlNet and FLUX are streamed block by block and the latent is the unbudgeted one."""
    from model_management import MemorySettings, VramMode
    from nodes import services
    expected = flux_latent(fh, flux_prompt("union", union_type="depth"))
    budgeted = services.NodeServices(fh.folders, settings=MemorySettings(
        force_fp32=True, device="cpu", vram_mode=VramMode.NO, vram_budget_bytes=12_000_000, prepack_weights=False))
    saved = fh.services
    fh.services = budgeted
    services.install(budgeted)
    fh.engine.clear_cache()
    try:
        latent = flux_latent(fh, flux_prompt("union", union_type="depth"))
        records = {r.name: r for r in budgeted.model_manager()._records.values()}
        control = next(r for name, r in records.items() if name.endswith("(flux_controlnet)"))
        assert control.resident_bytes == 0 and budgeted.model_manager().ledger.peak_bytes <= 12_000_000
    finally:
        fh.services = saved
        services.install(saved)
        fh.engine.clear_cache()
    torch.testing.assert_close(latent, expected, atol=1e-5, rtol=1e-5)


# --- the released full-size layouts, on the meta device ------------------------------------------------------

def test_released_union_pro_layout_is_detected_and_builds_on_meta():
    """Shakker-Labs FLUX.1-dev-ControlNet-Union-Pro (and InstantX's Union): diffusers' FluxControlNetModel with 5
    double + 10 single layers, 24 heads of 128, 10 modes, guidance embedding; its keys from diffusers' own module on
    the meta device. About 3.3 B parameters (the published bf16 file is 6.6 GB)."""
    with torch.device("meta"):
        ref = diffusers.FluxControlNetModel(num_layers=5, num_single_layers=10, guidance_embeds=True, num_mode=10)
        shapes = {k: tuple(v.shape) for k, v in ref.state_dict().items()}
        info = detect_control_model(shapes)
        c = info.config
        assert (info.kind, info.layout, c.hint_format, c.hint_channels, c.union_modes) == (
            "flux_controlnet", "diffusers", "latent", 16, 10)
        assert (c.flux.hidden_size, c.flux.num_heads, c.flux.depth, c.flux.depth_single_blocks, c.flux.axes_dim) == (
            3072, 24, 5, 10, (16, 56, 56))
        ours = FluxControlNet(c)
        converted = instantx_state(ref.state_dict())
    assert {k: tuple(v.shape) for k, v in converted.items()} == {k: tuple(v.shape) for k, v in ours.state_dict().items()}
    assert 3.2e9 < sum(v.numel() for v in converted.values()) < 3.4e9


def test_released_xlabs_layout_is_detected_and_builds_on_meta():
    """XLabs' flux-canny-controlnet-v3: 2 double blocks in BFL names, no single blocks, input_hint_block, [dev]
    embedders (about 0.74 B parameters: the published bf16 file is 1.49 GB)."""
    with torch.device("meta"):
        ref = diffusers.FluxControlNetModel(num_layers=2, num_single_layers=0, guidance_embeds=True, patch_size=2,
                                            conditioning_embedding_channels=16)
        state = xlabs_file(ref.state_dict())
    info = detect_control_model({k: tuple(v.shape) for k, v in state.items()})
    assert (info.layout, info.config.hint_format, info.config.flux.depth, info.config.flux.depth_single_blocks) == (
        "xlabs", "pixels", 2, 0)
    with torch.device("meta"):
        ours = FluxControlNet(info.config)
    assert {k: tuple(v.shape) for k, v in state.items()} == {k: tuple(v.shape) for k, v in ours.state_dict().items()}
    assert 0.7e9 < sum(v.numel() for v in state.values()) < 0.78e9
