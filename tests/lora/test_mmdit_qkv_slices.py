"""diffusers / PEFT SD3 LoRAs that address slices of a fused weight (`attn.to_q` / `to_k` / `to_v` are row
thirds of the single-file `attn.qkv`; `add_{q,k,v}_proj` of the context block's, `attn2.to_*` of MM-DiT-X's
second attention): the reference is diffusers' SD3Transformer2DModel, converted from the same weights by
diffusers' own single-file converter, with each LoRA delta added to its separate to_q / to_k / to_v weight."""
from __future__ import annotations

import pytest
import torch

from models.lora.adapters import RowBlocks
from models.lora.keys import lora_names_for, module_weight_shapes
from models.lora.loader import WeightSlice, build_patches
from models.mmdit import MMDiTConfig
from tests.models.test_mmdit import ours, random_mmdit_state, reference

CONFIG = MMDiTConfig(depth=2, hidden_size=128, num_heads=2, context_in_dim=64, adm_in_dim=48,
                     pos_embed_max_size=16, qk_norm=True, dual_attention_blocks=(0,))
RANK = 4
# diffusers module -> its input width (every one here outputs hidden_size rows)
MODULES = ["transformer_blocks.0.attn.to_q", "transformer_blocks.0.attn.to_k", "transformer_blocks.0.attn.to_v",
           "transformer_blocks.0.attn.add_q_proj", "transformer_blocks.0.attn.add_v_proj",
           "transformer_blocks.0.attn2.to_k", "transformer_blocks.1.attn.add_k_proj",   # the pre-only block's
           "transformer_blocks.1.attn.to_out.0"]                                        # a whole weight too


def peft_lora(seed: int = 0, prefix: str = "transformer.") -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    d = CONFIG.hidden_size
    out = {}
    for m in MODULES:
        out[f"{prefix}{m}.lora_A.weight"] = torch.randn(RANK, d, generator=g) * 0.2
        out[f"{prefix}{m}.lora_B.weight"] = torch.randn(d, RANK, generator=g) * 0.2
    return out


def test_slice_names_cover_every_fused_qkv():
    from models.mmdit import MMDiT
    with torch.device("meta"):
        model = MMDiT(CONFIG)
    names = lora_names_for(model)
    d = CONFIG.hidden_size
    assert names["transformer.transformer_blocks.0.attn.to_k"] == WeightSlice("joint_blocks.0.x_block.attn.qkv.weight", d, d)
    assert names["transformer_blocks.1.attn.add_v_proj"] == \
        WeightSlice("joint_blocks.1.context_block.attn.qkv.weight", 2 * d, d)
    assert names["base_model.model.transformer_blocks.0.attn2.to_q"] == \
        WeightSlice("joint_blocks.0.x_block.attn2.qkv.weight", 0, d)
    assert "transformer_blocks.1.attn2.to_q" not in names                  # block 1 has no dual attention


@pytest.mark.parametrize("prefix", ["transformer.", "base_model.model."])
def test_peft_qkv_slices_match_diffusers_with_the_deltas_on_its_split_weights(prefix):
    state = random_mmdit_state(CONFIG)
    model = ours(CONFIG, state)
    lora = peft_lora(prefix=prefix)
    result = build_patches(lora, lora_names_for(model), module_weight_shapes(model))
    assert not result.unmatched and not result.problems
    assert result.used_keys == set(lora)
    fused = result.patches["joint_blocks.0.x_block.attn.qkv.weight"]
    assert isinstance(fused, RowBlocks) and len(fused.blocks) == 3
    with torch.no_grad():
        params = dict(model.named_parameters())
        for key, patch in result.patches.items():
            params[key].copy_(patch(params[key].float()))
        ref = reference(CONFIG, state)
        ref_params = dict(ref.named_parameters())
        for m in MODULES:
            delta = lora[f"{prefix}{m}.lora_B.weight"] @ lora[f"{prefix}{m}.lora_A.weight"]    # PEFT: scale 1
            ref_params[f"{m}.weight"].add_(delta)
        g = torch.Generator().manual_seed(1)
        x = torch.randn(1, 16, 8, 8, generator=g)
        ctx = torch.randn(1, 6, CONFIG.context_in_dim, generator=g)
        y = torch.randn(1, CONFIG.adm_in_dim, generator=g)
        t = torch.tensor([700.0])
        got = model(x, t, ctx, y)
        want = ref(hidden_states=x, encoder_hidden_states=ctx, pooled_projections=y, timestep=t).sample
        base = ours(CONFIG, state)(x, t, ctx, y)
    assert not torch.allclose(got, base, atol=1e-3)
    torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)


def test_row_blocks_add_in_place_and_blend_like_a_whole_patch():
    d = CONFIG.hidden_size
    state = random_mmdit_state(CONFIG)
    model = ours(CONFIG, state)
    result = build_patches(peft_lora(), lora_names_for(model), module_weight_shapes(model))
    patch = result.patches["joint_blocks.0.x_block.attn.qkv.weight"]
    w = state["joint_blocks.0.x_block.attn.qkv.weight"].clone()
    merged = patch(w)
    assert all(not torch.equal(merged[i * d:(i + 1) * d], w[i * d:(i + 1) * d]) for i in range(3))   # q, k, v
    assert torch.equal(w, state["joint_blocks.0.x_block.attn.qkv.weight"])                          # not in place
    in_place = w.clone()
    patch.add_into(in_place, 0.5)
    torch.testing.assert_close(in_place, w + 0.5 * (merged - w))


def test_a_slice_of_the_wrong_size_is_reported():
    state = random_mmdit_state(CONFIG)
    model = ours(CONFIG, state)
    lora = {"transformer.transformer_blocks.0.attn.to_q.lora_A.weight": torch.zeros(RANK, 128),
            "transformer.transformer_blocks.0.attn.to_q.lora_B.weight": torch.zeros(64, RANK)}
    result = build_patches(lora, lora_names_for(model), module_weight_shapes(model))
    assert not result.patches and result.problems and "to_q" in result.problems[0]
