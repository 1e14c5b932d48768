"""Model-internal faces that KJNodes and Advanced-ControlNet import at load (issue 19): each is used here the way
those packs use it, from small packs written like theirs. Real layers are checked against independent references
(complex-number rotation, transformers' LlamaMLP, diffusers' ResnetBlock2D / timestep embedding / UNet keys);
names Plexus does not build are checked to import, subclass and fail clearly when built."""
from __future__ import annotations

import asyncio
import sys

import aiohttp
import pytest
import torch
import torch.nn.functional as F

from .harness import FaceHarness, ServerThread

# KJNodes' style: model internals imported by file at module level, subclassed, and a static route added to
# PromptServer.instance.app while the pack imports.
KJ_STYLE = {"__init__.py": '''
    from pathlib import Path

    from aiohttp import web
    from server import PromptServer

    from comfy.ldm.flux.math import apply_rope, rope
    from comfy.ldm.lumina.model import FeedForward
    from comfy.taesd.taesd import Block, Clamp, conv
    from comfy.ldm.wan.vae import RMS_norm, CausalConv3d
    from comfy.ldm.modules.diffusionmodules.model import ResnetBlock
    from comfy.ldm.lightricks.vae.pixel_norm import PixelNorm
    from comfy.ldm.lightricks.vae.causal_conv3d import CausalConv3d as LTXCausalConv3d
    from comfy.ldm.lightricks.vae.causal_video_autoencoder import Decoder as LTXDecoder


    class Int8CausalConv3d(CausalConv3d):        # KJNodes' PatchTritonVAE subclasses the Wan conv
        pass


    def chunked_feed_forward(self, x):           # KJNodes calls FeedForward.forward on chunks
        return torch.cat([FeedForward.forward(self, c) for c in torch.chunk(x, 2, dim=1)], dim=1)


    import torch

    if not PromptServer.instance.app.router.frozen:
        PromptServer.instance.app.add_routes([web.static("/kj_style_async", (Path(__file__).parent / "async").as_posix())])


    class RopeNode:
        @classmethod
        def INPUT_TYPES(cls):
            return {"required": {"theta": ("FLOAT", {"default": 10000.0})}}
        RETURN_TYPES = ("FLOAT",)
        FUNCTION = "doit"
        CATEGORY = "test"

        def doit(self, theta):
            pos = torch.arange(4.0).unsqueeze(0)
            q = torch.ones(1, 1, 4, 8)
            q_rot, _ = apply_rope(q, q, rope(pos, 8, theta).unsqueeze(1))
            return (float(q_rot.norm()),)


    NODE_CLASS_MAPPINGS = {"RopeNode": RopeNode}
''', "async/kj_style.js": "export const kj = 1;\n"}

# Advanced-ControlNet's style: ControlNet and UNet internals subclassed at import, hooks built when applied.
ACN_STYLE = {"__init__.py": '''
    import comfy.model_detection
    import comfy.hooks
    import comfy.controlnet as comfy_cn
    from comfy.controlnet import ControlBase, ControlNet, ControlNetSD35, ControlLora, T2IAdapter, StrengthType
    from comfy.cldm.cldm import ControlNet as ControlNetCLDM
    from comfy.ldm.modules.attention import BasicTransformerBlock, SpatialVideoTransformer
    from comfy.ldm.modules.diffusionmodules.openaimodel import UNetModel, TimestepEmbedSequential, VideoResBlock, Downsample
    from comfy.ldm.modules.diffusionmodules.util import timestep_embedding, zero_module
    from comfy.ldm.util import exists
    from comfy.utils import UNET_MAP_BASIC, UNET_MAP_RESNET, UNET_MAP_ATTENTIONS, TRANSFORMER_BLOCKS

    TEMPORAL_BLOCKS = {"norm_in.weight", "norm_in.bias"}
    TEMPORAL_BLOCKS.update(TRANSFORMER_BLOCKS)   # at import, as the pack's SVD module does


    class AdvancedControlBase:
        pass


    class ControlNetAdvanced(ControlNet, AdvancedControlBase):
        pass


    class ControlNetSD35Advanced(ControlNetSD35, ControlNetAdvanced):
        pass


    class SparseControlNet(ControlNetCLDM):
        pass


    class RefBasicTransformerBlock(BasicTransformerBlock):
        pass


    def create_wrapper_hooks():
        hooks = comfy.hooks.HookGroup()
        hooks.add(comfy.hooks.WrapperHook({}))
        return hooks


    class LatentKeyframeLike:
        @classmethod
        def INPUT_TYPES(cls):
            return {"required": {"batch_index": ("INT", {"default": 0}), "strength": ("FLOAT", {"default": 1.0})}}
        RETURN_TYPES = ("LATENT_KEYFRAME",)
        FUNCTION = "load_keyframe"
        CATEGORY = "test"

        def load_keyframe(self, batch_index, strength):
            return ({"batch_index": batch_index, "strength": strength},)


    NODE_CLASS_MAPPINGS = {"LatentKeyframeLike": LatentKeyframeLike}
'''}


@pytest.fixture
def harness(tmp_path):
    h = FaceHarness(tmp_path, with_web_api=True)
    h.pack("kj_style", KJ_STYLE)
    h.pack("acn_style", ACN_STYLE)
    h.load()
    for name in ("kj_style", "acn_style"):
        assert h.plugin(name).is_ok, h.plugin(name).traceback
    yield h
    h.close()


def _pack(name: str):
    return next(m for n, m in sys.modules.items() if n.endswith(name))


def test_flux_rope_is_a_complex_rotation_of_value_pairs(harness) -> None:
    pack = _pack("kj_style")
    pos = torch.tensor([[0.0, 1.0, 2.5, 7.0]])
    freqs = pack.rope(pos, 8, 10000)                       # [1, 4, 4, 2, 2]
    assert freqs.shape == (1, 4, 4, 2, 2) and freqs.dtype == torch.float32
    x = torch.randn(1, 2, 4, 8)
    q, k = pack.apply_rope(x, x * 2, freqs.unsqueeze(1))
    angles = pos[0, :, None] * 10000.0 ** (-torch.arange(0, 8, 2) / 8)
    expected = torch.view_as_real(torch.view_as_complex(x.unflatten(-1, (4, 2))) * torch.polar(
        torch.ones_like(angles), angles)).flatten(-2)
    torch.testing.assert_close(q, expected)
    torch.testing.assert_close(k, expected * 2)
    result = harness.run({"1": {"class_type": "RopeNode", "inputs": {"theta": 10000.0}},
                          "2": {"class_type": "PreviewAny", "inputs": {"source": ["1", 0]}}})
    assert result.status == "success", (result.error or {}).get("exception_message")


def test_flux_attention_rotates_then_attends(harness) -> None:
    import comfy.ldm.flux.math as flux_math

    q, k, v = (torch.randn(1, 2, 5, 8) for _ in range(3))
    pe = flux_math.rope(torch.arange(5.0).unsqueeze(0), 8, 10000).unsqueeze(1)
    out = flux_math.attention(q, k, v, pe)
    qr, kr = flux_math.apply_rope(q, k, pe)
    expected = F.scaled_dot_product_attention(qr, kr, v).transpose(1, 2).reshape(1, 5, 16)
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-4)


def test_lumina_feed_forward_matches_transformers_llama_mlp(harness) -> None:
    from transformers import LlamaConfig
    from transformers.models.llama.modeling_llama import LlamaMLP

    pack = _pack("kj_style")
    ff = pack.FeedForward(dim=16, hidden_dim=40, multiple_of=32, ffn_dim_multiplier=None)
    assert ff.w1.weight.shape == (64, 16)                  # 40 rounded up to a multiple of 32
    for p in ff.parameters():
        torch.nn.init.normal_(p, std=0.2)
    mlp = LlamaMLP(LlamaConfig(hidden_size=16, intermediate_size=64, hidden_act="silu", mlp_bias=False,
                                 num_attention_heads=4, num_key_value_heads=4))
    mlp.gate_proj.weight.data, mlp.up_proj.weight.data = ff.w1.weight.data, ff.w3.weight.data
    mlp.down_proj.weight.data = ff.w2.weight.data
    x = torch.randn(2, 6, 16)
    torch.testing.assert_close(ff(x), mlp(x))
    torch.testing.assert_close(pack.chunked_feed_forward(ff, x), mlp(x))


def test_taesd_blocks_have_comfyuis_keys_and_behaviour(harness) -> None:
    pack = _pack("kj_style")
    block = pack.Block(4, 8)
    assert sorted(block.state_dict()) == ["conv.0.bias", "conv.0.weight", "conv.2.bias", "conv.2.weight",
                                          "conv.4.bias", "conv.4.weight", "skip.weight"]
    for p in block.parameters():
        torch.nn.init.normal_(p, std=0.3)
    x = torch.randn(1, 4, 6, 6)
    c = block.conv
    h = F.conv2d(F.relu(F.conv2d(F.relu(F.conv2d(x, c[0].weight, c[0].bias, padding=1)), c[2].weight, c[2].bias,
                                 padding=1)), c[4].weight, c[4].bias, padding=1)
    torch.testing.assert_close(block(x), F.relu(h + F.conv2d(x, block.skip.weight)))
    assert isinstance(pack.Block(8, 8).skip, torch.nn.Identity)
    torch.testing.assert_close(pack.Clamp()(torch.tensor([0.0, 30.0])), torch.tensor([0.0, 3.0]))
    assert pack.conv(3, 5, bias=False).bias is None


def test_wan_causal_conv_with_a_cache_equals_the_whole_clip(harness) -> None:
    pack = _pack("kj_style")
    conv3d = pack.Int8CausalConv3d(2, 3, 3, padding=1)
    torch.nn.init.normal_(conv3d.weight)
    clip = torch.randn(1, 2, 6, 5, 5)
    whole = conv3d(clip)
    padded = F.pad(clip, (1, 1, 1, 1, 2, 0))                # zeros before the first frame only
    torch.testing.assert_close(whole, F.conv3d(padded, conv3d.weight, conv3d.bias))
    cache = [clip[:, :, 2:4]]
    second = conv3d(clip[:, :, 4:], cache_list=cache, cache_idx=0)
    torch.testing.assert_close(second, whole[:, :, 4:])
    assert cache == [None]


def test_norms_and_ltx_causal_conv(harness) -> None:
    pack = _pack("kj_style")
    x = torch.randn(2, 4, 3, 3)
    norm = pack.RMS_norm(4)
    norm.gamma.data = torch.rand(4, 1, 1)
    torch.testing.assert_close(norm(x), x / x.norm(dim=1, keepdim=True) * 2.0 * norm.gamma)
    torch.testing.assert_close(pack.PixelNorm()(x), x / (x.pow(2).mean(1, keepdim=True) + 1e-8).sqrt())
    ltx = pack.LTXCausalConv3d(2, 2, kernel_size=3)
    with torch.no_grad():             # disable_weight_init leaves the weights empty for a loader, as in ComfyUI
        ltx.conv.weight.normal_()
        ltx.conv.bias.normal_()
    video = torch.randn(1, 2, 4, 5, 5)
    assert ltx(video).shape == (1, 2, 4, 5, 5) and ltx.weight is ltx.conv.weight
    repeated = torch.cat([video[:, :, :1], video[:, :, :1], video], dim=2)
    torch.testing.assert_close(ltx(video), F.conv3d(repeated, ltx.weight, ltx.conv.bias, padding=(0, 1, 1)))
    with pytest.raises(NotImplementedError, match="no LTX-Video VAE"):
        pack.LTXDecoder()


def test_resnet_block_matches_diffusers_resnet_block_2d(harness) -> None:
    from diffusers.models.resnet import ResnetBlock2D

    pack = _pack("kj_style")
    ours = pack.ResnetBlock(in_channels=32, out_channels=64, temb_channels=0)
    assert not hasattr(ours, "temb_proj") and hasattr(ours, "nin_shortcut")
    reference = ResnetBlock2D(in_channels=32, out_channels=64, temb_channels=None, groups=32, eps=1e-6)
    state = {k.replace("nin_shortcut", "conv_shortcut"): torch.randn_like(v) * 0.1 for k, v in ours.state_dict().items()}
    reference.load_state_dict(state)
    ours.load_state_dict({k.replace("conv_shortcut", "nin_shortcut"): v for k, v in state.items()})
    x = torch.randn(1, 32, 8, 8)
    torch.testing.assert_close(ours(x), reference(x, None), atol=1e-5, rtol=1e-4)


def test_prompt_server_app_routes_added_at_import_are_served(harness) -> None:
    server = ServerThread(harness).start()
    try:
        async def fetch():
            async with aiohttp.ClientSession() as session:
                async with session.get(server.url + "/kj_style_async/kj_style.js") as response:
                    return response.status, await response.text()

        status, text = asyncio.run(fetch())
        assert status == 200 and "kj = 1" in text
        assert harness.web_api.app.router.frozen        # the server's own app from now on
    finally:
        server.stop()


def test_unet_helpers_match_diffusers(harness) -> None:
    from diffusers import UNet2DConditionModel
    from diffusers.models.embeddings import get_timestep_embedding

    pack = _pack("acn_style")
    t = torch.tensor([0.0, 10.0, 999.0])
    torch.testing.assert_close(pack.timestep_embedding(t, 32),
                               get_timestep_embedding(t, 32, flip_sin_to_cos=True, downscale_freq_shift=0))
    assert pack.timestep_embedding(t, 4, repeat_only=True).tolist() == [[0.0] * 4, [10.0] * 4, [999.0] * 4]
    assert all(p.eq(0).all() for p in pack.zero_module(torch.nn.Linear(3, 3)).parameters())
    unet = UNet2DConditionModel(block_out_channels=(32, 64), layers_per_block=1, cross_attention_dim=32,
                                attention_head_dim=4, norm_num_groups=32, sample_size=8,
                                down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
                                up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"))
    keys = set(unet.state_dict())
    assert {f"down_blocks.0.attentions.0.{k}" for k in pack.UNET_MAP_ATTENTIONS} <= keys
    assert {f"down_blocks.0.attentions.0.transformer_blocks.0.{k}" for k in pack.TRANSFORMER_BLOCKS} <= keys
    resnet = {k for k in keys if k.startswith("down_blocks.1.resnets.0.")}     # 32 -> 64: has a shortcut
    assert {f"down_blocks.1.resnets.0.{v}" for v in pack.UNET_MAP_RESNET.values()} == resnet
    assert {d for _, d in pack.UNET_MAP_BASIC if not d.startswith(("class_", "add_"))} <= keys
    assert pack.TEMPORAL_BLOCKS >= pack.TRANSFORMER_BLOCKS
    import comfy.model_detection

    assert comfy.model_detection.count_blocks(keys, "down_blocks.{}.") == 2
    assert comfy.model_detection.count_blocks(keys, "down_blocks.0.resnets.{}.") == 1
    with pytest.raises(NotImplementedError, match="models/detection.py"):
        comfy.model_detection.model_config_from_unet({}, "")


def test_timestep_embed_sequential_and_downsample(harness) -> None:
    from comfy.ldm.modules.diffusionmodules.openaimodel import TimestepBlock

    pack = _pack("acn_style")

    class AddEmb(TimestepBlock):
        def forward(self, x, emb):
            return x + emb

    seq = pack.TimestepEmbedSequential(AddEmb(), torch.nn.ReLU())
    x, emb = torch.randn(2, 4), torch.randn(2, 4)
    torch.testing.assert_close(seq(x, emb), F.relu(x + emb))
    down = pack.Downsample(4, use_conv=True, out_channels=8)
    assert down(torch.randn(1, 4, 8, 8)).shape == (1, 8, 4, 4)
    pool = pack.Downsample(4, use_conv=False)
    image = torch.randn(1, 4, 8, 8)
    torch.testing.assert_close(pool(image), F.avg_pool2d(image, 2))


def test_controlnet_and_unet_internals_subclass_and_fail_clearly(harness) -> None:
    pack = _pack("acn_style")
    assert issubclass(pack.ControlNetSD35Advanced, pack.ControlNetAdvanced)
    vanilla = pack.ControlNetAdvanced()                 # ComfyUI's defaults, no network (tests/compat_faces/
    assert vanilla.strength == 1.0 and vanilla.extra_conds == ["y"]        # test_controlnet_face.py runs one)
    for cls, match in ((pack.ControlNetSD35Advanced, "not built in Plexus"),
                       (pack.SparseControlNet, "not built in Plexus"),
                       (pack.RefBasicTransformerBlock, "transformer blocks are not built"),
                       (pack.UNetModel, "UNet modules are not built"),
                       (pack.VideoResBlock, "UNet modules are not built")):
        with pytest.raises(NotImplementedError, match=match):
            cls()
    with pytest.raises(NotImplementedError, match="ComfyUI hook objects are not applied"):
        pack.create_wrapper_hooks()
    assert pack.exists(0) and not pack.exists(None)


def test_hook_group_is_a_container_and_plexus_hooks_are_hook_groups(harness) -> None:
    import comfy.hooks
    from diffusion import hooks as plexus_hooks

    group = comfy.hooks.HookGroup()
    marker = object()
    group.add(marker)
    group.add(marker)
    clone = group.clone()
    group.remove(marker)
    assert len(group) == 0 and len(clone) == 1 and clone.contains(marker)
    assert isinstance(plexus_hooks.HookGroup(), comfy.hooks.HookGroup)


def test_acn_style_legacy_node_runs(harness) -> None:
    result = harness.run({"1": {"class_type": "LatentKeyframeLike", "inputs": {"batch_index": 2, "strength": 0.5}},
                          "2": {"class_type": "PreviewAny", "inputs": {"source": ["1", 0]}}})
    assert result.status == "success", (result.error or {}).get("exception_message")


def test_vae_crops_pixels_as_advanced_controlnets_reference_preprocessor_asks(harness, tiny_checkpoint) -> None:
    import comfy.sd

    _, _, vae, _ = comfy.sd.load_checkpoint_guess_config(str(tiny_checkpoint), output_vae=True, output_clip=False)
    pixels = torch.rand(1, 20, 27, 3)
    cropped = vae.vae_encode_crop_pixels(pixels)       # 20 x 27 -> 16 x 24, centred
    torch.testing.assert_close(cropped, pixels[:, 2:18, 1:25])
    assert vae.vae_encode_crop_pixels(cropped) is cropped
    assert vae.encode(cropped).shape == (1, 4, 2, 3)
