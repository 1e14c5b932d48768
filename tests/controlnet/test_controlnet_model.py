"""models.controlnet and models.t2i_adapter against diffusers' ControlNetModel / T2IAdapter on the same tiny
random weights, in every file layout; detection and key maps on the full-size manifests (meta device)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from models.checkpoint import build_module
from models.controlnet import ControlNet, ControlNetConfig
from models.convert import controlnet as control_keys
from models.detection import detect_control_model
from models.errors import UnknownModelError
from models.files import load_state_dict
from models.t2i_adapter import T2IAdapter
from models.testing import (tiny_controlnet_config, tiny_t2i_config, write_random_controlnet,
                            write_random_t2i_adapter)
from models.unet import UNetConfig

diffusers = pytest.importorskip("diffusers")
from diffusers.loaders.single_file_utils import convert_controlnet_checkpoint  # noqa: E402

MANIFESTS = Path(__file__).resolve().parent.parent / "data" / "manifests"


def manifest_shapes(name: str) -> dict[str, tuple[int, ...]]:
    tensors = json.loads((MANIFESTS / f"{name}.json").read_text())["tensors"]
    return {k: tuple(v[0]) for k, v in tensors.items()}


def module_shapes(module: torch.nn.Module, prefix: str = "") -> dict[str, tuple[int, ...]]:
    return {prefix + k: tuple(v.shape) for k, v in module.state_dict().items()}


# --- detection on the real layouts (full size, meta device) -----------------------------------------------

def test_sd15_controlnet_original_layout_is_detected_and_matches_the_manifest():
    shapes = manifest_shapes("controlnet_sd15")
    info = detect_control_model(shapes)
    assert (info.kind, info.layout, info.prefix, info.is_diff) == ("controlnet", "ldm", "control_model.", False)
    assert info.config.unet.model_channels == 320 and info.config.unet.channel_mult == (1, 2, 4, 4)
    assert info.config.unet.context_dim == 768 and info.config.hint_channels == 3
    with torch.device("meta"):
        net = ControlNet(info.config)
    assert module_shapes(net, "control_model.") == shapes


def test_sd15_controlnet_bare_names_are_detected():
    shapes = {k.removeprefix("control_model."): v for k, v in manifest_shapes("controlnet_sd15").items()}
    info = detect_control_model(shapes)
    assert (info.layout, info.prefix) == ("ldm", "")
    assert info.config == detect_control_model(manifest_shapes("controlnet_sd15")).config


def test_sd15_controlnet_diffusers_layout_maps_key_for_key_onto_the_original():
    shapes = manifest_shapes("controlnet_sd15_diffusers")
    info = detect_control_model(shapes)
    assert (info.kind, info.layout) == ("controlnet", "diffusers")
    assert info.config == detect_control_model(manifest_shapes("controlnet_sd15")).config
    key_map = control_keys.diffusers_controlnet_key_map(info.config.unet, shapes)
    with torch.device("meta"):
        expected = module_shapes(ControlNet(info.config))
    assert set(key_map) == set(expected)
    assert all(expected[k] == shapes[f] for k, f in key_map.items())


def test_sd15_t2i_adapter_is_detected_and_matches_the_manifest():
    shapes = manifest_shapes("t2i_adapter_sd15")
    info = detect_control_model(shapes)
    assert info.kind == "t2i_adapter"
    assert (info.config.kind, info.config.in_channels, info.config.channels) == ("full", 64, (320, 640, 1280, 1280))
    assert info.config.kernel_size == 1 and info.config.hint_channels == 1 and not info.config.use_conv_down
    with torch.device("meta"):
        assert module_shapes(T2IAdapter(info.config)) == shapes


def test_unknown_files_are_refused_with_reasons():
    with pytest.raises(UnknownModelError, match="control-LoRA"):
        detect_control_model({"lora_controlnet": (), "zero_convs.0.0.weight": (320, 320, 1, 1)})
    with pytest.raises(UnknownModelError):
        detect_control_model({"model.diffusion_model.input_blocks.0.0.weight": (320, 4, 3, 3)})


# --- numerics against diffusers ---------------------------------------------------------------------------

def diffusers_controlnet(config: ControlNetConfig):
    u = config.unet
    levels = len(u.channel_mult)
    has_attn = [u.transformer_depth[sum(u.num_res_blocks[:i])] > 0 for i in range(levels)]
    return diffusers.ControlNetModel(
        in_channels=u.in_channels, conditioning_channels=config.hint_channels,
        block_out_channels=[u.model_channels * m for m in u.channel_mult],
        down_block_types=["CrossAttnDownBlock2D" if a else "DownBlock2D" for a in has_attn],
        layers_per_block=u.num_res_blocks[0], cross_attention_dim=u.context_dim,
        attention_head_dim=u.num_heads if u.num_heads > 0 else [u.model_channels * m // u.head_dim for m in u.channel_mult],
        use_linear_projection=u.use_linear_in_transformer, upcast_attention=u.upcast_attention,
        norm_num_groups=u.norm_groups, flip_sin_to_cos=True, freq_shift=0).eval()


def load_ours(path) -> ControlNet:
    with load_state_dict(path) as source:
        shapes = source.shapes()
        info = detect_control_model(shapes)
        if info.layout == "diffusers":
            key_map = control_keys.diffusers_controlnet_key_map(info.config.unet, shapes)
        else:
            key_map = control_keys.ldm_controlnet_key_map(shapes, info.prefix)
        return build_module(lambda: ControlNet(info.config, "sdpa"), key_map, source, torch.float32, "ControlNet")


def _inputs(config: ControlNetConfig, batch: int = 2, size: int = 8):
    g = torch.Generator().manual_seed(1)
    x = torch.randn(batch, config.unet.in_channels, size, size, generator=g)
    hint = torch.rand(batch, config.hint_channels, size * 8, size * 8, generator=g)
    context = torch.randn(batch, 5, config.unet.context_dim, generator=g)
    timesteps = torch.tensor([999.0, 321.5])[:batch]
    return x, hint, timesteps, context


def _compare(ours: ControlNet, reference, config: ControlNetConfig):
    x, hint, t, context = _inputs(config)
    with torch.no_grad():
        got = ours(x, hint, t, context)
        down, mid = reference(x, t, encoder_hidden_states=context, controlnet_cond=hint, return_dict=False)
    assert len(got.skips) == len(down)
    for i, expected in enumerate(down):
        torch.testing.assert_close(got.skips[i], expected, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(got.middle, mid, atol=1e-4, rtol=1e-4)
    assert got.middle.abs().max() > 1e-2                 # the random zero convs are not zero: a real check


@pytest.mark.parametrize("family", ["sd1", "sd2"])
@pytest.mark.parametrize("layout", ["control_model", "bare"])
def test_original_layout_matches_diffusers_controlnet(tmp_path, family, layout):
    config = tiny_controlnet_config(family)
    path = write_random_controlnet(tmp_path / "cn.safetensors", config, layout=layout, seed=3)
    with load_state_dict(path) as source:
        checkpoint = dict(source.items())
    reference = diffusers_controlnet(config)
    reference.load_state_dict(convert_controlnet_checkpoint(checkpoint, {"layers_per_block": 1}), strict=True)
    _compare(load_ours(path), reference, config)


def test_diffusers_layout_matches_diffusers_controlnet(tmp_path):
    config = tiny_controlnet_config("sd1")
    reference = diffusers_controlnet(config)
    torch.manual_seed(5)
    with torch.no_grad():
        for p in reference.parameters():
            p.copy_(torch.randn_like(p) / max(1, p[0].numel()) ** 0.5)
    from safetensors.torch import save_file
    path = tmp_path / "diffusion_pytorch_model.safetensors"
    save_file({k: v.contiguous() for k, v in reference.state_dict().items()}, path)
    _compare(load_ours(path), reference, config)


def test_the_same_seed_gives_the_same_net_in_every_layout(tmp_path):
    config = tiny_controlnet_config("sd1")
    nets = [load_ours(write_random_controlnet(tmp_path / f"{layout}.safetensors", config, layout=layout, seed=2))
            for layout in ("control_model", "bare", "diffusers")]
    x, hint, t, context = _inputs(config)
    with torch.no_grad():
        outs = [net(x, hint, t, context) for net in nets]
    for other in outs[1:]:
        assert all(torch.equal(other.skips[i], outs[0].skips[i]) for i in outs[0].skips)


@pytest.mark.parametrize("kind", ["full", "light"])
@pytest.mark.parametrize("layout", ["original", "diffusers"])
def test_t2i_adapter_matches_diffusers(tmp_path, kind, layout):
    config = tiny_t2i_config(kind)
    # diffusers' light adapter repeats its last width in one more stage: its [32, 64] is TencentARC's [32, 64, 64]
    channels = list(config.channels) if kind == "full" else list(config.channels[:-1])
    reference = diffusers.T2IAdapter(in_channels=config.hint_channels, channels=channels,
                                     num_res_blocks=config.num_res_blocks, downscale_factor=8,
                                     adapter_type=f"{kind}_adapter").eval()
    path = write_random_t2i_adapter(tmp_path / "t2i.safetensors", config, layout=layout, seed=4)
    with load_state_dict(path) as source:
        shapes = source.shapes()
        info = detect_control_model(shapes)
        assert info.kind == "t2i_adapter" and info.config == config
        ours = build_module(lambda: T2IAdapter(info.config),
                            control_keys.diffusers_t2i_key_map(info.config, shapes) if info.layout == "diffusers"
                            else control_keys.t2i_original_key_map(shapes), source, torch.float32, "T2I")
        from models.testing import t2i_file_keys
        names = {f: m for f, m in t2i_file_keys(config, "diffusers").items()}
        by_module = {m: source[f] for f, m in t2i_file_keys(config, layout).items()}
        reference.load_state_dict({f: by_module[m] for f, m in names.items()}, strict=True)
    # sides even at every stage: on odd sides TencentARC (and ComfyUI) pad before pooling, diffusers uses ceil_mode
    hint = torch.rand(2, config.hint_channels, 64, 128, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        got = ours.features(hint)
        expected = reference(hint)
    assert len(got) == len(expected) == len(config.channels)
    for a, b in zip(got, expected):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)
    residuals = ours(hint)
    assert sorted(residuals.after_input) == [2, 5, 8] and residuals.middle is None


def test_sdxl_t2i_adapter_matches_diffusers_full_adapter_xl(tmp_path):
    from models.t2i_adapter import T2IAdapterConfig
    config = T2IAdapterConfig(kind="full", in_channels=3 * 256, channels=(32, 64, 64, 64), is_xl=True)
    reference = diffusers.T2IAdapter(in_channels=3, channels=list(config.channels), num_res_blocks=2,
                                     downscale_factor=16, adapter_type="full_adapter_xl").eval()
    path = write_random_t2i_adapter(tmp_path / "xl.safetensors", config, layout="diffusers", seed=6)
    with load_state_dict(path) as source:
        shapes = source.shapes()
        info = detect_control_model(shapes)
        assert info.config == config and info.config.unshuffle == 16
        ours = build_module(lambda: T2IAdapter(info.config), control_keys.diffusers_t2i_key_map(info.config, shapes),
                            source, torch.float32, "T2I")
        reference.load_state_dict({k: source[k] for k in shapes}, strict=True)
    hint = torch.rand(1, 3, 128, 128, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        for a, b in zip(ours.features(hint), reference(hint), strict=True):
            torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)
        residuals = ours(hint)
    assert sorted(residuals.after_input) == [3, 5, 8] and residuals.middle is not None
