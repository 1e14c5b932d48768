"""SD3.5 large ControlNets in Stability AI's own layout (sd3.5_large_controlnet_{blur,canny,depth}.safetensors):
detection of the full-size layout, the forward against diffusers' SD3ControlNetModel in its SD3.5 configuration
on tiny random weights, and through the engine on a tiny SD3.5-layout checkpoint (strength 0 is exactly the
plain image; the hint prepared by the file's control_type)."""
from __future__ import annotations

import pytest
import torch

from models.controlnet_mmdit import SD35ControlNet, sincos_grid_embedding
from models.convert.controlnet_mmdit import sd35_controlnet_state
from models.detection import detect_control_model
from models.errors import UnsupportedModelError
from models.testing import sd35_controlnet_config, sd35_controlnet_file_keys


def released_sd35_large_shapes(blocks: int = 19, hidden: int = 2432, pooled: int = 2048) -> dict:
    """The key list of the released files, written out from the published facts rather than from our module:
    diffusers' scripts/convert_sd3_controlnet_to_diffusers.py (it reads exactly these keys from
    sd3.5_large_controlnet_*.safetensors for an SD3ControlNetModel of 19 layers, 38 heads of 64, pooled 2048,
    patch 2, 16 channels, no pos_embed / context_embedder) and ComfyUI's load_controlnet_sd35 (`control_type`,
    the 6-way adaLN and 4x MLP of its DismantledBlocks, qkv bias)."""
    shapes: dict[str, tuple[int, ...]] = {"control_type": (), "pos_embed_input.proj.weight": (hidden, 16, 2, 2),
                                          "pos_embed_input.proj.bias": (hidden,)}
    for name, width in (("timestep_embedder", 256), ("text_embedder", pooled)):
        shapes[f"time_text_embed.{name}.linear_1.weight"] = (hidden, width)
        shapes[f"time_text_embed.{name}.linear_2.weight"] = (hidden, hidden)
        shapes[f"time_text_embed.{name}.linear_1.bias"] = shapes[f"time_text_embed.{name}.linear_2.bias"] = (hidden,)
    for i in range(blocks):
        b = f"transformer_blocks.{i}."
        for module, out, inp in (("adaLN_modulation.1", 6 * hidden, hidden), ("attn.qkv", 3 * hidden, hidden),
                                 ("attn.proj", hidden, hidden), ("mlp.fc1", 4 * hidden, hidden),
                                 ("mlp.fc2", hidden, 4 * hidden)):
            shapes[b + module + ".weight"], shapes[b + module + ".bias"] = (out, inp), (out,)
        shapes[f"controlnet_blocks.{i}.weight"], shapes[f"controlnet_blocks.{i}.bias"] = (hidden, hidden), (hidden,)
    return shapes


def test_detects_the_released_sd35_large_layout_and_builds_it_on_meta():
    shapes = released_sd35_large_shapes()
    info = detect_control_model(shapes)
    assert (info.kind, info.layout) == ("sd35_controlnet", "stability")
    c = info.config
    assert (c.mmdit.depth, c.mmdit.hidden_size, c.mmdit.num_heads, c.base_depth, c.blocks_per_output) == (19, 2432, 38, 38, 2)
    assert (c.hint_channels, c.mmdit.adm_in_dim, c.mmdit.patch_size, c.mmdit.frequency_embedding_size) == (16, 2048, 2, 256)
    with torch.device("meta"):
        module = SD35ControlNet(c)
        state = sd35_controlnet_state({k: torch.empty(s) for k, s in shapes.items()})
    assert {k: tuple(v.shape) for k, v in state.items()} == {k: tuple(v.shape) for k, v in module.state_dict().items()}
    params = sum(v.numel() for v in module.state_dict().values())
    assert 2.15e9 < params < 2.16e9                     # 8.6 GB in fp32: the published files' size


def test_a_square_pooled_embedder_is_refused_clearly():
    shapes = released_sd35_large_shapes(blocks=1, hidden=128, pooled=128)
    with pytest.raises(UnsupportedModelError, match="re-embed the pooled"):
        detect_control_model(shapes)


def test_unknown_keys_are_listed():
    shapes = released_sd35_large_shapes(blocks=1, hidden=128, pooled=64)
    shapes["transformer_blocks.0.mystery.weight"] = (1,)
    with pytest.raises(KeyError, match="mystery"):
        sd35_controlnet_state({k: torch.zeros(s) for k, s in shapes.items()})


def test_position_grid_matches_diffusers_sincos_on_a_square_grid():
    """On an n x n grid the SD3.5 ControlNet's positions are 0..15 (linspace(0, 15, n)) per axis; for n = 16
    that is diffusers' get_2d_sincos_pos_embed(grid 16, base 16) (columns first, then rows)."""
    from diffusers.models.embeddings import get_2d_sincos_pos_embed
    expected = torch.as_tensor(get_2d_sincos_pos_embed(64, 16, base_size=16, interpolation_scale=1.0,
                                                       output_type="pt")).float()
    torch.testing.assert_close(sincos_grid_embedding(64, 16, 16), expected, atol=1e-5, rtol=1e-5)
    tall = sincos_grid_embedding(64, 6, 4)                      # the longer side spans proportionally more
    assert tall.shape == (24, 64)


def diffusers_state(ours: dict) -> dict:
    """Our module's state in diffusers' SD3ControlNetModel names (the inverse of the published converter)."""
    out = {}
    for key, t in ours.items():
        if key.startswith(("t_embedder.", "y_embedder.")):
            emb = "timestep_embedder" if key[0] == "t" else "text_embedder"
            key = key.replace(key.split(".mlp.")[0] + ".mlp.0", f"time_text_embed.{emb}.linear_1") \
                     .replace(key.split(".mlp.")[0] + ".mlp.2", f"time_text_embed.{emb}.linear_2")
            out[key] = t
        elif ".attn.qkv." in key:
            for part, chunk in zip("qkv", t.chunk(3, dim=0)):
                out[key.replace("attn.qkv", f"attn.to_{part}")] = chunk
        else:
            for a, b in (("attn.proj", "attn.to_out.0"), ("mlp.fc1", "ff.net.0.proj"), ("mlp.fc2", "ff.net.2"),
                         ("adaLN_modulation.1", "norm1.linear")):
                key = key.replace(a, b)
            out[key] = t
    return out


@pytest.mark.parametrize("blocks", [1, 2])
def test_matches_diffusers_sd3_controlnet_in_its_sd35_configuration(blocks):
    diffusers = pytest.importorskip("diffusers")
    from models.testing import random_tensor
    config = sd35_controlnet_config(hidden=256, blocks=blocks)            # a 4-block base
    with torch.device("meta"):
        ours = SD35ControlNet(config, "sdpa")
    state = {k: random_tensor(k, tuple(v.shape), torch.float32, 1) for k, v in ours.state_dict().items()}
    ours.load_state_dict(state, assign=True)
    ref = diffusers.SD3ControlNetModel(
        patch_size=2, in_channels=16, num_layers=blocks, attention_head_dim=64, num_attention_heads=4,
        joint_attention_dim=None, caption_projection_dim=256, pooled_projection_dim=64, out_channels=16,
        pos_embed_max_size=None, pos_embed_type=None, use_pos_embed=False,
        force_zeros_for_pooled_projection=False).eval()
    ref.load_state_dict(diffusers_state(state), strict=True)
    g = torch.Generator().manual_seed(2)
    x, hint = torch.randn(2, 16, 8, 12, generator=g), torch.randn(2, 16, 8, 12, generator=g)
    y, t = torch.randn(2, 64, generator=g), torch.tensor([999.0, 250.0])
    patch = torch.nn.Conv2d(16, 256, 2, stride=2)                          # the base model's x_embedder
    embed = lambda z: patch(z).flatten(2).transpose(1, 2)                  # noqa: E731
    with torch.no_grad():
        tokens = embed(x) + sincos_grid_embedding(256, 4, 6)
        (expected,) = ref(tokens, hint, conditioning_scale=1.0, pooled_projections=y, timestep=t, return_dict=False)
        got = ours(x, hint, t, y, embed)
    assert sorted(got.after_block) == list(range(4))                       # every base block, the last included
    k = 4 // blocks
    for block, out in got.after_block.items():
        torch.testing.assert_close(out, expected[block // k], atol=1e-4, rtol=1e-4)


# --- through the engine on a tiny SD3.5-layout checkpoint --------------------------------------------------

@pytest.fixture(scope="module")
def sd35(tmp_path_factory):
    from models.testing import tiny_sd3_spec, write_random_sd3_checkpoint, write_random_sd35_controlnet
    from tests.nodes.engine_harness import fp32_harness, serving, write_reference_image
    h = fp32_harness(tmp_path_factory.mktemp("sd35-cn"), ("checkpoints", "controlnet"))
    write_random_sd3_checkpoint(h.folders.paths("checkpoints")[0] / "tiny-sd3.safetensors",
                                tiny_sd3_spec(qk_norm=True))   # 128 wide, 2 blocks
    for kind in ("blur", "canny", "depth"):
        write_random_sd35_controlnet(h.folders.paths("controlnet")[0] / f"sd35_{kind}.safetensors",
                                     sd35_controlnet_config(), control_type=kind, seed=4)
    write_reference_image(h, (48, 64), "h.png", seed=2)
    yield from serving(h)


def test_sd35_controlnet_through_the_engine(sd35):
    from tests.controlnet.test_controlnet_sd3 import sd3_prompt, sd3_sampled
    plain = sd3_sampled(sd35, sd3_prompt())
    assert torch.equal(sd3_sampled(sd35, sd3_prompt("sd35_canny.safetensors", 0.0)), plain)
    controlled = sd3_sampled(sd35, sd3_prompt("sd35_canny.safetensors", 1.0))
    assert (controlled - plain).abs().max() > 1e-3
    half = sd3_sampled(sd35, sd3_prompt("sd35_canny.safetensors", 0.5))
    assert not torch.equal(half, controlled)
    # the same weights with another control_type see another hint (blur: as is, depth: inverted)
    blur, depth = (sd3_sampled(sd35, sd3_prompt(f"sd35_{k}.safetensors", 1.0)) for k in ("blur", "depth"))
    assert not torch.equal(blur, controlled) and not torch.equal(blur, depth)


def test_sd35_controlnet_through_apply_sd3_node(sd35):
    """ControlNetApplySD3 (ComfyUI's deprecated "Apply Controlnet with VAE") gives ControlNetApplyAdvanced's result."""
    from tests.controlnet.test_controlnet_sd3 import sd3_prompt, sd3_sampled
    p = sd3_prompt("sd35_blur.safetensors", 0.7)
    advanced = sd3_sampled(sd35, p)
    p["12"]["class_type"] = "ControlNetApplySD3"
    torch.testing.assert_close(sd3_sampled(sd35, p), advanced, atol=0, rtol=0)


def test_sd35_controlnet_without_vae_is_a_clear_error(sd35):
    from tests.controlnet.test_controlnet_sd3 import sd3_prompt
    result = sd35.run(sd3_prompt("sd35_depth.safetensors", 1.0, vae=False))
    assert result.status == "error" and "VAE" in str(result.error)


def test_latent_hint_uses_the_control_type_and_sd3_latent_format(sd35):
    """canny pixels a * 127.5 + 0.5, depth 1 - a, blur as is; then VAE encode and (z - 0.0609) * 1.5305."""
    from diffusion import controlnet, vae_ops
    from diffusion.loading import load_checkpoint_file
    model, _clip, vae = load_checkpoint_file(sd35.folders.find("checkpoints", "tiny-sd3.safetensors"),
                                             sd35.services.model_manager())
    image = torch.rand(1, 48, 64, 3, generator=torch.Generator().manual_seed(0))
    for kind, prepared in (("canny", image * 127.5 + 0.5), ("depth", 1.0 - image), ("blur", image)):
        net = controlnet.load_control_file(sd35.folders.find("controlnet", f"sd35_{kind}.safetensors"),
                                           sd35.services.model_manager())
        assert net.model.module.config.control_kind == kind
        (positive,), _ = controlnet.apply_control([[torch.zeros(1, 1, 1), {}]], [[torch.zeros(1, 1, 1), {}]], net,
                                                  image, strength=1.0, vae=vae)
        application = positive[1]["control"]
        application.models(model)
        hint = application._latent_hint_at(6, 8, torch.device("cpu"), torch.float32)
        expected = (vae_ops.encode(vae, prepared) - 0.0609) * 1.5305
        torch.testing.assert_close(hint, expected, atol=1e-4, rtol=1e-5)
