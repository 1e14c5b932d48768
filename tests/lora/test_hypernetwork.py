"""A1111 hypernetworks: the file format, the MLP it describes, and the attention k/v hook in the UNet."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from model_management import ModelHandle
from models.errors import UnsafePickleError
from models.hypernetwork import (
    KV_PATCHES_OPTION,
    HypernetworkError,
    HypernetworkPatch,
    kv_patches_installed,
    read_hypernetwork,
)


def a1111_state(dim: int, *, layer_norm: bool, dropout: bool) -> dict[str, torch.Tensor]:
    """One MLP of layer structure [1, 2, 1] as A1111 builds it: Linear, ReLU, [LayerNorm], [Dropout],
    Linear, [LayerNorm]; only Linear and LayerNorm have tensors, at their Sequential indices."""
    state, index = {}, 0
    for fan_in, fan_out, is_last in ((dim, 2 * dim, False), (2 * dim, dim, True)):
        state[f"linear.{index}.weight"] = torch.randn(fan_out, fan_in) * 0.2
        state[f"linear.{index}.bias"] = torch.randn(fan_out) * 0.1
        index += 1 if is_last else 2                      # ReLU after the first Linear only
        if layer_norm:
            state[f"linear.{index}.weight"] = 1 + torch.randn(fan_out) * 0.1
            state[f"linear.{index}.bias"] = torch.randn(fan_out) * 0.1
            index += 1
        if dropout and not is_last:
            index += 1
    return state


def reference_mlp(state: dict[str, torch.Tensor], x: torch.Tensor, layer_norm: bool) -> torch.Tensor:
    keys = sorted({int(k.split(".")[1]) for k in state})
    h = x
    linears = [i for i in keys if state[f"linear.{i}.weight"].ndim == 2]
    for i in keys:
        w, b = state[f"linear.{i}.weight"], state[f"linear.{i}.bias"]
        if w.ndim == 2:
            h = h @ w.T + b
            if i != linears[-1]:
                h = torch.relu(h)
        else:
            h = F.layer_norm(h, (w.shape[0],), w, b)
    return h


def write_hypernetwork(path: Path, dims=(32, 64), *, layer_norm=True, dropout=True, activation="relu") -> dict:
    data = {d: [a1111_state(d, layer_norm=layer_norm, dropout=dropout),
                a1111_state(d, layer_norm=layer_norm, dropout=dropout)] for d in dims}
    data.update({"layer_structure": [1, 2, 1], "activation_func": activation, "is_layer_norm": layer_norm,
                 "use_dropout": dropout, "last_layer_dropout": False, "activate_output": False,
                 "weight_initialization": "Normal", "name": path.stem, "step": 1000,
                 "sd_checkpoint": "abc", "sd_checkpoint_name": "v1-5"})
    torch.save(data, path)
    return data


@pytest.mark.parametrize("layer_norm, dropout", [(True, True), (False, False), (True, False)])
def test_the_mlps_compute_what_the_file_describes(tmp_path, layer_norm, dropout) -> None:
    data = write_hypernetwork(tmp_path / "h.pt", layer_norm=layer_norm, dropout=dropout)
    patch = HypernetworkPatch(read_hypernetwork(tmp_path / "h.pt"), strength=0.6)
    k_in, v_in = torch.randn(2, 7, 64), torch.randn(2, 7, 64)
    k, v = patch(k_in, v_in)
    torch.testing.assert_close(k, k_in + 0.6 * reference_mlp(data[64][0], k_in, layer_norm))
    torch.testing.assert_close(v, v_in + 0.6 * reference_mlp(data[64][1], v_in, layer_norm))
    odd = torch.randn(1, 3, 48)                                  # no MLP of that width: untouched
    assert patch(odd, odd) == (odd, odd)


def test_the_unet_attention_hook(tiny_models, tmp_path) -> None:
    unet = tiny_models("sd1").unet
    data = write_hypernetwork(tmp_path / "h.pt")
    patch = HypernetworkPatch(read_hypernetwork(tmp_path / "h.pt"), strength=0.8)
    attn = unet.input_blocks[1][1].transformer_blocks[0].attn2
    x, context = torch.randn(1, 16, 32), torch.randn(1, 5, 32)
    with torch.no_grad():
        plain = attn(x, context)
        with kv_patches_installed(unet, [patch]):
            hooked = attn(x, context)
        k_in = context + 0.8 * reference_mlp(data[32][0], context, True)
        v_in = context + 0.8 * reference_mlp(data[32][1], context, True)
        heads = attn.heads
        q, k, v = (t.view(1, -1, heads, t.shape[-1] // heads).transpose(1, 2)
                   for t in (attn.to_q(x), attn.to_k(k_in), attn.to_v(v_in)))
        expected = attn.to_out(F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(1, 16, -1))
        assert torch.equal(attn(x, context), plain)             # the hook is gone afterwards
    torch.testing.assert_close(hooked, expected)

    inputs = torch.randn(1, 4, 16, 16), torch.tensor([10.0]), torch.randn(1, 5, 32)
    with torch.no_grad():
        base = unet(*inputs)
        with kv_patches_installed(unet, [HypernetworkPatch(patch.hypernetwork, 0.0)]):
            assert torch.equal(unet(*inputs), base)              # strength 0: bit-identical
        with kv_patches_installed(unet, [patch]):
            assert not torch.allclose(unet(*inputs), base)


def test_the_node_records_the_patch_on_a_clone_only(tiny_models, tmp_path) -> None:
    from nodes import services
    from nodes.builtin.lora import HypernetworkLoader
    from storage.folders import Folders

    folders = Folders(tmp_path)
    folders.ensure_dirs()
    write_hypernetwork(folders.paths("hypernetworks")[0] / "style.pt")
    services.install(services.NodeServices(folders))
    try:
        model = ModelHandle(tiny_models("sd1").unet)
        (patched,) = HypernetworkLoader().run(model, "style.pt", 0.5)
    finally:
        services.install(None)
    assert KV_PATCHES_OPTION not in model.options
    (patch,) = patched.options[KV_PATCHES_OPTION]
    assert patch.strength == 0.5 and patched.is_clone_of(model)


def test_bad_files_are_refused_with_the_reason(tmp_path) -> None:
    write_hypernetwork(tmp_path / "odd.pt", activation="sparkle")
    with pytest.raises(HypernetworkError, match="sparkle"):
        read_hypernetwork(tmp_path / "odd.pt")

    class Payload:
        def __reduce__(self):
            return (Path.touch, (tmp_path / "ran",))
    torch.save({32: [{}, {}], "x": Payload()}, tmp_path / "evil.pt")
    with pytest.raises(UnsafePickleError):
        read_hypernetwork(tmp_path / "evil.pt")
    assert not (tmp_path / "ran").exists()


def test_attach_chains_hypernetworks_in_order_and_keeps_a_wrapper_set_before(tiny_models, tmp_path) -> None:
    from models.hypernetwork import WRAPPER_OPTION, attach
    unet = tiny_models("sd1").unet
    write_hypernetwork(tmp_path / "h.pt")
    hn = read_hypernetwork(tmp_path / "h.pt")
    first, second = HypernetworkPatch(hn, 0.5), HypernetworkPatch(hn, -0.25)
    calls = []

    def foreign(apply_model, args):
        calls.append("foreign")
        return apply_model(args["input"], args["timestep"], args["c"])

    options = attach(attach({WRAPPER_OPTION: foreign}, unet, first), unet, second)
    assert options[KV_PATCHES_OPTION] == (first, second)
    inputs = torch.randn(1, 4, 16, 16), torch.tensor([10.0]), torch.randn(1, 5, 32)
    with torch.no_grad():
        out = options[WRAPPER_OPTION](lambda x, t, c: unet(x, t, c),
                                      {"input": inputs[0], "timestep": inputs[1], "c": inputs[2]})
        with kv_patches_installed(unet, [first, second]):
            expected = unet(*inputs)
    assert calls == ["foreign"] and torch.equal(out, expected)
