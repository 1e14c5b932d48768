"""FLUX.1 Kontext's reference latents: extra image tokens with their own position ids.

The forward with a reference is checked against diffusers' FluxTransformer2DModel given the concatenated
tokens and ids the way diffusers' FluxKontextPipeline builds them (the reference's ids with index 1 at the
origin; only the generated image's tokens are kept). The placements of several references follow
ComfyUI 0.3.64's `ref_latents_method` values (offset, index, uxo), worked out by hand here."""
from __future__ import annotations

import pytest
import torch

from models.flux import image_ids, reference_placements
from tests.models.test_flux import DEV_TINY, ours, random_flux_state, reference

pytest.importorskip("diffusers")


@pytest.mark.parametrize("ref_size", [(8, 8), (6, 10), (5, 7)])
def test_one_reference_matches_diffusers_kontext_layout(ref_size) -> None:
    config = DEV_TINY
    state = random_flux_state(config)
    g = torch.Generator().manual_seed(3)
    x, ref = torch.randn(1, 16, 8, 6, generator=g), torch.randn(1, 16, *ref_size, generator=g)
    context = torch.randn(1, 5, config.context_in_dim, generator=g)
    y = torch.randn(1, config.vec_in_dim, generator=g)
    t, guidance = torch.tensor([0.75]), torch.tensor([2.5])
    model = ours(config, state)
    with torch.no_grad():
        got = model(x, t, context, y, guidance, ref_latents=[ref])
        without = model(x, t, context, y, guidance)
        padded = model._padded(ref)                     # odd sides: circular padding, as for the image
        rh, rw = padded.shape[-2] // 2, padded.shape[-1] // 2
        tokens = torch.cat([model.patchify(x), model.patchify(padded)], dim=1)
        ids = torch.cat([image_ids(4, 3, 1)[0], image_ids(rh, rw, 1, index=1)[0]])
        want = reference(config, state)(hidden_states=tokens, encoder_hidden_states=context, pooled_projections=y,
                                        timestep=t, img_ids=ids, txt_ids=torch.zeros(5, 3), guidance=guidance).sample
        want = model.unpatchify(want[:, :12], 4, 3)
    assert got.shape == x.shape
    assert (got - want).abs().max() < 1e-4
    assert (got - without).abs().max() > 1e-3            # the reference reaches the image tokens


def test_placements_of_several_references() -> None:
    sizes = [(8, 8), (8, 12), (6, 6)]                    # latent pixels; the image is 4 x 4 patches
    # offset: the first at the origin; the next along the shorter side of what is covered so far
    # (8 + 8 > 12 + 8 is false: below it, at row 8 px = 4 patches); covered 16 x 12, then 6 + 16 > 6 + 12:
    # beside, at column 12 px = 6 patches
    assert reference_placements(sizes, "offset", 4, 4) == [(1, 0, 0), (1, 4, 0), (1, 0, 6)]
    assert reference_placements(sizes, "index", 4, 4) == [(1, 0, 0), (2, 0, 0), (3, 0, 0)]
    # uxo: index 0, past the image (4 patches = 8 px) and the references before it, diagonally
    assert reference_placements(sizes, "uxo", 4, 4) == [(0, 4, 4), (0, 8, 8), (0, 12, 14)]
    with pytest.raises(ValueError, match="not one of"):
        reference_placements(sizes, "uno", 4, 4)


def test_two_references_batch_and_method_change_the_output() -> None:
    model = ours(DEV_TINY, random_flux_state(DEV_TINY))
    g = torch.Generator().manual_seed(4)
    x = torch.randn(2, 16, 4, 4, generator=g)
    refs = [torch.randn(2, 16, 4, 4, generator=g), torch.randn(2, 16, 4, 6, generator=g)]
    args = (x, torch.tensor([0.5, 0.5]), torch.randn(2, 3, 48, generator=g), torch.randn(2, 40, generator=g),
            torch.tensor([3.5]))
    with torch.no_grad():
        offset = model(*args, ref_latents=refs)
        index = model(*args, ref_latents=refs, ref_latents_method="index")
        first_alone = model(x[:1], *(a[:1] for a in args[1:4]), args[4], ref_latents=[r[:1] for r in refs])
    assert (offset - index).abs().max() > 1e-4
    assert (offset[:1] - first_alone).abs().max() < 1e-5   # batch entries are independent
