"""Faces found missing by the issue-19 pack runs (scripts/packs_survey.py on Impact Pack, rgthree, KJNodes,
UltimateSDUpscale), each used the way those packs use it: ``import comfy`` then ``comfy.samplers.KSampler``
(UltimateSDUpscale), ``nodes.ImageScale.upscale_methods`` (rgthree's Image Resize), ``latent_preview.TAESD``
and ``Latent2RGBPreviewer`` (Impact), ``comfy_extras.nodes_mask.composite`` and
``comfy.utils.tiled_scale_multidim`` (KJNodes), ``comfy.ldm.modules.attention`` (KJNodes),
``execution.PromptExecutor.handle_execution_error`` (Impact) and ``nodes.EXTENSION_WEB_DIRS`` set by a
pack that loads (Impact's JS)."""
from __future__ import annotations

import sys

import pytest
import torch

from .harness import FaceHarness

PACK = '''
import os
import comfy
import nodes
import execution
import latent_preview
from latent_preview import TAESD, TAESDPreviewerImpl, Latent2RGBPreviewer
from comfy_extras.nodes_mask import composite
from comfy.utils import tiled_scale_multidim
from comfy.ldm.modules.attention import optimized_attention, attention_pytorch, wrap_attn

ORIGINAL_HANDLER = execution.PromptExecutor.handle_execution_error
nodes.EXTENSION_WEB_DIRS["style_pack_web"] = os.path.join(os.path.dirname(os.path.realpath(__file__)), "js")


class TiledUpscaleLike:
    """UltimateSDUpscale's inputs: sampler and scheduler lists read through ``comfy.samplers`` after
    ``import comfy``; rgthree's resize method list read from the core ImageScale node."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"image": ("IMAGE",),
                             "sampler_name": (comfy.samplers.KSampler.SAMPLERS,),
                             "scheduler": (comfy.samplers.KSampler.SCHEDULERS,),
                             "method": (nodes.ImageScale.upscale_methods,)}}

    RETURN_TYPES = ("IMAGE",)
    FUNCTION = "doit"
    CATEGORY = "test"

    def doit(self, image, sampler_name, scheduler, method):
        overlay = torch.ones_like(image[:, :4, :4, :])
        out = image.movedim(-1, 1).clone()
        composite(out, overlay.movedim(-1, 1), 2, 2, None, 1, False)
        return (out.movedim(1, -1),)


import torch

NODE_CLASS_MAPPINGS = {"TiledUpscaleLike": TiledUpscaleLike}
'''


@pytest.fixture
def harness(tmp_path):
    h = FaceHarness(tmp_path)
    h.pack("style_pack", {"__init__.py": PACK, "js/style.js": "export const style = 1;\n"})
    h.load()
    assert h.plugin("style_pack").is_ok, h.plugin("style_pack").traceback
    yield h
    h.close()


def _pack():
    return next(m for n, m in sys.modules.items() if n.endswith("style_pack"))


def test_pack_inputs_read_comfy_submodules_and_core_option_lists(harness) -> None:
    import nodes

    spec = harness.registry.get("TiledUpscaleLike").INPUT_TYPES()["required"]
    assert "euler" in spec["sampler_name"][0] and "karras" in spec["scheduler"][0]
    image_scale = harness.registry.get("ImageScale").INPUT_TYPES()["required"]
    assert spec["method"][0] == list(image_scale["upscale_method"][0]) == nodes.ImageScale.upscale_methods
    assert nodes.ImageScale.crop_methods == list(image_scale["crop"][0])
    assert "bislerp" in nodes.LatentUpscaleBy.upscale_methods


def test_composite_pastes_in_place_and_the_node_runs(harness) -> None:
    result = harness.run({
        "1": {"class_type": "EmptyImage", "inputs": {"width": 8, "height": 8, "batch_size": 1, "color": 0}},
        "2": {"class_type": "TiledUpscaleLike", "inputs": {"image": ["1", 0], "sampler_name": "euler",
                                                         "scheduler": "normal", "method": "bilinear"}},
        "3": {"class_type": "PreviewImage", "inputs": {"images": ["2", 0]}}})
    assert result.status == "success", (result.error or {}).get("exception_message")
    composite = sys.modules["comfy_extras.nodes_mask"].composite
    dest = torch.zeros(1, 4, 4, 4)                            # a latent, 8 pixels per cell
    src = torch.ones(1, 4, 2, 2)
    mask = torch.zeros(1, 16, 16)
    mask[:, :, 8:] = 1.0
    out = composite(dest, src, 8, 16, mask, 8)
    assert out is dest
    assert dest[0, 0, 2:4, 1].eq(0).all() and dest[0, 0, 2:4, 2].eq(1).all()
    assert dest[0, 0, :2].eq(0).all() and dest[0, 0, :, 3].eq(0).all()


def test_tiled_scale_multidim_matches_the_whole_input(harness) -> None:
    utils = sys.modules["comfy.utils"]
    x = torch.randn(2, 3, 20, 30)
    up = lambda t: torch.nn.functional.interpolate(t, scale_factor=2, mode="nearest")  # noqa: E731
    out = utils.tiled_scale_multidim(x, up, tile=(8, 8), overlap=2, upscale_amount=2)
    torch.testing.assert_close(out, up(x))
    video = torch.randn(1, 4, 5, 12, 12)
    down = utils.tiled_scale_multidim(video, lambda t: t[..., ::2, ::2], tile=(3, 8, 8), overlap=(1, 2, 2),
                                      upscale_amount=(1, 2, 2), out_channels=4, downscale=True)
    torch.testing.assert_close(down, video[..., ::2, ::2])


def test_attention_face_matches_a_plain_softmax(harness) -> None:
    pack = _pack()
    q, k, v = (torch.randn(2, 6, 16) for _ in range(3))
    qh, kh, vh = (t.view(2, 6, 4, 4).transpose(1, 2) for t in (q, k, v))
    mask = torch.zeros(6, 6)
    mask[:, 4:] = float("-inf")
    scores = qh @ kh.transpose(-1, -2) / 2.0
    for fn, m in ((pack.optimized_attention, None), (pack.attention_pytorch, mask)):
        expected = ((scores if m is None else scores + m).softmax(-1) @ vh).transpose(1, 2).reshape(2, 6, 16)
        torch.testing.assert_close(fn(q, k, v, 4, mask=m), expected)
    heads_first = pack.optimized_attention(qh, kh, vh, 4, skip_reshape=True, skip_output_reshape=True)
    assert heads_first.shape == (2, 4, 6, 4)
    seen = []

    def override(func, *args, **kwargs):
        seen.append(func.__name__)
        return func(*args, **kwargs)

    pack.optimized_attention(q, k, v, 4, transformer_options={"optimized_attention_override": override})
    assert seen == ["attention"]


def test_latent_previewers(harness, tmp_path) -> None:
    from safetensors.torch import save_file

    from diffusion.previews import taesd_decoder

    pack = _pack()
    factors = [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0], [0.0, 0.0, 0.0]]
    image = pack.Latent2RGBPreviewer(factors).decode_latent_to_preview(torch.zeros(1, 4, 2, 3) + 1.0)
    assert image.size == (3, 2) and image.getpixel((0, 0)) == (255, 255, 255)
    path = tmp_path / "taesd_decoder.safetensors"
    save_file({k: v.contiguous() for k, v in taesd_decoder(4).state_dict().items()}, str(path))
    taesd = pack.TAESD(None, str(path), latent_channels=4).to("cpu")
    latent = torch.randn(1, 4, 4, 4)
    decoded = taesd.decode(latent)
    assert decoded.shape == (1, 3, 32, 32)
    with torch.inference_mode():
        torch.testing.assert_close(decoded, taesd.taesd_decoder(latent) * 2 - 1)     # 0..1 -> -1..1
    assert pack.TAESDPreviewerImpl(taesd).decode_latent_to_preview(torch.randn(1, 4, 4, 4)).size == (32, 32)
    with pytest.raises(NotImplementedError):
        pack.TAESD(str(path), str(path))


def test_prompt_executor_handler_sends_comfyuis_error_message(harness) -> None:
    sent = []

    class Server:
        client_id = "c1"

        def send_sync(self, event, data, sid=None):
            sent.append((event, data, sid))

    executor = _pack().execution.PromptExecutor(Server())
    error = {"node_id": "3", "exception_message": "boom", "exception_type": "ValueError", "traceback": ["t"],
             "current_inputs": {}}
    _pack().ORIGINAL_HANDLER(executor, "p1", {"3": {"class_type": "KSampler"}}, ["1"], ["1", "2"], error,
                              ValueError("boom"))
    event, data, sid = sent[0]
    assert (event, sid, data["node_type"], data["exception_message"], data["executed"]) == \
        ("execution_error", "c1", "KSampler", "boom", ["1", "2"])
    from comfy.model_management import InterruptProcessingException

    executor.handle_execution_error("p1", {"3": {"class_type": "KSampler"}}, [], [], error,
                                    InterruptProcessingException())
    assert sent[-1][0] == "execution_interrupted" and sent[-1][2] is None


def test_a_loaded_pack_that_sets_extension_web_dirs_has_its_js_served(harness, tmp_path) -> None:
    import nodes

    assert nodes.EXTENSION_WEB_DIRS["style_pack_web"].endswith("js")


def test_server_module_has_aiohttp_web(harness) -> None:
    import aiohttp.web

    import server

    assert server.web is aiohttp.web          # VideoHelperSuite: ``web = server.web``
