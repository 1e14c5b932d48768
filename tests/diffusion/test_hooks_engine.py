"""The hooks family through the Engine and the sampler, on a tiny SD1 checkpoint in the real layout with
kohya LoRA files (tests/lora/test_graphs.py's files): each hook result against what LoraLoader(ModelOnly)
gives, or against a sampler run whose model function routes each batch to separately LoRA-loaded models."""
from __future__ import annotations

import torch

from diffusion import conditioning as conditioning_ops
from diffusion import hooks, ksampler
from diffusion.loading import load_checkpoint_file
from model_management import MemorySettings, ModelManager
from models.lora import apply_lora
from sampling import sample as sampling_driver
from sampling.guidance import conds_from_conditioning
from sampling.schedules import calculate_sigmas
from tests.lora.test_graphs import CKPT, files, latent_of, make_harness  # noqa: F401  (files: a fixture)

STEPS = 6


def base_graph(model_links: dict | None = None) -> dict:
    graph = {
        "1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": CKPT}},
        "2": {"class_type": "CLIPTextEncode", "inputs": {"text": "a cat", "clip": ["1", 1]}},
        "3": {"class_type": "CLIPTextEncode", "inputs": {"text": "blurry", "clip": ["1", 1]}},
        "4": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}},
        "9": {"class_type": "TestKeep", "inputs": {"value": ["5", 0]}},
    }
    graph.update(model_links or {})
    return graph


def ksampler_node(model, positive, negative, steps: int = STEPS) -> dict:
    return {"class_type": "KSampler", "inputs": {"seed": 7, "steps": steps, "cfg": 5.0, "sampler_name": "euler",
                                                 "scheduler": "normal", "denoise": 1.0, "model": model,
                                                 "positive": positive, "negative": negative,
                                                 "latent_image": ["4", 0]}}


def advanced(model, latent, start: int, end: int, *, add_noise: str, leftover: str) -> dict:
    return {"class_type": "KSamplerAdvanced", "inputs": {
        "add_noise": add_noise, "noise_seed": 7, "steps": STEPS, "cfg": 5.0, "sampler_name": "euler",
        "scheduler": "normal", "start_at_step": start, "end_at_step": end, "return_with_leftover_noise": leftover,
        "model": model, "positive": ["2", 0], "negative": ["3", 0], "latent_image": latent}}


def hooked_pair(hooks_link) -> dict:
    return {"class_type": "PairConditioningSetProperties",
            "inputs": {"positive_NEW": ["2", 0], "negative_NEW": ["3", 0], "strength": 1.0,
                       "set_cond_area": "default", "hooks": hooks_link}}


def test_hook_lora_on_both_conds_is_lora_loader_model_only(tmp_path, files) -> None:
    h = make_harness(tmp_path, files)
    try:
        loader = base_graph({
            "10": {"class_type": "LoraLoaderModelOnly",
                   "inputs": {"model": ["1", 0], "lora_name": "a.safetensors", "strength_model": 0.8}},
            "5": ksampler_node(["10", 0], ["2", 0], ["3", 0])})
        hooked = base_graph({
            "20": {"class_type": "CreateHookLoraModelOnly", "inputs": {"lora_name": "a.safetensors",
                                                                       "strength_model": 0.8}},
            "21": hooked_pair(["20", 0]),
            "5": ksampler_node(["1", 0], ["21", 0], ["21", 1])})
        plain = latent_of(h, base_graph({"5": ksampler_node(["1", 0], ["2", 0], ["3", 0])}))
        expected = latent_of(h, loader)
        assert not torch.equal(expected, plain)
        assert torch.equal(latent_of(h, hooked), expected)
        h.engine.clear_cache()
        assert torch.equal(latent_of(h, base_graph({"5": ksampler_node(["1", 0], ["2", 0], ["3", 0])})), plain)
    finally:
        h.close()


def test_keyframe_turning_the_hook_off_at_half_is_two_phase_sampling(tmp_path, files) -> None:
    h = make_harness(tmp_path, files)
    try:
        manager = h.services.model_manager()
        model, _, _ = load_checkpoint_file(h.folders.find("checkpoints", CKPT), manager)
        ms = model.model_sampling
        sigmas = calculate_sigmas(ms, "normal", STEPS)
        # the hook is off from the first step whose sigma is at or below 50 %'s: step 3 of 6 here
        assert float(sigmas[2]) > ms.percent_to_sigma(0.5) > float(sigmas[3])
        def two_phase(switch: int) -> dict:
            return base_graph({
                "10": {"class_type": "LoraLoaderModelOnly",
                       "inputs": {"model": ["1", 0], "lora_name": "a.safetensors", "strength_model": 1.0}},
                "11": advanced(["10", 0], ["4", 0], 0, switch, add_noise="enable", leftover="enable"),
                "5": advanced(["1", 0], ["11", 0], switch, STEPS, add_noise="disable", leftover="disable")})
        scheduled = base_graph({
            "20": {"class_type": "CreateHookLoraModelOnly", "inputs": {"lora_name": "a.safetensors",
                                                                       "strength_model": 1.0}},
            "22": {"class_type": "CreateHookKeyframe", "inputs": {"strength_mult": 1.0, "start_percent": 0.0}},
            "23": {"class_type": "CreateHookKeyframe", "inputs": {"strength_mult": 0.0, "start_percent": 0.5,
                                                                  "prev_hook_kf": ["22", 0]}},
            "24": {"class_type": "SetHookKeyframes", "inputs": {"hooks": ["20", 0], "hook_kf": ["23", 0]}},
            "21": hooked_pair(["24", 0]),
            "5": ksampler_node(["1", 0], ["21", 0], ["21", 1])})
        always = base_graph({
            "10": {"class_type": "LoraLoaderModelOnly",
                   "inputs": {"model": ["1", 0], "lora_name": "a.safetensors", "strength_model": 1.0}},
            "5": ksampler_node(["10", 0], ["2", 0], ["3", 0])})
        expected = latent_of(h, two_phase(3))
        got = latent_of(h, scheduled)
        # the two-phase run goes through VAE space once in between (scale 0.18215 and back): float rounding only
        torch.testing.assert_close(got, expected, atol=1e-4, rtol=1e-4)
        assert (got - latent_of(h, always)).abs().max() > 1e-2       # the second half really ran without it
        for wrong in (2, 4):                                          # and the switch is at that step, no other
            assert (got - latent_of(h, two_phase(wrong))).abs().max() > 1e-2, wrong
    finally:
        h.close()


def _routing_model_function(by_list: dict[int, object]):
    """A sampler model function that runs each chunk of a batch on the model of its cond list (0 positive,
    1 negative): the reference for hooks that differ between positive and negative."""
    functions = {li: ksampler.model_function(m) for li, m in by_list.items()}

    def fn(x, t, inputs):
        lists = inputs["transformer_options"]["cond_or_uncond"]
        n = len(x) // len(lists)
        outs = []
        for k, li in enumerate(lists):
            part = {key: (v[k * n:(k + 1) * n] if isinstance(v, torch.Tensor) else v) for key, v in inputs.items()}
            outs.append(functions[li](x[k * n:(k + 1) * n], t[k * n:(k + 1) * n], part))
        return torch.cat(outs)
    return fn


def test_different_hooks_on_positive_and_negative(files) -> None:
    _, ckpt, loras = files
    settings = MemorySettings(force_fp32=True)
    manager = ModelManager(settings)
    model, clip, _ = load_checkpoint_file(ckpt, manager)
    positive = conditioning_ops.encode_text(clip, "a cat")
    negative = conditioning_ops.encode_text(clip, "blurry")
    hook_a = hooks.lora_hook(loras["a.safetensors"], 1.0, 0.0, source="a")
    hook_b = hooks.lora_hook(loras["b.safetensors"], 0.7, 0.0, source="b")
    latent = {"samples": torch.zeros(1, 4, 8, 8)}
    run = dict(seed=3, steps=3, cfg=4.0, sampler_name="euler", scheduler="normal")
    got = ksampler.run_sampling(model, latent, hooks.with_hooks(positive, hook_a), hooks.with_hooks(negative, hook_b),
                                **run)["samples"]
    only_positive = ksampler.run_sampling(model, latent, hooks.with_hooks(positive, hook_a), negative, **run)["samples"]

    # reference: each list on its own LoRA-loaded copy of the checkpoint (separate managers: separate modules)
    refs = {}
    for li, (lora, strength) in {0: (loras["a.safetensors"], 1.0), 1: (loras["b.safetensors"], 0.7)}.items():
        other_manager = ModelManager(settings)
        base, _, _ = load_checkpoint_file(ckpt, other_manager)
        refs[li], _, _ = apply_lora(base, None, lora, strength, 0.0, "ref")
        other_manager.load_models_for([refs[li]])
    with torch.inference_mode():
        expected = sampling_driver.sample(
            _routing_model_function(refs), model.model_sampling, latent["samples"], conds_from_conditioning(positive),
            conds_from_conditioning(negative), latent_format=model.latent_format, **run)
    torch.testing.assert_close(got, expected.float(), atol=1e-5, rtol=1e-5)
    assert (got - only_positive).abs().max() > 1e-3


def test_set_clip_hooks_is_lora_loaders_clip_part(files) -> None:
    _, ckpt, loras = files
    manager = ModelManager(MemorySettings(force_fp32=True))
    model, clip, _ = load_checkpoint_file(ckpt, manager)
    group = hooks.lora_hook(loras["a.safetensors"], 1.0, 0.7, source="a")
    _, lora_clip, _ = apply_lora(model, clip, loras["a.safetensors"], 0.0, 0.7, "a")
    expected = conditioning_ops.encode_text(lora_clip, "a cat")
    plain = conditioning_ops.encode_text(clip, "a cat")

    hooked = conditioning_ops.encode_text(hooks.set_clip_hooks(clip, group, True, False), "a cat")
    assert len(hooked) == 1 and hooked[0][1]["hooks"] is group
    assert torch.equal(hooked[0][0], expected[0][0]) and not torch.equal(hooked[0][0], plain[0][0])
    assert torch.equal(hooked[0][1]["pooled_output"], expected[0][1]["pooled_output"])
    not_on_conds = conditioning_ops.encode_text(hooks.set_clip_hooks(clip, group, False, False), "a cat")
    assert "hooks" not in not_on_conds[0][1] and torch.equal(not_on_conds[0][0], expected[0][0])
    assert torch.equal(conditioning_ops.encode_text(clip, "a cat")[0][0], plain[0][0])   # the CLIP is clean again

    # schedule_clip: one encoding per keyframe range, limited to it
    frames = hooks.NO_KEYFRAMES.with_keyframe(hooks.HookKeyframe(1.0, 0.0)).with_keyframe(hooks.HookKeyframe(0.0, 0.5))
    scheduled = conditioning_ops.encode_text(hooks.set_clip_hooks(clip, group.with_keyframes(frames), True, True),
                                             "a cat")
    assert [(e[1]["clip_start_percent"], e[1]["clip_end_percent"]) for e in scheduled] == [(0.0, 0.5), (0.5, 1.0)]
    assert torch.equal(scheduled[0][0], expected[0][0]) and torch.equal(scheduled[1][0], plain[0][0])
    conds = conds_from_conditioning(hooks.with_timesteps(scheduled, (0.2, 0.9)))
    assert [(c.start_percent, c.end_percent) for c in conds] == [(0.2, 0.5), (0.5, 0.9)]


def test_hook_model_as_lora_moves_toward_the_other_checkpoint(tmp_path, files) -> None:
    from tests.diffusion.helpers import write_tiny
    _, ckpt, _ = files
    manager = ModelManager(MemorySettings(force_fp32=True))
    torch.manual_seed(11)
    other_path = write_tiny(tmp_path / "other.safetensors")
    model, _, _ = load_checkpoint_file(ckpt, manager)
    group = hooks.model_as_lora_hook_from_file(other_path, manager, 0.25, 0.0)
    patched = hooks.model_patches(model, group, [1.0])
    manager.load_models_for([patched])
    key = "input_blocks.1.1.transformer_blocks.0.attn1.to_q.weight"
    got = patched.module.state_dict()[key].clone()
    other = group.hooks[0].model_source
    manager.unload(patched)
    base = model.shared.weights.home[key].float()
    torch.testing.assert_close(got, base + 0.25 * (other.shared.weights.home[key].float() - base))


def test_model_compute_dtype_in_a_graph(tmp_path, files) -> None:
    """The UNet computes in bf16 (what its output convolution is given) on the fp32-loaded model, and one
    step's latent is within bf16 rounding of fp32's (over more steps a random-weight model amplifies any
    rounding: tests/diffusion/test_hook_values.py checks the cast against a bf16 copy of the module)."""
    def with_dtype(dtype: str, steps: int = 1) -> dict:
        return base_graph({"10": {"class_type": "ModelComputeDtype", "inputs": {"model": ["1", 0], "dtype": dtype}},
                           "5": ksampler_node(["10", 0], ["2", 0], ["3", 0], steps=steps)})
    h = make_harness(tmp_path, files)
    try:
        model, _, _ = load_checkpoint_file(h.folders.find("checkpoints", CKPT), h.services.model_manager())
        seen = []
        hook = model.module.out[2].register_forward_pre_hook(lambda m, args: seen.append(args[0].dtype))
        plain = latent_of(h, base_graph({"5": ksampler_node(["1", 0], ["2", 0], ["3", 0], steps=1)}))
        assert set(seen) == {torch.float32}
        seen.clear()
        bf16 = latent_of(h, with_dtype("bf16"))
        assert set(seen) == {torch.bfloat16} and bf16.dtype == torch.float32
        hook.remove()
        assert not torch.equal(bf16, plain)
        assert float((bf16 - plain).abs().max()) < 0.1 * float(plain.abs().max())      # (5 % measured: cfg 5)
        # fp32 runs eager, convolutions not prepacked: float rounding (values up to ~250 here)
        torch.testing.assert_close(latent_of(h, with_dtype("fp32")), plain, atol=2e-3, rtol=1e-4)
        assert torch.equal(latent_of(h, with_dtype("default")), plain)
        assert model.module.compute_dtype is None and next(model.module.parameters()).dtype == torch.float32
    finally:
        h.close()
