"""The UNet's patch hooks (models/unet_patches) and the ComfyUI-shaped CFG functions (diffusion.patch_api)."""
from __future__ import annotations

import torch

from diffusion.patch_api import _comfy_post_cfg, _comfy_pre_cfg, with_patch, with_patch_replace
from models import unet_patches
from models.testing import tiny_unet_config
from models.unet import UNetModel
from sampling.guidance import CfgArgs


def _unet_and_inputs():
    torch.manual_seed(0)
    unet = UNetModel(tiny_unet_config()).eval()
    x = torch.randn(2, 4, 8, 8)
    t = torch.tensor([500.0, 20.0])
    ctx = torch.randn(2, 5, 32)
    return unet, x, t, ctx


def test_plain_attention_replace_and_identity_patches_reproduce_the_unpatched_output() -> None:
    unet, x, t, ctx = _unet_and_inputs()
    seen = []
    options: dict = {}

    def replace(q, k, v, extra):
        seen.append((extra["block"], extra["block_index"], extra["n_heads"]))
        return unet_patches.attention(q, k, v, extra["n_heads"])

    with_patch_replace(options, replace, "attn1", "middle", 0)
    with_patch(options, "attn2_patch", lambda n, c, v, extra: (n, c, v))
    with_patch(options, "output_block_patch", lambda h, skip, to: (h, skip))
    with torch.no_grad():
        plain = unet(x, t, ctx)
        with unet_patches.patched_call(options["transformer_options"]):
            patched = unet(x, t, ctx)
    torch.testing.assert_close(patched, plain, rtol=1e-5, atol=1e-5)
    assert seen == [(("middle", 0), 0, 8)]


def test_block_patches_change_the_output_and_see_block_ids() -> None:
    unet, x, t, ctx = _unet_and_inputs()
    blocks = []
    options: dict = {}

    def scale(h, skip, to):
        blocks.append(to["block"])
        return h * 2.0, skip
    with_patch(options, "output_block_patch", scale)
    with torch.no_grad():
        plain = unet(x, t, ctx)
        with unet_patches.patched_call(options["transformer_options"]):
            patched = unet(x, t, ctx)
        again = unet(x, t, ctx)                   # outside the call: the plain forward again
    assert blocks == [("output", i) for i in range(len(unet.output_blocks))]
    assert not torch.allclose(patched, plain)
    torch.testing.assert_close(again, plain)


def test_comfy_shaped_pre_and_post_cfg_functions() -> None:
    class Model:
        options: dict = {}
    x = torch.randn(1, 4, 2, 2)
    cond, uncond = torch.randn_like(x), torch.randn_like(x)
    calls = []

    def evaluate(cond_lists, xx, sigma, transformer_options):
        calls.append(transformer_options)
        return [torch.ones_like(xx) for _ in cond_lists]

    a = CfgArgs(x, torch.tensor([1.0]), cond, uncond, 3.0, (["c"], ["u"]), evaluate)
    pre = _comfy_pre_cfg(lambda args: [args["conds_out"][0] * 2, args["conds_out"][1]], Model())
    c2, u2 = pre(a)
    torch.testing.assert_close(c2, cond * 2)

    def post(args):
        (again,) = args["calc_cond_batch"]([args["cond"]], args["input"], args["sigma"],
                                           {"transformer_options": {"x": 1}})
        return args["denoised"] + again
    out = _comfy_post_cfg(post, Model())(a, cond)
    torch.testing.assert_close(out, cond + 1)
    assert calls == [{"x": 1}]
