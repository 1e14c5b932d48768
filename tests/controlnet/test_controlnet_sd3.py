"""SD3 ControlNets (diffusers SD3ControlNetModel layout) against diffusers on tiny random weights, and through
the engine on a tiny SD3 checkpoint (VAE-encoded hint, ControlNetApplyAdvanced's `vae` input, the inpainting
ControlNet with its mask channel)."""
from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file

from models.controlnet_mmdit import MMDiTControlNet
from models.convert.controlnet_mmdit import sd3_controlnet_state
from models.detection import detect_control_model

diffusers = pytest.importorskip("diffusers")


def reference(*, layers=2, hidden=256, heads=4, extra=0, qk_norm=None, dual=(), adm=64, ctx=64, grid=32):
    return diffusers.SD3ControlNetModel(
        sample_size=32, patch_size=2, in_channels=16, num_layers=layers, attention_head_dim=hidden // heads,
        num_attention_heads=heads, joint_attention_dim=ctx, caption_projection_dim=hidden, pooled_projection_dim=adm,
        out_channels=16, pos_embed_max_size=grid, extra_conditioning_channels=extra, qk_norm=qk_norm,
        dual_attention_layers=dual).eval()


def randomised(model, seed=0):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.state_dict().items():
            p.copy_(torch.randn(p.shape, generator=g) / max(1, p[0].numel()) ** 0.5 if p.ndim > 1
                    else 0.1 * torch.randn(p.shape, generator=g) + (1.0 if "norm_" in name else 0.0))
    return model


def ours_from(ref) -> MMDiTControlNet:
    state = {k: v.clone() for k, v in ref.state_dict().items()}
    info = detect_control_model({k: tuple(v.shape) for k, v in state.items()})
    assert info.kind == "mmdit_controlnet"
    with torch.device("meta"):
        module = MMDiTControlNet(info.config, "sdpa")
    converted = sd3_controlnet_state(state)
    assert set(converted) == set(module.state_dict())
    module.load_state_dict(converted, assign=True)
    return module.eval()


@pytest.mark.parametrize("variant", [dict(), dict(extra=1), dict(qk_norm="rms_norm", dual=(0,)), dict(layers=1)])
def test_matches_diffusers_sd3_controlnet(variant):
    ref = randomised(reference(**variant))
    ours = ours_from(ref)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, 16, 8, 12, generator=g)
    hint = torch.randn(2, 16 + variant.get("extra", 0), 8, 12, generator=g)
    context = torch.randn(2, 7, 64, generator=g)
    t = torch.tensor([999.0, 312.5])
    with torch.no_grad():
        (expected,) = ref(x, hint, conditioning_scale=1.0, encoder_hidden_states=context,
                          pooled_projections=torch.zeros(2, 64), timestep=t, return_dict=False)
        got = ours(x, hint, t, context)
    layers = variant.get("layers", 2)
    base_depth, k = 4, 4 // layers                    # hidden 256 = 64 x 4 base blocks
    assert sorted(got.after_block) == list(range(base_depth - 1))   # never after the last (pre-only) block
    for block, tokens in got.after_block.items():
        torch.testing.assert_close(tokens, expected[min(block // k, layers - 1)], atol=1e-4, rtol=1e-4)


def test_detects_config_and_inpainting_channel():
    ref = reference(extra=1, qk_norm="rms_norm", dual=(1,))
    info = detect_control_model({k: tuple(v.shape) for k, v in ref.state_dict().items()})
    c = info.config
    assert (c.mmdit.depth, c.mmdit.hidden_size, c.mmdit.num_heads, c.base_depth, c.hint_channels) == (2, 256, 4, 4, 17)
    assert c.is_inpaint and c.mmdit.qk_norm and c.mmdit.dual_attention_blocks == (1,)
    assert c.mmdit.pos_embed_max_size == 32 and c.mmdit.context_in_dim == 64 and c.mmdit.adm_in_dim == 64


def test_unknown_sd3_keys_are_listed():
    state = {k: v for k, v in reference().state_dict().items()}
    state["transformer_blocks.0.mystery.weight"] = torch.zeros(1)
    with pytest.raises(KeyError, match="mystery"):
        sd3_controlnet_state(state)


# --- through the engine on a tiny SD3 checkpoint ------------------------------------------------------------

@pytest.fixture(scope="module")
def sd3(tmp_path_factory):
    from models.testing import tiny_sd3_spec, write_random_sd3_checkpoint
    from tests.nodes.engine_harness import fp32_harness, serving, write_reference_image
    h = fp32_harness(tmp_path_factory.mktemp("sd3-cn"), ("checkpoints", "controlnet"))
    write_random_sd3_checkpoint(h.folders.paths("checkpoints")[0] / "tiny-sd3.safetensors", tiny_sd3_spec())
    cn_dir = h.folders.paths("controlnet")[0]
    for name, extra in (("sd3_canny.safetensors", 0), ("sd3_inpaint.safetensors", 1)):   # hidden 128: 2 base blocks
        ref = randomised(reference(layers=1, hidden=128, heads=2, extra=extra), seed=3 + extra)
        save_file({k: v.contiguous() for k, v in ref.state_dict().items()}, cn_dir / name)
    write_reference_image(h, (48, 64), "h.png", seed=2)
    yield from serving(h)


def sd3_prompt(control: str | None = None, strength: float = 1.0, *, vae: bool = True, mask: str | None = None) -> dict:
    from tests.nodes.test_builtin_sd3 import txt2img
    p = txt2img(ckpt="tiny-sd3.safetensors")
    del p["8"], p["9"]
    p["99"] = {"class_type": "TestCapture", "inputs": {"value": ["3", 0]}}
    if control is None:
        return p
    p["10"] = {"class_type": "LoadImage", "inputs": {"image": "h.png"}}
    p["11"] = {"class_type": "ControlNetLoader", "inputs": {"control_net_name": control}}
    inputs = {"positive": ["6", 0], "negative": ["7", 0], "control_net": ["11", 0], "image": ["10", 0],
              "strength": strength, "start_percent": 0.0, "end_percent": 1.0}
    if vae:
        inputs["vae"] = ["4", 2]
    p["12"] = {"class_type": "ControlNetApplyAdvanced", "inputs": inputs}
    if mask is not None:
        p["13"] = {"class_type": "SolidMask", "inputs": {"value": 1.0 if mask == "ones" else 0.0, "width": 64,
                                                         "height": 48}}
        p["12"] = {"class_type": "ControlNetInpaintingAliMamaApply", "inputs": {**inputs, "mask": ["13", 0]}}
    p["3"]["inputs"].update(positive=["12", 0], negative=["12", 1])
    return p


def sd3_sampled(h, p) -> torch.Tensor:
    from tests.nodes.engine_harness import Capture
    Capture.seen = []
    result = h.run(p)
    assert result.status == "success", result.error
    return Capture.seen[-1]["samples"]


def test_sd3_controlnet_through_the_engine(sd3):
    plain = sd3_sampled(sd3, sd3_prompt())
    assert torch.equal(sd3_sampled(sd3, sd3_prompt("sd3_canny.safetensors", 0.0)), plain)
    controlled = sd3_sampled(sd3, sd3_prompt("sd3_canny.safetensors", 1.0))
    assert (controlled - plain).abs().max() > 1e-3
    half = sd3_sampled(sd3, sd3_prompt("sd3_canny.safetensors", 0.5))
    assert not torch.equal(half, controlled)


def test_sd3_controlnet_without_vae_is_a_clear_error(sd3):
    result = sd3.run(sd3_prompt("sd3_canny.safetensors", 1.0, vae=False))
    assert result.status == "error" and "VAE" in str(result.error)


def test_inpainting_controlnet_mask(sd3):
    """Mask 0 keeps everything (the hint equals the unmasked one: keep-mask 1, as with no mask); mask 1
    blacks the hint out and zeroes the keep channel, so the image changes."""
    no_mask = sd3_sampled(sd3, sd3_prompt("sd3_inpaint.safetensors"))
    keep_all = sd3_sampled(sd3, sd3_prompt("sd3_inpaint.safetensors", mask="zeros"))
    torch.testing.assert_close(keep_all, no_mask, atol=0, rtol=0)
    masked = sd3_sampled(sd3, sd3_prompt("sd3_inpaint.safetensors", mask="ones"))
    assert (masked - no_mask).abs().max() > 1e-3
    # a non-inpainting net ignores the mask (the plain ControlNetApplyAdvanced)
    torch.testing.assert_close(sd3_sampled(sd3, sd3_prompt("sd3_canny.safetensors", mask="ones")),
                               sd3_sampled(sd3, sd3_prompt("sd3_canny.safetensors")), atol=0, rtol=0)


def test_latent_hint_is_the_vae_latent_scaled_without_shift_plus_keep_mask(sd3):
    """The hint an SD3 inpainting ControlNet sees: VAE encode of the hint at 8x the latent, x 1.5305 (no
    shift), then the keep-mask (1 - mask) resized to the latent with nearest-exact."""
    from diffusion import controlnet, vae_ops
    from diffusion.loading import load_checkpoint_file
    _model, _clip, vae = load_checkpoint_file(sd3.folders.find("checkpoints", "tiny-sd3.safetensors"),
                                              sd3.services.model_manager())
    net = controlnet.load_control_file(sd3.folders.find("controlnet", "sd3_inpaint.safetensors"),
                                       sd3.services.model_manager())
    g = torch.Generator().manual_seed(0)
    image = torch.rand(1, 48, 64, 3, generator=g)
    mask = torch.zeros(1, 48, 64)
    mask[:, :, 32:] = 1.0
    (positive,), _ = controlnet.apply_inpainting_control([[torch.zeros(1, 1, 1), {}]], [[torch.zeros(1, 1, 1), {}]],
                                                         net, vae, image, mask, strength=1.0)
    application = positive[1]["control"]
    application.models()
    hint = application._latent_hint_at(6, 8, torch.device("cpu"), torch.float32)
    masked_image = image.clone()
    masked_image[:, :, 32:] = 0.0
    expected = vae_ops.encode(vae, masked_image) * 1.5305
    torch.testing.assert_close(hint[:, :16], expected, atol=1e-5, rtol=1e-5)
    assert torch.equal(hint[0, 16, :, :4], torch.ones(6, 4)) and torch.equal(hint[0, 16, :, 4:], torch.zeros(6, 4))
