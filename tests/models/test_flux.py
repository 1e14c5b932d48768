"""The FLUX transformer against diffusers' FluxTransformer2DModel on tiny random weights in the BFL
single-file layout, converted to diffusers' names by diffusers' own single-file converter."""
from __future__ import annotations

import pytest
import torch

from models.flux import Flux, FluxConfig, image_ids
from models.testing import module_layout, random_tensor

diffusers = pytest.importorskip("diffusers")
from diffusers import FluxTransformer2DModel  # noqa: E402
from diffusers.loaders.single_file_utils import convert_flux_transformer_checkpoint_to_diffusers  # noqa: E402

DEV_TINY = FluxConfig(hidden_size=64, num_heads=2, depth=2, depth_single_blocks=2, context_in_dim=48,
                      vec_in_dim=40, axes_dim=(8, 12, 12), guidance_embed=True)
SCHNELL_TINY = FluxConfig(hidden_size=64, num_heads=2, depth=1, depth_single_blocks=3, context_in_dim=48,
                          vec_in_dim=40, axes_dim=(8, 12, 12), guidance_embed=False)
FULL_INNER = 3072          # the converter splits single_blocks.N.linear1 by the released width


def random_flux_state(config: FluxConfig, seed: int = 0) -> dict[str, torch.Tensor]:
    return {k: random_tensor(k, s, torch.float32, seed) for k, s in module_layout(Flux, config, "").items()}


def ours(config: FluxConfig, state: dict) -> Flux:
    model = Flux(config)
    model.load_state_dict(state, strict=True)
    return model.eval()


def reference(config: FluxConfig, state: dict) -> FluxTransformer2DModel:
    """diffusers' converter on the BFL keys. It splits the fused single-block linear1 at the full-size
    widths (3 x 3072 + 12288), so that one tensor is split here at the tiny width and the converter gets
    a placeholder of the full-size row count for it."""
    d, m = config.hidden_size, config.mlp_hidden
    bfl = {"model.diffusion_model." + k: v.clone() for k, v in state.items()}
    fused = {}
    for i in range(config.depth_single_blocks):
        for kind in ("weight", "bias"):
            key = f"model.diffusion_model.single_blocks.{i}.linear1.{kind}"
            fused[(i, kind)] = bfl[key]
            bfl[key] = torch.zeros((3 * FULL_INNER + 4 * FULL_INNER,) + ((1,) if kind == "weight" else ()))
    converted = convert_flux_transformer_checkpoint_to_diffusers(bfl)
    for (i, kind), t in fused.items():
        q, k, v, mlp = torch.split(t, (d, d, d, m), dim=0)
        block = f"single_transformer_blocks.{i}."
        converted.update({block + f"attn.to_q.{kind}": q, block + f"attn.to_k.{kind}": k,
                          block + f"attn.to_v.{kind}": v, block + f"proj_mlp.{kind}": mlp})
    model = FluxTransformer2DModel(
        patch_size=1, in_channels=config.in_channels, out_channels=config.out_channels, num_layers=config.depth,
        num_single_layers=config.depth_single_blocks, attention_head_dim=config.head_dim,
        num_attention_heads=config.num_heads, joint_attention_dim=config.context_in_dim,
        pooled_projection_dim=config.vec_in_dim, guidance_embeds=config.guidance_embed,
        axes_dims_rope=config.axes_dim)
    missing, unexpected = model.load_state_dict(converted, strict=False)
    assert not missing and not unexpected, (missing, unexpected)
    return model.eval()


@pytest.mark.parametrize("config", [DEV_TINY, SCHNELL_TINY], ids=["dev", "schnell"])
@pytest.mark.parametrize("size", [(8, 8), (6, 10)])
def test_matches_diffusers(config: FluxConfig, size: tuple[int, int]) -> None:
    state = random_flux_state(config)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, 16, *size, generator=g)
    context = torch.randn(2, 7, config.context_in_dim, generator=g)
    y = torch.randn(2, config.vec_in_dim, generator=g)
    t = torch.tensor([1.0, 0.3125])
    guidance = torch.tensor([3.5, 3.5]) if config.guidance_embed else None
    model = ours(config, state)
    with torch.no_grad():
        got = model(x, t, context, y, guidance)
        h, w = size[0] // 2, size[1] // 2
        want = reference(config, state)(
            hidden_states=model.patchify(x), encoder_hidden_states=context, pooled_projections=y, timestep=t,
            img_ids=image_ids(h, w, 1)[0], txt_ids=torch.zeros(7, 3), guidance=guidance).sample
        want = model.unpatchify(want, h, w)
    assert got.shape == (2, 16, *size)
    assert want.abs().mean() > 0.05                      # a real signal, not a vanishing one
    assert (got - want).abs().max() < 1e-4


def test_guidance_changes_dev_output() -> None:
    model = ours(DEV_TINY, random_flux_state(DEV_TINY))
    g = torch.Generator().manual_seed(2)
    x, ctx, y = torch.randn(1, 16, 4, 4, generator=g), torch.randn(1, 3, 48, generator=g), torch.randn(1, 40, generator=g)
    t = torch.tensor([0.5])
    with torch.no_grad():
        a = model(x, t, ctx, y, torch.tensor([1.0]))
        b = model(x, t, ctx, y, torch.tensor([4.0]))
    assert (a - b).abs().max() > 1e-3


def test_odd_latent_sides_are_padded_and_cropped() -> None:
    model = ours(SCHNELL_TINY, random_flux_state(SCHNELL_TINY))
    x = torch.randn(1, 16, 5, 7)
    with torch.no_grad():
        out = model(x, torch.tensor([0.7]), torch.randn(1, 4, 48), torch.randn(1, 40))
    assert out.shape == (1, 16, 5, 7)
