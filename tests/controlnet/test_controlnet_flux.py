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
