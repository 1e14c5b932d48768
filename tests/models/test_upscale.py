"""RRDBNet (ESRGAN) upscaler: detection in both key layouts, scale, pixel-unshuffle models, exact tiling."""
from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file

from diffusion.upscale import upscale_tiled
from models.errors import UnknownModelError
from models.files import load_state_dict
from models.upscale import (
    RRDBNet,
    RRDBNetConfig,
    detect_upscaler,
    receptive_radius_px,
    rrdbnet_from_state_dict,
)

TINY = {"num_features": 8, "num_blocks": 1, "growth_channels": 4}


def tiny_state(stages: int = 2, unshuffle: int = 1, seed: int = 0) -> dict[str, torch.Tensor]:
    torch.manual_seed(seed)
    net = RRDBNet(RRDBNetConfig(layout="basicsr", upsample_stages=stages, unshuffle=unshuffle, **TINY))
    return {k: v.clone() for k, v in net.state_dict().items()}


def to_old_layout(state: dict[str, torch.Tensor], num_blocks: int, stages: int) -> dict[str, torch.Tensor]:
    """Test-side inverse of models.convert.esrgan: BasicSR names -> the old ESRGAN `model.N` Sequential
    (upsample/conv/LeakyReLU triples from index 2, so x4 convs at model.3, 6, then 8 (HR) and 10 (last))."""
    top = {"conv_first": 0, "conv_hr": 3 * stages + 2, "conv_last": 3 * stages + 4}
    top.update({f"conv_up{i}": 3 * i for i in range(1, stages + 1)})
    out = {}
    for key, value in state.items():
        module, kind = key.rsplit(".", 1)
        if module in top:
            out[f"model.{top[module]}.{kind}"] = value
        elif module == "conv_body":
            out[f"model.1.sub.{num_blocks}.{kind}"] = value
        else:
            _, block, rdb, conv = module.split(".")                      # body.N.rdbR.convK
            out[f"model.1.sub.{block}.RDB{rdb[-1]}.{conv}.0.{kind}"] = value
    return out


def shapes_of(state):
    return {k: tuple(v.shape) for k, v in state.items()}


def test_esrgan_x4_old_manifest_is_detected():
    # the published RRDB_ESRGAN_x4.pth layout: nf 64, gc 32, 23 RRDBs, convs at model.0/3/6/8/10
    with torch.device("meta"):
        full = RRDBNet(RRDBNetConfig(layout="basicsr"))
    config = detect_upscaler(to_old_layout(shapes_of(full.state_dict()), 23, 2))
    assert config == RRDBNetConfig(layout="esrgan_old", num_features=64, num_blocks=23, growth_channels=32,
                                   upsample_stages=2)
    assert config.scale == 4
    assert "model.10.weight" in to_old_layout(shapes_of(full.state_dict()), 23, 2)


def test_both_layouts_give_identical_outputs(tmp_path):
    state = tiny_state()
    save_file(state, tmp_path / "new.safetensors")
    torch.save(to_old_layout(state, 1, 2), tmp_path / "old.pth")
    with load_state_dict(tmp_path / "new.safetensors") as source:
        new = rrdbnet_from_state_dict(source)
    with load_state_dict(tmp_path / "old.pth") as source:
        old = rrdbnet_from_state_dict(source)
    assert (new.config.layout, old.config.layout) == ("basicsr", "esrgan_old")
    x = torch.rand(1, 3, 11, 13)
    with torch.no_grad():
        a, b = new(x), old(x)
    assert a.shape == (1, 3, 44, 52)
    assert torch.equal(a, b)


@pytest.mark.parametrize("stages,scale", [(1, 2), (2, 4), (3, 8)])
def test_old_layout_scale_follows_upsample_stages(stages, scale):
    state = to_old_layout(tiny_state(stages=stages), 1, stages)
    net = rrdbnet_from_state_dict(state)
    assert net.config.scale == scale
    with torch.no_grad():
        assert net(torch.rand(2, 3, 5, 7)).shape == (2, 3, 5 * scale, 7 * scale)


@pytest.mark.parametrize("unshuffle,in_ch,scale", [(2, 12, 2), (4, 48, 1)])
def test_real_esrgan_pixel_unshuffle_models(unshuffle, in_ch, scale):
    state = tiny_state(unshuffle=unshuffle)
    assert state["conv_first.weight"].shape[1] == in_ch
    config = detect_upscaler(shapes_of(state))
    assert (config.unshuffle, config.scale, config.in_channels) == (unshuffle, scale, 3)
    net = rrdbnet_from_state_dict(state)
    with torch.no_grad():
        assert net(torch.rand(1, 3, 16, 12)).shape == (1, 3, 16 * scale, 12 * scale)
        assert net(torch.rand(1, 3, 9, 7)).shape == (1, 3, 9 * scale, 7 * scale)      # padded, then cropped


def test_tiled_equals_untiled_on_an_image_larger_than_a_tile():
    net = rrdbnet_from_state_dict(tiny_state())
    overlap = receptive_radius_px(net.config)
    x = torch.rand(1, 3, 70, 20)                                          # 3 x 1 tiles of at most 64 px
    seen = []
    with torch.no_grad():
        whole = net(x)
        tiled = upscale_tiled(net, x, 4, tile_px=2 * overlap + 24, overlap_px=overlap,
                              on_tile=lambda done, total: seen.append((done, total)))
    assert len(seen) == 3 and seen[-1] == (len(seen), len(seen))
    assert tiled.shape == whole.shape
    torch.testing.assert_close(tiled, whole, atol=1e-5, rtol=0)


def test_tiled_pixel_unshuffle_model_matches_untiled():
    net = rrdbnet_from_state_dict(tiny_state(unshuffle=2))
    overlap = receptive_radius_px(net.config)
    x = torch.rand(1, 3, 70, 22)                                          # odd core splits, 3 tiles
    with torch.no_grad():
        whole = net(x)
        tiled = upscale_tiled(net, x, 2, tile_px=2 * overlap + 24, overlap_px=overlap, multiple=2)
    torch.testing.assert_close(tiled, whole, atol=1e-5, rtol=0)


def test_unknown_layout_lists_what_was_found():
    with pytest.raises(UnknownModelError) as info:
        detect_upscaler({"encoder.conv_in.weight": (128, 3, 3, 3), "decoder.conv_out.weight": (3, 128, 3, 3)})
    assert "decoder" in str(info.value) and "encoder" in str(info.value)
    assert info.value.to_json()["type"] == "model_unknown_layout"
