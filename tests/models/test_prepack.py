"""Convolutions on weights packed once (models/prepack.py): the same results as plain convolutions, the
weights given back bit for bit, never held twice, and everything that cannot be packed left alone."""
from __future__ import annotations

import os

import pytest
import torch
from torch import nn

from models import prepack
from models.checkpoint import load_checkpoint
from models.files import model_file_ranges
from models.prepack import PackedConvolution, UnpackError, is_packable, prepacked_convolutions

pytestmark = pytest.mark.skipif(not prepack.is_packing_available(torch.float32), reason="PyTorch built without oneDNN")


def unet_inputs(dtype: torch.dtype):
    g = torch.Generator().manual_seed(1)
    return (torch.randn(2, 4, 16, 16, generator=g).to(dtype), torch.tensor([10.0, 900.0]),
            torch.randn(2, 5, 32, generator=g).to(dtype))


@pytest.mark.parametrize("dtype,tolerance", [(torch.float32, 1e-5), (torch.bfloat16, 0.05)])
def test_a_packed_unet_computes_what_the_plain_one_does(tiny_checkpoint, dtype, tolerance):
    if not prepack.is_packing_available(dtype):
        pytest.skip("this CPU has no oneDNN bf16 kernels")
    unet = load_checkpoint(tiny_checkpoint("sd1")).unet
    for p in unet.parameters():        # owned copies (fp32 weights of a file stay views into it)
        p.data = p.data.to(dtype, copy=True)
    # SD1's 1x1 transformer projections (TokenConv1x1) run as a Linear in their own forward: not packed
    projections = {m.proj_in for m in unet.modules() if hasattr(m, "proj_in")} | \
        {m.proj_out for m in unet.modules() if hasattr(m, "proj_out")}
    assert projections and all(type(m).__name__ == "TokenConv1x1" for m in projections)
    convs = [m for m in unet.modules() if isinstance(m, nn.Conv2d) and m not in projections]
    before = {name: p.clone() for name, p in unet.named_parameters()}
    inputs = unet_inputs(dtype)
    with torch.inference_mode():
        expected = unet(*inputs).float()
        with prepacked_convolutions(unet) as count:
            assert count == len(convs) > 0
            first, second = unet(*inputs).float(), unet(*inputs).float()
            # packed on the first call; the plain weights' storage is given up, so nothing is held twice
            assert all(c.forward.packed is not None for c in convs)
            assert all(c.weight.untyped_storage().nbytes() == 0 for c in convs)
            assert all("forward" not in vars(c) and c.weight.untyped_storage().nbytes() > 0 for c in projections)
    scale = expected.abs().max()
    assert (first - expected).abs().max() <= tolerance * scale
    assert torch.equal(first, second)
    for name, p in unet.named_parameters():                    # back, bit for bit, in the same tensors
        assert torch.equal(p, before[name]), name
    assert all("forward" not in c.__dict__ for c in convs)
    with torch.inference_mode():
        assert torch.equal(unet(*inputs).float(), expected)


def test_weights_come_back_when_the_block_fails():
    conv = nn.Conv2d(8, 16, 3, padding=1).requires_grad_(False)
    weight, saved = conv.weight, conv.weight.clone()
    with pytest.raises(ValueError, match="inside"), torch.inference_mode(), prepacked_convolutions(conv):
        conv(torch.randn(1, 8, 8, 8))
        raise ValueError("inside the block")
    assert conv.weight is weight and torch.equal(conv.weight, saved)


def test_calls_the_packed_kernel_cannot_take_run_on_a_plain_copy():
    conv = nn.Conv2d(8, 16, 3, padding=1).requires_grad_(False)
    x = torch.randn(1, 8, 8, 8)
    with torch.inference_mode():
        expected, unbatched, as_double = conv(x), conv(x[0]), conv.double()(x.double()).float()
        conv.float()
        with prepacked_convolutions(conv):
            assert torch.allclose(conv(x), expected, atol=1e-5)           # packs
            assert torch.allclose(conv(x[0]), unbatched, atol=1e-5)       # unbatched: plain copy
            with pytest.raises(RuntimeError):
                conv(x.double())                                          # as plain conv2d would
    assert torch.allclose(as_double, expected, atol=1e-5)


def test_what_cannot_be_packed_is_left_alone():
    plain = nn.Conv2d(4, 4, 3, padding=1)
    hooked = nn.Conv2d(4, 4, 3, padding=1)
    hooked.register_forward_hook(lambda *_: None)
    grouped = nn.Conv2d(4, 4, 3, padding=1, groups=2)
    half = nn.Conv2d(4, 4, 3, padding=1).half()
    same = nn.Conv2d(4, 4, 3, padding="same")
    shared = nn.Conv2d(4, 4, 3, padding=1)
    shared.weight = nn.Parameter(torch.randn(2, 4, 4, 3, 3)[0])     # a view: does not own its storage
    for m in (plain, hooked, grouped, half, same, shared):
        m.requires_grad_(False)
    assert is_packable(plain)
    assert not any(is_packable(m) for m in (hooked, grouped, half, same, shared))
    model = nn.Sequential(plain, hooked, grouped, same, shared)
    x = torch.randn(1, 4, 6, 6)
    with torch.inference_mode():
        expected = model(x)
        with prepacked_convolutions(model) as count:
            assert count == 1
            assert torch.allclose(model(x), expected, atol=1e-5)
            with prepacked_convolutions(model) as nested:                # re-entering does nothing
                assert nested == 0 and torch.allclose(model(x), expected, atol=1e-5)
            assert isinstance(plain.forward, PackedConvolution)
    assert "forward" not in plain.__dict__


def test_weights_shared_with_other_tensors_are_not_packed():
    conv = nn.Conv2d(4, 4, 3).requires_grad_(False)
    assert is_packable(conv)
    alias = conv.weight.detach()                      # another tensor on the same storage
    assert not is_packable(conv) and is_packable(conv, known_aliases=1)
    x = torch.randn(1, 4, 6, 6)
    with torch.inference_mode():
        expected = conv(x)
        with prepacked_convolutions(conv) as count:
            assert count == 0
        with prepacked_convolutions(conv, known_aliases=[alias]) as count:
            assert count == 1 and torch.allclose(conv(x), expected, atol=1e-5)
            assert alias.untyped_storage().nbytes() == 0      # the same weight: given up together
    assert torch.equal(alias, conv.weight)
    twin = nn.Conv2d(4, 4, 3).requires_grad_(False)
    twin.weight = conv.weight                         # tied: one parameter in two modules
    with torch.inference_mode(), prepacked_convolutions(nn.Sequential(conv, twin)) as count:
        assert count == 0


def test_trainable_weights_are_not_packed():
    assert not is_packable(nn.Conv2d(4, 4, 3))


def test_a_weight_that_cannot_be_put_back_is_reported(monkeypatch):
    model = nn.Sequential(nn.Conv2d(4, 4, 3), nn.Conv2d(4, 4, 3)).requires_grad_(False)
    saved = model[1].weight.clone()
    original = PackedConvolution.unpack

    def fail_for_the_first(self):
        if self.conv is model[0]:
            raise MemoryError("no memory to grow the storage")
        original(self)
    monkeypatch.setattr(PackedConvolution, "unpack", fail_for_the_first)
    with pytest.raises(UnpackError, match="1 packed convolution"), torch.inference_mode(), \
            prepacked_convolutions(model):
        model(torch.randn(1, 4, 8, 8))
    assert torch.equal(model[1].weight, saved)                  # the others were still put back


def _resident_kib(start: int, length: int) -> int:
    """Resident KiB of the mappings inside [start, start + length) (/proc/self/smaps)."""
    total, inside = 0, False
    with open("/proc/self/smaps") as smaps:
        for line in smaps:
            fields = line.split()
            if "-" in fields[0] and len(fields) >= 5 and ":" in fields[3]:       # a mapping's header line
                low = int(fields[0].split("-")[0], 16)
                inside = start <= low < start + length
            elif inside and fields[0] == "Rss:":
                total += int(fields[1])
    return total


@pytest.mark.skipif(not os.path.exists("/proc/self/smaps"), reason="reads /proc/self/smaps (Linux)")
def test_weights_viewing_the_file_are_packed_and_their_pages_dropped(tiny_checkpoint):
    """fp32 weights of an fp32 file stay views into its mapping: packing drops their pages, which are read
    back from the file afterwards."""
    path = tiny_checkpoint("sd1")
    ckpt = load_checkpoint(path)
    unet = ckpt.unet
    convs = [m for m in unet.modules() if type(m) is nn.Conv2d]         # not the TokenConv1x1 projections
    assert all(not c.weight.untyped_storage().resizable() for c in convs)      # views, not copies
    before = {name: p.clone() for name, p in unet.named_parameters()}
    inputs = unet_inputs(torch.float32)
    mapping = next(r for r in model_file_ranges().values() if r.contains(convs[0].weight))
    with torch.inference_mode():
        expected = unet(*inputs)
        resident = _resident_kib(mapping.address, mapping.length)
        with prepacked_convolutions(unet) as count:
            assert count == len(convs)
            got = unet(*inputs)
            dropped = _resident_kib(mapping.address, mapping.length)
    conv_kib = sum(c.weight.numel() * 4 for c in convs) // 1024
    # the tiny model's weights are a few pages each, and a page shared with a bias or norm that the forward
    # still reads comes straight back: 47% of the convolutions' bytes measured dropped (all but the edges at
    # full size); nothing at all would be without the release
    assert resident - dropped >= conv_kib // 3, (resident, dropped, conv_kib)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5 * expected.abs().max().item())
    for name, p in unet.named_parameters():
        assert torch.equal(p, before[name]), name


def test_bf16_linears_are_packed_on_request_and_come_back(tiny_checkpoint):
    if not prepack.is_packing_available(torch.bfloat16):
        pytest.skip("this CPU has no oneDNN bf16 kernels")
    unet = load_checkpoint(tiny_checkpoint("sd1")).unet
    for p in unet.parameters():
        p.data = p.data.to(torch.bfloat16, copy=True)
    linears = [m for m in unet.modules() if type(m) is nn.Linear]
    convs = [m for m in unet.modules() if type(m) is nn.Conv2d]
    before = {name: p.clone() for name, p in unet.named_parameters()}
    inputs = unet_inputs(torch.bfloat16)
    with torch.inference_mode():
        expected = unet(*inputs).float()
        with prepacked_convolutions(unet) as count:                     # by default: convolutions only
            assert count == len(convs)
        with prepacked_convolutions(unet, is_packing_linears=True) as count:
            assert count == len(convs) + len(linears) and linears
            out = unet(*inputs).float()
            assert all(isinstance(m.forward, prepack.PackedLinear) for m in linears)
            assert all(m.weight.untyped_storage().nbytes() == 0 for m in linears)
    assert (out - expected).abs().max() <= 0.05 * expected.abs().max()
    for name, p in unet.named_parameters():
        assert torch.equal(p, before[name]), name
    fp32 = nn.Linear(4, 4).requires_grad_(False)                       # fp32 linears stay with MKL
    with torch.inference_mode(), prepacked_convolutions(fp32, is_packing_linears=True) as count:
        assert count == 0
