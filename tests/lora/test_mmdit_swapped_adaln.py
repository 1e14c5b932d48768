"""LoRAs on the (scale, shift) adaLNs of an MM-DiT: the pre-only last context block's `norm1_context.linear`
and the final layer's `norm_out.linear` are diffusers' AdaLayerNormContinuous, whose output halves are in
the other order from the single-file `adaLN_modulation.1` (shift, scale). The reference is diffusers'
SD3Transformer2DModel converted from the same weights by diffusers' own single-file converter, with each
LoRA delta added to its weight there; the kohya name (single-file layout) applies unswapped."""
from __future__ import annotations

import pytest
import torch

from models.lora.adapters import SwapHalves
from models.lora.keys import lora_names_for, module_weight_shapes
from models.lora.loader import HalvesSwapped, build_patches
from models.mmdit import MMDiT, MMDiTConfig
from tests.models.test_mmdit import ours, random_mmdit_state, reference

CONFIG = MMDiTConfig(depth=3, hidden_size=128, num_heads=2, context_in_dim=64, adm_in_dim=48,
                     pos_embed_max_size=16, qk_norm=True, dual_attention_blocks=(0,))
RANK = 4
LAST = f"transformer_blocks.{CONFIG.depth - 1}.norm1_context.linear"
D = CONFIG.hidden_size


def lora_pair(g: torch.Generator, rows: int) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.randn(RANK, D, generator=g) * 0.2, torch.randn(rows, RANK, generator=g) * 0.2


def peft_lora(prefix: str = "transformer.") -> dict[str, torch.Tensor]:
    """Rank-4 LoRAs on both swapped adaLNs and on an ordinary (6-way) one, with a full diff + bias diff."""
    g = torch.Generator().manual_seed(0)
    out = {}
    for module, rows in ((LAST, 2 * D), ("norm_out.linear", 2 * D), ("transformer_blocks.0.norm1_context.linear", 6 * D)):
        down, up = lora_pair(g, rows)
        out[f"{prefix}{module}.lora_A.weight"], out[f"{prefix}{module}.lora_B.weight"] = down, up
    return out


def run(model, x, t, ctx, y):
    return model(x, t, ctx, y) if isinstance(model, MMDiT) else \
        model(hidden_states=x, encoder_hidden_states=ctx, pooled_projections=y, timestep=t).sample


def inputs():
    g = torch.Generator().manual_seed(1)
    return (torch.randn(1, 16, 8, 8, generator=g), torch.tensor([700.0]), torch.randn(1, 6, CONFIG.context_in_dim, generator=g),
            torch.randn(1, CONFIG.adm_in_dim, generator=g))


def patched(state: dict, lora: dict) -> MMDiT:
    model = ours(CONFIG, state)
    result = build_patches(lora, lora_names_for(model), module_weight_shapes(model))
    assert not result.unmatched and not result.problems, (result.unmatched, result.problems)
    assert result.used_keys == set(lora)
    with torch.no_grad():
        params = dict(model.named_parameters())
        for key, patch in result.patches.items():
            params[key].copy_(patch(params[key].float()))
    return model


def test_the_swapped_names_are_mapped():
    with torch.device("meta"):
        names = lora_names_for(MMDiT(CONFIG))
    last = f"joint_blocks.{CONFIG.depth - 1}.context_block.adaLN_modulation.1.weight"
    assert names["transformer." + LAST] == names["base_model.model." + LAST] == HalvesSwapped(last)
    assert names["transformer.norm_out.linear"] == HalvesSwapped("final_layer.adaLN_modulation.1.weight")
    assert names["transformer.transformer_blocks.0.norm1_context.linear"] == \
        "joint_blocks.0.context_block.adaLN_modulation.1.weight"              # 6-way: same order, no swap
    assert names[f"lora_unet_joint_blocks_{CONFIG.depth - 1}_context_block_adaLN_modulation_1"] == last


@pytest.mark.parametrize("prefix", ["transformer.", "base_model.model."])
def test_peft_lora_on_the_swapped_adalns_matches_diffusers(prefix):
    state = random_mmdit_state(CONFIG)
    lora = peft_lora(prefix)
    with torch.no_grad():
        got = run(patched(state, lora), *inputs())
        ref = reference(CONFIG, state)
        params = dict(ref.named_parameters())
        for module in (LAST, "norm_out.linear", "transformer_blocks.0.norm1_context.linear"):
            params[f"{module}.weight"].add_(lora[f"{prefix}{module}.lora_B.weight"] @ lora[f"{prefix}{module}.lora_A.weight"])
        want = run(ref, *inputs())
        base = run(ours(CONFIG, state), *inputs())
    assert not torch.allclose(got, base, atol=1e-3)
    torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)


def test_full_diff_with_bias_on_norm_out_matches_diffusers():
    state = random_mmdit_state(CONFIG)
    g = torch.Generator().manual_seed(2)
    diff, diff_b = torch.randn(2 * D, D, generator=g) * 0.05, torch.randn(2 * D, generator=g) * 0.5
    lora = {"transformer.norm_out.linear.diff": diff, "transformer.norm_out.linear.diff_b": diff_b}
    with torch.no_grad():
        got = run(patched(state, lora), *inputs())
        ref = reference(CONFIG, state)
        ref.norm_out.linear.weight.add_(diff)
        ref.norm_out.linear.bias.add_(diff_b)
        want = run(ref, *inputs())
    torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)


def test_kohya_single_file_name_equals_the_diffusers_lora_with_its_halves_swapped():
    state = random_mmdit_state(CONFIG)
    lora = peft_lora()
    down, up = lora[f"transformer.{LAST}.lora_A.weight"], lora[f"transformer.{LAST}.lora_B.weight"]
    kohya = {f"lora_unet_joint_blocks_{CONFIG.depth - 1}_context_block_adaLN_modulation_1.lora_down.weight": down,
             f"lora_unet_joint_blocks_{CONFIG.depth - 1}_context_block_adaLN_modulation_1.lora_up.weight":
                 torch.cat([up[D:], up[:D]])}
    with torch.no_grad():
        a = run(patched(state, {k: v for k, v in lora.items() if LAST in k}), *inputs())
        b = run(patched(state, kohya), *inputs())
    torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-6)


def test_swapped_patch_adds_in_place_like_its_call_and_keeps_dora():
    state = random_mmdit_state(CONFIG)
    model = ours(CONFIG, state)
    key = f"joint_blocks.{CONFIG.depth - 1}.context_block.adaLN_modulation.1.weight"
    lora = {k: v for k, v in peft_lora().items() if LAST in k}
    patch = build_patches(lora, lora_names_for(model), module_weight_shapes(model)).patches[key]
    assert isinstance(patch, SwapHalves)
    w = state[key].clone()
    merged = patch(w)
    assert torch.equal(w, state[key])                                             # not in place
    in_place = w.clone()
    patch.add_into(in_place, 0.5)
    torch.testing.assert_close(in_place, w + 0.5 * (merged - w))
    # DoRA (magnitude per output row): not additive, so it goes through __call__; rows follow the swap
    magnitude = torch.rand(2 * D) + 0.5
    dora = build_patches({**lora, f"transformer.{LAST}.lora_magnitude_vector": magnitude}, lora_names_for(model),
                         module_weight_shapes(model)).patches[key]
    assert dora.add_into is None
    out = dora(w)
    torch.testing.assert_close(out.norm(dim=1), torch.cat([magnitude[D:], magnitude[:D]]), atol=1e-4, rtol=1e-4)
