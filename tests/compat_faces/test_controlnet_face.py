"""The ``comfy.controlnet`` ControlBase protocol the way Advanced-ControlNet uses it (issue 19): a small V3 pack in
its style subclasses ``ControlNet`` with its own hint handling, network call and merge, loads through
``comfy.controlnet.load_controlnet``, converts the vanilla object (``from_vanilla``, ``control_model_wrapped.clone()``),
overrides ``get_control`` / ``pre_run`` / ``cleanup`` / ``control_merge`` per instance and stacks on
``previous_controlnet``. Its sampled latents are checked against Plexus's core ControlNetLoader +
ControlNetApplyAdvanced on the same tiny SD1.5 checkpoint, ControlNet file, hint and seed."""
from __future__ import annotations

import shutil
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from model_management import MemorySettings
from models.testing import tiny_controlnet_config, tiny_t2i_config, write_random_controlnet, write_random_t2i_adapter
from tests.diffusion.helpers import write_tiny
from tests.nodes.engine_harness import Capture

from .harness import FaceHarness

ACN_CN_STYLE = '''
import torch

import comfy.controlnet as comfy_cn
import comfy.model_management
import comfy.utils
import folder_paths
from comfy.controlnet import ControlBase, ControlNet, StrengthType
from comfy_api.latest import ComfyExtension, io

CALLS = {"pre_run": 0, "get_control": 0, "cleanup": 0, "cond_or_uncond": [], "sample_sigmas": []}


class TimestepKeyframeGroup:
    def __init__(self, keyframes=()):
        self.keyframes = list(keyframes)          # (start_percent, strength), in order


class AdvancedControlBase:
    """The pack's mixin: ComfyUI's methods replaced per instance, calling the vanilla ones through `base`."""

    def __init__(self, base, timestep_keyframes):
        self.base = base
        self.timestep_keyframes = timestep_keyframes or TimestepKeyframeGroup()
        self.keyframe_strength = 1.0
        self.get_control = self.get_control_inject
        self.control_merge = self.control_merge_inject
        self.pre_run = self.pre_run_inject
        self.cleanup = self.cleanup_inject
        self.set_cond_hint = self.set_cond_hint_inject

    def set_cond_hint_inject(self, *args, **kwargs):
        return self.base.set_cond_hint(*args, **kwargs)

    def pre_run_inject(self, model, percent_to_timestep_function):
        self.base.pre_run(model, percent_to_timestep_function)
        self.keyframe_starts = [(percent_to_timestep_function(p), s) for p, s in self.timestep_keyframes.keyframes]
        CALLS["pre_run"] += 1

    def get_control_inject(self, x_noisy, t, cond, batched_number, transformer_options):
        CALLS["get_control"] += 1
        self.keyframe_strength = 1.0
        for start_t, strength in self.keyframe_starts:
            if start_t >= float(t[0]):
                self.keyframe_strength = strength
        return self.get_control_advanced(x_noisy, t, cond, batched_number, transformer_options)

    def control_merge_inject(self, control, control_prev, output_dtype):
        for tensors in control.values():
            for x in tensors:
                if x is not None:
                    x *= self.keyframe_strength
        return self.base.control_merge(control, control_prev, output_dtype)

    def cleanup_inject(self):
        self.base.cleanup()
        CALLS["cleanup"] += 1


class ControlNetAdvanced(ControlNet, AdvancedControlBase):
    def __init__(self, control_model, timestep_keyframes, global_average_pooling=False, compression_ratio=8,
                 latent_format=None, load_device=None, manual_cast_dtype=None, extra_conds=["y"],
                 strength_type=StrengthType.CONSTANT, concat_mask=False, preprocess_image=lambda a: a):
        super().__init__(control_model=control_model, global_average_pooling=global_average_pooling,
                         compression_ratio=compression_ratio, latent_format=latent_format, load_device=load_device,
                         manual_cast_dtype=manual_cast_dtype, extra_conds=extra_conds, strength_type=strength_type,
                         concat_mask=concat_mask, preprocess_image=preprocess_image)
        AdvancedControlBase.__init__(self, super(type(self), self), timestep_keyframes)

    def get_control_advanced(self, x_noisy, t, cond, batched_number, transformer_options):
        """The pack's own version of ControlNet.get_control (the hint, the network call, the merge)."""
        CALLS["cond_or_uncond"].append(transformer_options.get("cond_or_uncond"))
        CALLS["sample_sigmas"].append(transformer_options.get("sample_sigmas"))
        control_prev = None
        if self.previous_controlnet is not None:
            control_prev = self.previous_controlnet.get_control(x_noisy, t, cond, batched_number, transformer_options)
        if self.timestep_range is not None:
            if t[0] > self.timestep_range[0] or t[0] < self.timestep_range[1]:
                return control_prev
        dtype = self.control_model.dtype
        if self.cond_hint is None or x_noisy.shape[2] * 8 != self.cond_hint.shape[2]:
            self.cond_hint = comfy.utils.common_upscale(self.cond_hint_original, x_noisy.shape[3] * 8,
                                                        x_noisy.shape[2] * 8, self.upscale_algorithm, "center")
            self.cond_hint = self.preprocess_image(self.cond_hint).to(device=x_noisy.device, dtype=dtype)
        if x_noisy.shape[0] != self.cond_hint.shape[0]:
            self.cond_hint = comfy_cn.broadcast_image_to(self.cond_hint, x_noisy.shape[0], batched_number)
        context = cond.get("crossattn_controlnet", cond["c_crossattn"])
        timestep = self.model_sampling_current.timestep(t)
        x_noisy = self.model_sampling_current.calculate_input(t, x_noisy)
        control = self.control_model(x=x_noisy.to(dtype), hint=self.cond_hint, timesteps=timestep.to(dtype),
                                     context=comfy.model_management.cast_to_device(context, x_noisy.device, dtype))
        return self.control_merge(control, control_prev, output_dtype=None)

    def copy(self):
        c = ControlNetAdvanced(self.control_model, self.timestep_keyframes,
                               global_average_pooling=self.global_average_pooling, load_device=self.load_device,
                               manual_cast_dtype=self.manual_cast_dtype)
        c.control_model = self.control_model
        c.control_model_wrapped = self.control_model_wrapped
        self.copy_to(c)
        return c

    @staticmethod
    def from_vanilla(v, timestep_keyframe=None):
        out = ControlNetAdvanced(control_model=v.control_model, timestep_keyframes=timestep_keyframe,
                                 global_average_pooling=v.global_average_pooling, compression_ratio=v.compression_ratio,
                                 latent_format=v.latent_format, load_device=v.load_device,
                                 manual_cast_dtype=v.manual_cast_dtype, extra_conds=v.extra_conds,
                                 strength_type=v.strength_type, concat_mask=v.concat_mask,
                                 preprocess_image=v.preprocess_image)
        v.copy_to(out)
        out.control_model_wrapped = v.control_model_wrapped.clone()
        return out


def load_controlnet(ckpt_path, timestep_keyframe=None):
    control = comfy_cn.load_controlnet(ckpt_path)
    if type(control) == ControlNet:
        return ControlNetAdvanced.from_vanilla(control, timestep_keyframe)
    return control


class TimestepKeyframe(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(node_id="ACNStyleTimestepKeyframe", category="test",
                         inputs=[io.Float.Input("start_percent", default=0.0), io.Float.Input("strength", default=1.0)],
                         outputs=[io.Custom("TIMESTEP_KEYFRAME").Output()])

    @classmethod
    def execute(cls, start_percent, strength):
        return io.NodeOutput(TimestepKeyframeGroup([(start_percent, strength)]))


class ControlNetLoaderAdvanced(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(node_id="ACNStyleControlNetLoader", category="test",
                         inputs=[io.Combo.Input("cnet", options=folder_paths.get_filename_list("controlnet")),
                                 io.Custom("TIMESTEP_KEYFRAME").Input("_tk_opt", optional=True)],
                         outputs=[io.ControlNet.Output("CONTROL_NET")])

    @classmethod
    def execute(cls, cnet, _tk_opt=None):
        return io.NodeOutput(load_controlnet(folder_paths.get_full_path("controlnet", cnet), _tk_opt))


def apply(positive, negative, control_net, image, strength, start_percent, end_percent, control_apply_to_uncond):
    """The pack's apply loop: one converted copy per control it stacks on, shared by positive and negative."""
    control_hint = image.movedim(-1, 1)
    cnets = {}
    out = []
    for conditioning in (positive, negative):
        c = []
        if conditioning is not None:
            for t in conditioning:
                d = t[1].copy()
                prev_cnet = d.get("control", None)
                if prev_cnet in cnets:
                    c_net = cnets[prev_cnet]
                else:
                    c_net = control_net.copy()
                    if type(c_net) == ControlNet:
                        c_net = ControlNetAdvanced.from_vanilla(c_net)
                    c_net = c_net.set_cond_hint(control_hint, strength, (start_percent, end_percent))
                    c_net.set_previous_controlnet(prev_cnet)
                    cnets[prev_cnet] = c_net
                d["control"] = c_net
                d["control_apply_to_uncond"] = control_apply_to_uncond
                c.append([t[0], d])
        out.append(c)
    return out


class AdvancedControlNetApply(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(node_id="ACNStyleApply", category="test",
                         inputs=[io.Conditioning.Input("positive"), io.Conditioning.Input("negative"),
                                 io.ControlNet.Input("control_net"), io.Image.Input("image"),
                                 io.Float.Input("strength", default=1.0), io.Float.Input("start_percent", default=0.0),
                                 io.Float.Input("end_percent", default=1.0)],
                         outputs=[io.Conditioning.Output("positive_out", display_name="positive"),
                                  io.Conditioning.Output("negative_out", display_name="negative")])

    @classmethod
    def execute(cls, positive, negative, control_net, image, strength, start_percent, end_percent):
        pos, neg = apply(positive, negative, control_net, image, strength, start_percent, end_percent, False)
        return io.NodeOutput(pos, neg)


class AdvancedControlNetApplySingle(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(node_id="ACNStyleApplySingle", category="test",
                         inputs=[io.Conditioning.Input("conditioning"), io.ControlNet.Input("control_net"),
                                 io.Image.Input("image"), io.Float.Input("strength", default=1.0)],
                         outputs=[io.Conditioning.Output("CONDITIONING")])

    @classmethod
    def execute(cls, conditioning, control_net, image, strength):
        return io.NodeOutput(apply(conditioning, None, control_net, image, strength, 0.0, 1.0, True)[0])


class Extension(ComfyExtension):
    async def get_node_list(self):
        return [TimestepKeyframe, ControlNetLoaderAdvanced, AdvancedControlNetApply, AdvancedControlNetApplySingle]


async def comfy_entrypoint():
    return Extension()
'''

CKPT = "tiny.safetensors"


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("acn-files")
    write_tiny(folder / CKPT)
    write_random_controlnet(folder / "cn.safetensors", tiny_controlnet_config("sd1"), seed=1)
    write_random_controlnet(folder / "cn_b.safetensors", tiny_controlnet_config("sd1"), layout="diffusers", seed=2)
    write_random_t2i_adapter(folder / "t2i.safetensors", tiny_t2i_config("full"), seed=3)
    rgb = np.random.default_rng(0).integers(0, 256, (48, 80, 3), dtype=np.uint8)     # not the latent's aspect
    Image.fromarray(rgb).save(folder / "hint.png")
    return folder


@pytest.fixture
def harness(tmp_path, files):
    h = FaceHarness(tmp_path)
    # fp32: the pack casts x, timesteps and context to the ControlNet's dtype as ComfyUI does (a bf16 net gets
    # timestep 999 as 1000), where the core path casts inside the network after the timestep embedding
    h.services.settings = MemorySettings(force_fp32=True)
    checkpoints, controlnets = h.folders.paths("checkpoints")[0], h.folders.paths("controlnet")[0]
    for folder in (checkpoints, controlnets, h.folders.input):
        folder.mkdir(parents=True, exist_ok=True)
    (checkpoints / CKPT).symlink_to(files / CKPT)
    for name in ("cn.safetensors", "cn_b.safetensors", "t2i.safetensors"):
        (controlnets / name).symlink_to(files / name)
    shutil.copyfile(files / "hint.png", h.folders.input / "hint.png")      # input files may not be links
    h.pack("acn_cn_style", {"__init__.py": ACN_CN_STYLE})
    h.load()
    assert h.plugin("acn_cn_style").is_ok, h.plugin("acn_cn_style").traceback
    h.registry.register("TestCapture", Capture)
    _pack().CALLS.update(pre_run=0, get_control=0, cleanup=0, cond_or_uncond=[], sample_sigmas=[])
    yield h
    h.close()


def _pack():
    return next(m for n, m in sys.modules.items() if n.endswith("acn_cn_style"))


def graph(controls, *, cfg: float = 6.0, steps: int = 3) -> dict:
    """controls: (kind, file, strength, start, end) applied in order; kind "core", "acn", "acn_single" or
    ("acn_kf", keyframe strength)."""
    p = {
        "1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": CKPT}},
        "2": {"class_type": "CLIPTextEncode", "inputs": {"text": "a cat", "clip": ["1", 1]}},
        "3": {"class_type": "CLIPTextEncode", "inputs": {"text": "blurry", "clip": ["1", 1]}},
        "4": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 2}},
        "5": {"class_type": "LoadImage", "inputs": {"image": "hint.png"}},
    }
    positive, negative = ["2", 0], ["3", 0]
    for n, (kind, name, strength, start, end) in enumerate(controls):
        loader, node = f"1{n}", f"2{n}"
        if kind == "core":
            p[loader] = {"class_type": "ControlNetLoader", "inputs": {"control_net_name": name}}
            p[node] = {"class_type": "ControlNetApplyAdvanced", "inputs": {
                "positive": positive, "negative": negative, "control_net": [loader, 0], "image": ["5", 0],
                "strength": strength, "start_percent": start, "end_percent": end}}
            positive, negative = [node, 0], [node, 1]
            continue
        p[loader] = {"class_type": "ACNStyleControlNetLoader", "inputs": {"cnet": name}}
        if isinstance(kind, tuple):
            p[f"3{n}"] = {"class_type": "ACNStyleTimestepKeyframe", "inputs": {"start_percent": 0.0,
                                                                              "strength": kind[1]}}
            p[loader]["inputs"]["_tk_opt"] = [f"3{n}", 0]
        if kind == "acn_single":
            p[node] = {"class_type": "ACNStyleApplySingle", "inputs": {
                "conditioning": positive, "control_net": [loader, 0], "image": ["5", 0], "strength": strength}}
            positive = [node, 0]
            continue
        p[node] = {"class_type": "ACNStyleApply", "inputs": {
            "positive": positive, "negative": negative, "control_net": [loader, 0], "image": ["5", 0],
            "strength": strength, "start_percent": start, "end_percent": end}}
        positive, negative = [node, 0], [node, 1]
    p["9"] = {"class_type": "KSampler", "inputs": {
        "seed": 7, "steps": steps, "cfg": cfg, "sampler_name": "euler", "scheduler": "normal", "denoise": 1.0,
        "model": ["1", 0], "positive": positive, "negative": negative, "latent_image": ["4", 0]}}
    p["99"] = {"class_type": "TestCapture", "inputs": {"value": ["9", 0]}}
    return p


def sampled(h: FaceHarness, controls, **kwargs) -> torch.Tensor:
    Capture.seen = []
    result = h.run(graph(controls, **kwargs))
    assert result.status == "success", (result.error or {}).get("exception_message")
    return Capture.seen[-1]["samples"]


def assert_same(a: torch.Tensor, b: torch.Tensor) -> None:
    # the pack gets ComfyUI's unscaled x_noisy (x / c_in) and scales it again: float rounding only
    torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def test_pack_loader_and_apply_match_the_core_nodes(harness) -> None:
    plain = sampled(harness, [])
    core = sampled(harness, [("core", "cn.safetensors", 0.7, 0.0, 0.6)])
    pack = sampled(harness, [("acn", "cn.safetensors", 0.7, 0.0, 0.6)])
    assert (core - plain).abs().max() > 1e-3                 # the ControlNet changes the result
    assert_same(pack, core)
    calls = _pack().CALLS
    # pre_run per conditioning entry (ComfyUI's pre_run_control), cleanup once per control object (its
    # cleanup_models takes a set); the CFG pair batched: one call per step with cond and uncond
    assert calls["pre_run"] == 2 and calls["cleanup"] == 1
    assert calls["get_control"] == 3 and calls["cond_or_uncond"][0] in ([0, 1], [1, 0])
    # ComfyUI's transformer_options["sample_sigmas"]: the 3 steps' sigmas and the final 0 (ACN's keyframes read
    # their largest)
    walked = calls["sample_sigmas"][0]
    assert walked.shape == (4,) and float(walked[-1]) == 0.0 and float(walked[0]) > 14.0
    assert all(s is walked for s in calls["sample_sigmas"])


def test_timestep_keyframe_strength_through_the_instance_overrides(harness) -> None:
    core = sampled(harness, [("core", "cn.safetensors", 0.4, 0.0, 1.0)])
    pack = sampled(harness, [(("acn_kf", 0.5), "cn.safetensors", 0.8, 0.0, 1.0)])
    assert_same(pack, core)


def test_single_apply_reaches_the_negative_as_comfyuis_control_apply_to_uncond(harness) -> None:
    core = sampled(harness, [("core", "cn.safetensors", 0.9, 0.0, 1.0)])
    pack = sampled(harness, [("acn_single", "cn.safetensors", 0.9, 0.0, 1.0)])
    assert_same(pack, core)


@pytest.mark.parametrize("order", [("core", "acn"), ("acn", "core"), ("acn", "acn")])
def test_stacked_with_core_applications_either_way(harness, order) -> None:
    core = sampled(harness, [("core", "cn.safetensors", 0.6, 0.0, 1.0), ("core", "cn_b.safetensors", 0.5, 0.2, 0.9)])
    mixed = sampled(harness, [(order[0], "cn.safetensors", 0.6, 0.0, 1.0), (order[1], "cn_b.safetensors", 0.5, 0.2, 0.9)])
    assert_same(mixed, core)


def test_cleanup_clears_the_run_state(harness) -> None:
    import comfy.controlnet

    sampled(harness, [("acn", "cn.safetensors", 1.0, 0.0, 1.0)], steps=1)
    net = comfy.controlnet.load_controlnet(str(harness.folders.paths("controlnet")[0] / "cn.safetensors"))
    assert type(net) is comfy.controlnet.ControlNet and net.control_model.dtype == torch.float32
    c = net.copy().set_cond_hint(torch.rand(1, 3, 16, 16), 0.5, (0.1, 0.9))
    assert c.control_model_wrapped is net.control_model_wrapped and c.strength == 0.5
    assert c.get_models() == [net.control_model_wrapped]
    assert _pack().CALLS["cleanup"] == 1


def test_files_the_face_does_not_build_fail_clearly(harness) -> None:
    import comfy.controlnet

    with pytest.raises(NotImplementedError, match="load_controlnet of a t2i_adapter file"):
        comfy.controlnet.load_controlnet(str(harness.folders.paths("controlnet")[0] / "t2i.safetensors"))
    with pytest.raises(NotImplementedError, match="ControlNet over a Linear"):
        comfy.controlnet.ControlNet(torch.nn.Linear(2, 2))
    for cls in (comfy.controlnet.T2IAdapter, comfy.controlnet.ControlLora, comfy.controlnet.ControlNetSD35):
        with pytest.raises(NotImplementedError, match="not built in Plexus"):
            cls()


def test_residual_dicts_follow_comfyuis_pop_order(harness) -> None:
    from comfy.controlnet import residual_dict, residuals_from_dict

    skips = [torch.full((1,), float(i)) for i in range(4)]
    after = [torch.full((1,), 10.0 + i) for i in range(4)]
    got = residuals_from_dict({"output": list(skips), "middle": [torch.ones(1)], "input": list(after)}, 4)
    # ComfyUI pops "output" before output block j (which reads input block 3-j's skip): entry 3-j, so skip i
    # gets entry i; "input" is popped after input block i: entry 3-i
    assert {i: float(t) for i, t in got.skips.items()} == {0: 0.0, 1: 1.0, 2: 2.0, 3: 3.0}
    assert {i: float(t) for i, t in got.after_input.items()} == {0: 13.0, 1: 12.0, 2: 11.0, 3: 10.0}
    # a shorter output list reaches the deepest skips only (the first output blocks pop it)
    short = residuals_from_dict({"output": skips[:2], "middle": []}, 4)
    assert sorted(short.skips) == [2, 3] and short.middle is None
    back = residual_dict(got, 4)
    assert [float(t) for t in back["output"]] == [0, 1, 2, 3] and [float(t) for t in back["input"]] == [10, 11, 12, 13]


def test_broadcast_image_to_cycles_the_first_hints_per_chunk(harness) -> None:
    from comfy.controlnet import broadcast_image_to

    hints = torch.arange(3.0).reshape(3, 1, 1, 1)
    assert broadcast_image_to(hints[:1], 6, 2) is not None and broadcast_image_to(hints[:1], 6, 2).shape[0] == 1
    # 2 chunks of 4: each chunk takes hints 0, 1, 2 then 0 again
    assert broadcast_image_to(hints, 8, 2).flatten().tolist() == [0, 1, 2, 0, 0, 1, 2, 0]
    # 2 chunks of 1: each takes the first hint only
    assert broadcast_image_to(hints, 2, 2).flatten().tolist() == [0, 0]
