"""LoRA-like patches of every format on a tiny SD1 checkpoint, through the real handle / model-manager path.

Random files of each format (tests/lora/makers.py) are applied with `models.lora.apply_lora` to
handles over the checkpoint's UNet and text encoder; the model manager merges them as it loads the
weights. Each patched weight is compared with the formula computed independently in float64
(W + strength * alpha/rank * up @ down, the LoHa / LoKr products, DoRA's rescaling), every other
weight must be the very same tensor, and after unloading the base weights are bit-identical.
"""
from __future__ import annotations

import logging

import pytest
import torch

from model_management import MemorySettings, ModelHandle, ModelManager, VramMode
from models.lora import apply_lora, build_patches, lora_names_for, module_weight_shapes
from tests.lora import makers

# kohya (diffusers-style) module names of the tiny SD1 UNet, with the LDM weight they must reach
UNET_TARGETS = {
    "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q":
        "input_blocks.1.1.transformer_blocks.0.attn1.to_q.weight",
    "lora_unet_down_blocks_1_attentions_0_transformer_blocks_0_attn2_to_k":
        "input_blocks.3.1.transformer_blocks.0.attn2.to_k.weight",
    "lora_unet_mid_block_attentions_0_transformer_blocks_0_ff_net_0_proj":
        "middle_block.1.transformer_blocks.0.ff.net.0.proj.weight",
    "lora_unet_up_blocks_1_attentions_1_proj_out": "output_blocks.3.1.proj_out.weight",   # 1x1 conv (SD1)
    "lora_unet_down_blocks_0_resnets_0_conv1": "input_blocks.1.0.in_layers.2.weight",     # 3x3 conv (LoCon)
    "lora_unet_up_blocks_0_upsamplers_0_conv": "output_blocks.1.1.conv.weight",           # 3x3 conv
}
TE_TARGETS = {
    "lora_te_text_model_encoder_layers_0_self_attn_q_proj": "model.text_model.encoder.layers.0.self_attn.q_proj.weight",
    "lora_te_text_model_encoder_layers_1_mlp_fc1": "model.text_model.encoder.layers.1.mlp.fc1.weight",
}


def snapshot(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def assert_bit_identical(module: torch.nn.Module, reference: dict[str, torch.Tensor]) -> None:
    state = module.state_dict()
    for key, value in reference.items():
        assert torch.equal(state[key], value) and state[key].dtype == value.dtype, key


def weights_as_loaded(manager: ModelManager, handle: ModelHandle) -> dict[str, torch.Tensor]:
    manager.load_models_for([handle])
    state = {k: v.detach().clone() for k, v in handle.module.state_dict().items()}
    manager.unload(handle)
    return state


def targets_of(module: torch.nn.Module, table: dict[str, str], pick=None) -> dict[str, tuple[int, ...]]:
    shapes = module_weight_shapes(module)
    return {name: shapes[key] for name, key in table.items() if pick is None or pick(shapes[key])}


class Model:
    """A MODEL / CLIP stand-in: a handle is what the loaders hand around (clone() included)."""


@pytest.fixture
def sd1(tiny_models):
    ckpt = tiny_models("sd1")
    return ModelHandle(ckpt.unet, name="unet"), ModelHandle(ckpt.text_encoders[0], name="clip")


@pytest.fixture
def manager():
    return ModelManager(MemorySettings(device="cpu"))


@pytest.mark.parametrize("strength", [1.0, 0.7, -1.3])
@pytest.mark.parametrize("is_mid", [False, True], ids=["locon", "locon_mid"])
def test_kohya_lora_gives_w_plus_strength_alpha_over_rank_up_down(sd1, manager, strength, is_mid) -> None:
    unet, _ = sd1
    base = snapshot(unet.module)
    base_ptrs = {k: v.data_ptr() for k, v in unet.module.state_dict().items()}
    targets = targets_of(unet.module, UNET_TARGETS)
    lora = makers.kohya_lora(targets, rank=4, alpha=2.0, mid=is_mid)
    model, _, report = apply_lora(unet, None, lora, strength, 0.0, "test.safetensors")
    assert report.unmatched == [] and report.parts["model"].problems == []
    assert set(model.patches) == set(UNET_TARGETS.values()) and unet.patches == {}     # the input is untouched

    loaded = weights_as_loaded(manager, model)
    for name, key in UNET_TARGETS.items():
        expected = base[key].double() + strength * makers.expected_delta_lora(lora, name, targets[name])
        torch.testing.assert_close(loaded[key].double(), expected, atol=1e-5, rtol=1e-5)
    for key in base.keys() - set(UNET_TARGETS.values()):
        assert torch.equal(loaded[key], base[key]), key
    assert_bit_identical(unet.module, base)
    assert {k: v.data_ptr() for k, v in unet.module.state_dict().items()} == base_ptrs


def test_text_encoder_part_of_a_kohya_lora_patches_the_clip(sd1, manager) -> None:
    unet, clip = sd1
    base = snapshot(clip.module)
    targets = targets_of(clip.module, TE_TARGETS)
    lora = {**makers.kohya_lora(targets_of(unet.module, UNET_TARGETS)), **makers.kohya_lora(targets)}
    model, new_clip, report = apply_lora(unet, clip, lora, 1.0, 0.5, "test.safetensors")
    assert report.unmatched == []
    assert set(new_clip.patches) == set(TE_TARGETS.values())
    assert set(model.patches) == set(UNET_TARGETS.values())
    loaded = weights_as_loaded(manager, new_clip)
    for name, key in TE_TARGETS.items():
        expected = base[key].double() + 0.5 * makers.expected_delta_lora(lora, name, targets[name])
        torch.testing.assert_close(loaded[key].double(), expected, atol=1e-5, rtol=1e-5)
    assert_bit_identical(clip.module, base)


def _diffusers_name(kohya: str, prefix: str) -> str:
    table = {
        "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q":
            "down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q",
        "lora_unet_down_blocks_1_attentions_0_transformer_blocks_0_attn2_to_k":
            "down_blocks.1.attentions.0.transformer_blocks.0.attn2.to_k",
        "lora_unet_mid_block_attentions_0_transformer_blocks_0_ff_net_0_proj":
            "mid_block.attentions.0.transformer_blocks.0.ff.net.0.proj",
        "lora_unet_up_blocks_1_attentions_1_proj_out": "up_blocks.1.attentions.1.proj_out",
        "lora_unet_down_blocks_0_resnets_0_conv1": "down_blocks.0.resnets.0.conv1",
        "lora_unet_up_blocks_0_upsamplers_0_conv": "up_blocks.0.upsamplers.0.conv",
    }
    return prefix + table[kohya]


@pytest.mark.parametrize("style, prefix", [("peft", "unet."), ("peft", "base_model.model."),
                                           ("diffusers", "unet."), ("diffusers", "")])
def test_diffusers_and_peft_loras(sd1, manager, style, prefix) -> None:
    unet, _ = sd1
    base = snapshot(unet.module)
    shapes = targets_of(unet.module, UNET_TARGETS)
    targets = {_diffusers_name(k, prefix): s for k, s in shapes.items()}
    lora = makers.peft_lora(targets, rank=3, style=style)
    model, _, report = apply_lora(unet, None, lora, 0.8, 0.0, "peft.safetensors")
    assert report.unmatched == []
    loaded = weights_as_loaded(manager, model)
    for kohya, key in UNET_TARGETS.items():
        name = _diffusers_name(kohya, prefix)
        expected = base[key].double() + 0.8 * makers.expected_delta_peft(lora, name, shapes[kohya], style)
        torch.testing.assert_close(loaded[key].double(), expected, atol=1e-5, rtol=1e-5)


def test_old_diffusers_attention_processor_lora(sd1, manager) -> None:
    unet, _ = sd1
    base = snapshot(unet.module)
    name = "unet.down_blocks.0.attentions.0.transformer_blocks.0.attn1.processor.to_out"
    key = "input_blocks.1.1.transformer_blocks.0.attn1.to_out.0.weight"
    lora = makers.peft_lora({name: tuple(base[key].shape)}, style="processor")
    model, _, report = apply_lora(unet, None, lora, 1.0, 0.0, "old.bin")
    assert report.unmatched == [] and set(model.patches) == {key}
    loaded = weights_as_loaded(manager, model)
    expected = base[key].double() + makers.expected_delta_peft(lora, name, tuple(base[key].shape), "processor")
    torch.testing.assert_close(loaded[key].double(), expected, atol=1e-5, rtol=1e-5)


FORMATS = {
    "loha": (lambda t: makers.loha(t), makers.expected_delta_loha, None),
    "loha_tucker": (lambda t: makers.loha(t, tucker=True), makers.expected_delta_loha, lambda s: len(s) == 4 and s[2] > 1),
    "lokr": (lambda t: makers.lokr(t), makers.expected_delta_lokr, None),
    "lokr_both_factored": (lambda t: makers.lokr(t, mode="both_factored"), makers.expected_delta_lokr, None),
    "lokr_full": (lambda t: makers.lokr(t, mode="full"), makers.expected_delta_lokr, None),
    "lokr_tucker": (lambda t: makers.lokr(t, mode="tucker"), makers.expected_delta_lokr, lambda s: len(s) == 4 and s[2] > 1),
}


@pytest.mark.parametrize("fmt", sorted(FORMATS))
@pytest.mark.parametrize("strength", [1.0, -0.6])
def test_lycoris_formats_give_their_products(sd1, manager, fmt, strength) -> None:
    unet, _ = sd1
    make, expected_delta, pick = FORMATS[fmt]
    base = snapshot(unet.module)
    targets = targets_of(unet.module, UNET_TARGETS, pick)
    assert targets
    lora = make(targets)
    model, _, report = apply_lora(unet, None, lora, strength, 0.0, f"{fmt}.safetensors")
    assert report.unmatched == [] and report.parts["model"].problems == []
    assert report.parts["model"].formats[fmt.split("_")[0]] == len(targets)
    loaded = weights_as_loaded(manager, model)
    for name, shape in targets.items():
        key = UNET_TARGETS[name]
        expected = base[key].double() + strength * expected_delta(lora, name, shape)
        torch.testing.assert_close(loaded[key].double(), expected, atol=1e-5, rtol=1e-5)
    assert_bit_identical(unet.module, base)


def test_full_difference_patches_weight_and_bias(sd1, manager) -> None:
    unet, _ = sd1
    base = snapshot(unet.module)
    name, key = "lora_unet_down_blocks_0_resnets_0_conv1", "input_blocks.1.0.in_layers.2.weight"
    bias_key = key.replace(".weight", ".bias")
    lora = {f"{name}.diff": torch.randn(base[key].shape), f"{name}.diff_b": torch.randn(base[bias_key].shape)}
    model, _, report = apply_lora(unet, None, lora, 0.25, 0.0, "full.safetensors")
    assert set(model.patches) == {key, bias_key} and report.unmatched == []
    loaded = weights_as_loaded(manager, model)
    torch.testing.assert_close(loaded[key], base[key] + 0.25 * lora[f"{name}.diff"])
    torch.testing.assert_close(loaded[bias_key], base[bias_key] + 0.25 * lora[f"{name}.diff_b"])


def _dora_reference(weight: torch.Tensor, delta: torch.Tensor, magnitude: torch.Tensor, on_output: bool) -> torch.Tensor:
    """DoRA (Liu et al. 2024, eq. 5): m * (W + dW) / ||W + dW||, column norms computed one at a time."""
    adapted = (weight + delta).double()
    out = torch.empty_like(adapted)
    flat_m = magnitude.double().reshape(-1)
    for c in range(adapted.shape[0] if on_output else adapted.shape[1]):
        part = adapted[c] if on_output else adapted[:, c]
        norm = torch.sqrt((part ** 2).sum()) + torch.finfo(torch.float32).eps
        if on_output:
            out[c] = part * flat_m[c] / norm
        else:
            out[:, c] = part * flat_m[c] / norm
    return out


@pytest.mark.parametrize("on_output", [True, False], ids=["peft_magnitude", "lycoris_dora_scale"])
@pytest.mark.parametrize("strength", [1.0, 0.4])
def test_dora_rescales_the_adapted_weight(sd1, manager, on_output, strength) -> None:
    unet, _ = sd1
    base = snapshot(unet.module)
    targets = targets_of(unet.module, UNET_TARGETS)
    lora = makers.kohya_lora(targets, alpha=2.0)
    for name, shape in targets.items():
        if on_output:
            lora[f"{name}.lora_magnitude_vector"] = torch.rand(shape[0]) + 0.5          # PEFT: [out]
        else:
            lora[f"{name}.dora_scale"] = (torch.rand(shape[1]) + 0.5).reshape(1, shape[1], *([1] * (len(shape) - 2)))
    model, _, report = apply_lora(unet, None, lora, strength, 0.0, "dora.safetensors")
    assert report.unmatched == [] and report.parts["model"].problems == []
    loaded = weights_as_loaded(manager, model)
    for name, shape in targets.items():
        key = UNET_TARGETS[name]
        magnitude = lora[f"{name}.lora_magnitude_vector" if on_output else f"{name}.dora_scale"]
        dora = _dora_reference(base[key], makers.expected_delta_lora(lora, name, shape), magnitude, on_output)
        expected = base[key].double() + strength * (dora - base[key].double())
        torch.testing.assert_close(loaded[key].double(), expected, atol=1e-5, rtol=1e-5)


def _forward(manager: ModelManager, handle: ModelHandle) -> torch.Tensor:
    torch.manual_seed(1)
    x, t, context = torch.randn(1, 4, 16, 16), torch.tensor([500.0]), torch.randn(1, 7, 32)
    manager.load_models_for([handle])
    try:
        with torch.no_grad():
            return handle.module(x, t, context)
    finally:
        manager.unload(handle)          # the module is shared by every test: leave its base weights in place


def test_strength_zero_is_bit_identical_to_no_lora(sd1, manager) -> None:
    unet, _ = sd1
    lora = makers.kohya_lora(targets_of(unet.module, UNET_TARGETS))
    plain = _forward(manager, unet)
    zero, _, _ = apply_lora(unet, None, lora, 0.0, 0.0, "zero.safetensors")
    assert torch.equal(_forward(manager, zero), plain)
    # and recorded at strength 0 (the handle's lerp path), still bit-identical
    recorded = unet.clone()
    names = lora_names_for(unet.module)
    recorded.add_patches(build_patches(lora, names, module_weight_shapes(unet.module)).patches, 0.0, "zero")
    assert recorded.patches and torch.equal(_forward(manager, recorded), plain)
    one, _, _ = apply_lora(unet, None, lora, 1.0, 0.0, "one.safetensors")
    assert not torch.equal(_forward(manager, one), plain)


def test_stacked_loras_add_up_in_order(sd1, manager) -> None:
    unet, _ = sd1
    base = snapshot(unet.module)
    targets = targets_of(unet.module, UNET_TARGETS)
    first, second = makers.kohya_lora(targets, rank=2), makers.loha(targets)
    a, _, _ = apply_lora(unet, None, first, 0.5, 0.0, "a")
    ab, _, _ = apply_lora(a, None, second, -2.0, 0.0, "b")
    loaded = weights_as_loaded(manager, ab)
    for name, shape in targets.items():
        key = UNET_TARGETS[name]
        expected = (base[key].double() + 0.5 * makers.expected_delta_lora(first, name, shape)
                    - 2.0 * makers.expected_delta_loha(second, name, shape))
        torch.testing.assert_close(loaded[key].double(), expected, atol=1e-5, rtol=1e-5)
    assert len(a.patches[UNET_TARGETS[next(iter(targets))]]) == 1     # the first clone kept only its own


def test_two_graphs_on_one_checkpoint_match_each_run_alone(sd1, manager) -> None:
    unet, _ = sd1
    targets = targets_of(unet.module, UNET_TARGETS)
    graph_a, _, _ = apply_lora(unet, None, makers.kohya_lora(targets, rank=2), 1.0, 0.0, "a")
    graph_b, _, _ = apply_lora(unet, None, makers.lokr(targets), 0.7, 0.0, "b")
    alone_a = _forward(ModelManager(MemorySettings(device="cpu")), graph_a)
    alone_b = _forward(ModelManager(MemorySettings(device="cpu")), graph_b)
    plain = _forward(ModelManager(MemorySettings(device="cpu")), unet)
    for handle, expected in [(graph_a, alone_a), (graph_b, alone_b), (unet, plain), (graph_a, alone_a),
                             (graph_b, alone_b)]:
        assert torch.equal(_forward(manager, handle), expected)
    assert not torch.equal(alone_a, alone_b)


def test_streamed_layers_get_their_patches_on_the_fly(sd1) -> None:
    unet, _ = sd1
    lora = makers.kohya_lora(targets_of(unet.module, UNET_TARGETS), mid=True)
    patched, _, _ = apply_lora(unet, None, lora, 0.9, 0.0, "streamed")
    full = _forward(ModelManager(MemorySettings(device="cpu")), patched)
    budget = unet.shared.weights.total_bytes() // 3
    streaming = ModelManager(MemorySettings(vram_mode=VramMode.NO, device="cpu", vram_budget_bytes=budget))
    streaming.load_models_for([patched])
    assert streaming.record_of(patched).resident_keys == set()          # everything is streamed
    assert torch.equal(_forward(streaming, patched), full)


def test_unknown_keys_are_reported_by_name(sd1, caplog) -> None:
    unet, clip = sd1
    lora = makers.kohya_lora(targets_of(unet.module, UNET_TARGETS))
    lora["lora_unet_no_such_block_proj.lora_up.weight"] = torch.zeros(4, 4)
    lora["lora_unet_no_such_block_proj.lora_down.weight"] = torch.zeros(4, 4)
    lora["lora_unet_down_blocks_0_resnets_0_conv1.oft_blocks"] = torch.zeros(4, 4)     # a format we do not read
    lora["something_else_entirely"] = torch.zeros(1)
    with caplog.at_level(logging.WARNING, logger="plexus.lora"):
        model, _, report = apply_lora(unet, clip, lora, 1.0, 1.0, "odd.safetensors")
    assert report.unmatched == sorted(["lora_unet_no_such_block_proj.lora_up.weight",
                                       "lora_unet_no_such_block_proj.lora_down.weight",
                                       "lora_unet_down_blocks_0_resnets_0_conv1.oft_blocks",
                                       "something_else_entirely"])
    assert set(model.patches) == set(UNET_TARGETS.values())           # the rest still applies
    assert "lora_unet_no_such_block_proj.lora_up.weight" in caplog.text and "odd.safetensors" in caplog.text


def test_model_only_load_sets_text_encoder_keys_aside(sd1) -> None:
    unet, clip = sd1
    lora = {**makers.kohya_lora(targets_of(unet.module, UNET_TARGETS)),
            **makers.kohya_lora(targets_of(clip.module, TE_TARGETS))}
    _, _, report = apply_lora(unet, None, lora, 1.0, 0.0, "both.safetensors")
    assert report.unmatched == [] and len(report.skipped_text_encoder) == 2 * 3


def test_a_lora_for_another_size_is_reported_not_merged(sd1) -> None:
    unet, _ = sd1
    lora = makers.kohya_lora({"lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q": (64, 64)})
    model, _, report = apply_lora(unet, None, lora, 1.0, 0.0, "sdxl.safetensors")
    assert model.patches == {} and len(report.parts["model"].problems) == 1
    assert "shape" in report.parts["model"].problems[0]


@pytest.mark.parametrize("fmt", ["lora", "locon_mid", "loha", "lokr", "diff"])
def test_the_in_place_path_and_the_plain_callable_agree(fmt) -> None:
    from models.lora import Diff, LoHa, LoKr, LoRA
    shape = (8, 6, 3, 3)
    r = lambda *s: torch.randn(*s) * 0.3
    adapter = {"lora": LoRA(up=r(8, 2, 1, 1), down=r(2, 6, 3, 3), alpha=1.0),
               "locon_mid": LoRA(up=r(8, 2, 1, 1), down=r(2, 6, 1, 1), mid=r(2, 2, 3, 3), alpha=3.0),
               "loha": LoHa(w1a=r(8, 2), w1b=r(2, 54), w2a=r(8, 2), w2b=r(2, 54), alpha=1.0),
               "lokr": LoKr(w1=r(2, 2), w2a=r(4, 2), w2b=r(2, 27), alpha=2.0),
               "diff": Diff(diff=r(*shape))}[fmt]
    weight = torch.randn(shape)
    in_place = weight.clone()
    adapter.add_into(in_place, -0.7)
    torch.testing.assert_close(in_place, torch.lerp(weight, adapter(weight), -0.7))
    torch.testing.assert_close(adapter(weight), weight + adapter.delta(weight).reshape(shape))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32])
@pytest.mark.parametrize("shape", [(37, 20), (13, 6, 1, 1), (8, 6, 3, 3)])
def test_the_chunked_merge_equals_the_whole_weight_formula(dtype, shape) -> None:
    from model_management import WeightPatch
    from model_management.handle import _apply_by_rows
    from models.lora import LoRA
    gen = torch.Generator().manual_seed(0)
    r = lambda *s: (torch.randn(*s, generator=gen) * 0.3).to(dtype)
    kernel = shape[2:]
    first = LoRA(up=r(shape[0], 3, *(1,) * len(kernel)), down=r(3, shape[1], *kernel), alpha=1.5)
    second = LoRA(up=r(shape[0], 2, *(1,) * len(kernel)), down=r(2, shape[1], *kernel))
    weight = r(*shape)
    base = weight.clone()
    patches = (WeightPatch(first, 0.8), WeightPatch(second, -1.3))
    expected = weight.float().clone()                              # the unchunked formula, in order
    for patch in patches:
        patch.fn.add_into(expected, patch.strength)
    expected = expected.to(dtype)
    row_bytes = 4 * weight[0].numel()
    for chunk_bytes in (row_bytes, 3 * row_bytes, 1 << 20):        # one row, ragged blocks, one block
        merged = _apply_by_rows(weight, patches, dtype, chunk_bytes)
        assert merged.dtype == dtype and merged.shape == weight.shape
        torch.testing.assert_close(merged, expected)                # equal up to fp32 rounding
        zero = _apply_by_rows(weight, (WeightPatch(first, 0.0), WeightPatch(second, 0.0)), dtype, chunk_bytes)
        assert torch.equal(zero, weight) and zero.data_ptr() != weight.data_ptr()
        as_fp32 = _apply_by_rows(weight, patches, torch.float32, chunk_bytes)   # fp32 out: no scratch
        torch.testing.assert_close(as_fp32.to(dtype), expected)
    assert torch.equal(weight, base)                                # the base is never written


def test_apply_patches_takes_the_chunked_path_only_when_every_patch_has_rows() -> None:
    from model_management import WeightPatch, apply_patches
    from models.lora import LoRA
    weight = torch.randn(6, 4).half()
    lora = LoRA(up=torch.randn(6, 2), down=torch.randn(2, 4))
    assert lora.row_adder is not None
    assert LoRA(up=torch.randn(6, 2), down=torch.randn(2, 4), dora_scale=torch.ones(6)).row_adder is None
    mixed = apply_patches(weight, (WeightPatch(lora, 0.5), WeightPatch(lambda w: w * 2.0, 1.0)))
    expected = weight.float()
    lora.add_into(expected, 0.5)
    assert torch.equal(mixed, (expected * 2.0).half())              # order kept on the whole-weight path
    torch.testing.assert_close(apply_patches(weight, (WeightPatch(lora, 0.5),)), expected.half())
