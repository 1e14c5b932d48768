"""MM-DiT / MM-DiT-X against diffusers' SD3Transformer2DModel on tiny random weights in the real
single-file layout, converted to diffusers' names by diffusers' own single-file converter."""
from __future__ import annotations

import pytest
import torch

from models.mmdit import MMDiT, MMDiTConfig
from models.testing import module_layout, random_tensor

diffusers = pytest.importorskip("diffusers")
from diffusers import SD3Transformer2DModel  # noqa: E402
from diffusers.loaders.single_file_utils import convert_sd3_transformer_checkpoint_to_diffusers  # noqa: E402

SD3_TINY = MMDiTConfig(depth=2, hidden_size=128, num_heads=2, context_in_dim=64, adm_in_dim=48,
                       pos_embed_max_size=16)
SD35_TINY = MMDiTConfig(depth=3, hidden_size=192, num_heads=3, context_in_dim=64, adm_in_dim=48,
                        pos_embed_max_size=16, qk_norm=True, dual_attention_blocks=(0, 1))


def random_mmdit_state(config: MMDiTConfig, seed: int = 0) -> dict[str, torch.Tensor]:
    layout = module_layout(MMDiT, config, "")
    return {k: random_tensor(k, s, torch.float32, seed, std=0.5 if k == "pos_embed" else None)
            for k, s in layout.items()}


def ours(config: MMDiTConfig, state: dict) -> MMDiT:
    model = MMDiT(config)
    model.load_state_dict(state, strict=True)
    return model.eval()


def reference(config: MMDiTConfig, state: dict) -> SD3Transformer2DModel:
    converted = convert_sd3_transformer_checkpoint_to_diffusers(
        {"model.diffusion_model." + k: v.clone() for k, v in state.items()})
    model = SD3Transformer2DModel(
        sample_size=config.pos_embed_max_size, patch_size=config.patch_size, in_channels=config.in_channels,
        num_layers=config.depth, attention_head_dim=config.head_dim, num_attention_heads=config.num_heads,
        joint_attention_dim=config.context_in_dim, caption_projection_dim=config.hidden_size,
        pooled_projection_dim=config.adm_in_dim, out_channels=config.out_channels,
        pos_embed_max_size=config.pos_embed_max_size, dual_attention_layers=config.dual_attention_blocks,
        qk_norm="rms_norm" if config.qk_norm else None)
    missing, unexpected = model.load_state_dict(converted, strict=False)
    assert not unexpected and not missing, (missing, unexpected)
    return model.eval()


@pytest.mark.parametrize("config", [SD3_TINY, SD35_TINY], ids=["sd3", "sd35"])
@pytest.mark.parametrize("size", [(8, 8), (6, 10)])
def test_matches_diffusers(config: MMDiTConfig, size: tuple[int, int]) -> None:
    state = random_mmdit_state(config)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, 16, *size, generator=g)
    context = torch.randn(2, 7, config.context_in_dim, generator=g)
    y = torch.randn(2, config.adm_in_dim, generator=g)
    t = torch.tensor([999.0, 250.5])
    with torch.no_grad():
        got = ours(config, state)(x, t, context, y)
        want = reference(config, state)(hidden_states=x, encoder_hidden_states=context, pooled_projections=y,
                                        timestep=t).sample
    assert got.shape == want.shape == x.shape
    torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)


def test_layout_of_released_models_meta() -> None:
    """Full-size SD3 medium / SD3.5 medium layouts equal the published files' (tests/data/manifests)."""
    import json
    from pathlib import Path
    data = Path(__file__).resolve().parents[1] / "data" / "manifests"
    for name, config in [("sd3_medium", MMDiTConfig()),
                         ("sd35_medium", MMDiTConfig(pos_embed_max_size=384, qk_norm=True,
                                                     dual_attention_blocks=tuple(range(13))))]:
        tensors = json.loads((data / f"{name}.json").read_text())["tensors"]
        want = {k: tuple(v[0]) for k, v in tensors.items() if k.startswith("model.diffusion_model.")}
        assert module_layout(MMDiT, config, "model.diffusion_model.") == want


def test_skip_blocks_passes_a_block_through() -> None:
    state = random_mmdit_state(SD3_TINY)
    model = ours(SD3_TINY, state)
    g = torch.Generator().manual_seed(2)
    x, ctx, y = torch.randn(1, 16, 8, 8, generator=g), torch.randn(1, 5, 64, generator=g), torch.randn(1, 48, generator=g)
    t = torch.tensor([500.0])
    with torch.no_grad():
        full, skipped = model(x, t, ctx, y), model(x, t, ctx, y, skip_blocks=frozenset({0}))
        single = MMDiT(SD3_TINY)
        # a model whose block 0 is removed computes what skipping block 0 computes
        single.load_state_dict(state)
        del single.joint_blocks[0]
        again = single(x, t, ctx, y)
    assert not torch.allclose(full, skipped)
    torch.testing.assert_close(skipped, again)
