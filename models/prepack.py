"""Convolution weights packed once into oneDNN's blocked layout on the CPU, for a block of forwards (a
sampling run), instead of on every call.

On the CPU, `F.conv2d` hands oneDNN the weight in PyTorch's plain [out, in, kh, kw] layout, and oneDNN
re-orders it into the blocked layout its kernel reads on every call; a full-size SD1.5 UNet forward does
that for 1.1 GiB of bf16 weights. Packing each weight once, on the convolution's first call inside the
block (its input shape picks the layout), and running `mkldnn._convolution_pointwise` on the packed copy
from then on, makes a bf16 UNet forward 18% faster at 32x32 latents and 6% at 64x64, and an fp32 one 7%
at 64x64 (bench/unet.py, `--prepack on off`).

Memory: the packed copy replaces the plain weight for the length of the block. Once a weight is packed its
storage is shrunk to nothing; when the block ends the storage is grown back and refilled from the packed
copy (re-ordering is a permutation, so the values come back bit for bit). The weights are never held twice,
and the tensor objects stay the same, so whatever holds them (the model manager's in-place patches and
their rebuild from the file) finds them as they were. The price is that nothing but the convolutions'
own forward may read those weights inside the block: the sampler opens it after loading and patching and
closes it before returning (diffusion/ksampler.py).

Only plain `nn.Conv2d` modules without hooks, on the CPU, in fp32 or bf16, with one group, zero padding
mode, and a weight that owns its whole (resizable) storage, shared with no tensor but those the caller
names as the same weight, are packed; everything else runs as usual. A call
that the packed kernel cannot take (another dtype or device, an unbatched input) runs `F.conv2d` on a
temporary plain copy.
"""
from __future__ import annotations

import contextlib
from collections import Counter
from collections.abc import Iterable, Iterator

import torch
import torch.nn.functional as F
from torch import Tensor, nn

PACKABLE_DTYPES = (torch.float32, torch.bfloat16)


class UnpackError(RuntimeError):
    """A packed weight could not be put back (its storage could not grow again): the module's weights are
    lost and it must be loaded again."""


def is_packing_available(dtype: torch.dtype) -> bool:
    """oneDNN is built in, and (for bf16) the CPU runs its bf16 kernels."""
    if not torch.backends.mkldnn.is_available():
        return False
    return dtype != torch.bfloat16 or bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())


def is_packable(conv: nn.Module, known_aliases: int = 0) -> bool:
    """Whether `prepacked_convolutions` would pack this module (see the module notes). `known_aliases`: how
    many other tensors the caller vouches for that share the weight's storage as the same weight (a model
    manager's own handle on it); any further user makes the weight unpackable."""
    if type(conv) is not nn.Conv2d or conv._forward_hooks or conv._forward_pre_hooks:
        return False
    weight, bias = conv.weight, conv.bias
    if weight.device.type != "cpu" or weight.dtype not in PACKABLE_DTYPES or weight.requires_grad:
        return False
    if conv.groups != 1 or conv.padding_mode != "zeros" or isinstance(conv.padding, str):
        return False
    if bias is not None and (bias.dtype != weight.dtype or bias.device != weight.device):
        return False
    storage = weight.untyped_storage()
    return (weight.is_contiguous() and weight.storage_offset() == 0 and storage.resizable()
            and storage.nbytes() == weight.numel() * weight.element_size()
            and _storage_users(storage) == 1 + known_aliases and is_packing_available(weight.dtype))


def _storage_users(storage: torch.UntypedStorage) -> int:
    """How many tensors share `storage` (the Python object `storage` itself holds one more reference). A
    weight whose storage another tensor also uses (tied weights, a view, another model built from the same
    tensors) must not give its storage up."""
    return torch._C._storage_Use_Count(storage._cdata) - 1


class PackedConvolution:
    """Stands in for one convolution's `forward` inside the block: packs on the first call, then runs the
    packed kernel; `unpack` puts the plain weight back."""

    def __init__(self, conv: nn.Conv2d):
        self.conv = conv
        self.packed: Tensor | None = None
        self.nbytes = conv.weight.untyped_storage().nbytes()

    def _arguments(self) -> tuple[list[int], list[int], list[int]]:
        c = self.conv
        return list(c.padding), list(c.stride), list(c.dilation)

    def _takes(self, x: Tensor) -> bool:
        return x.dim() == 4 and x.device.type == "cpu" and x.dtype == self.conv.weight.dtype

    def __call__(self, x: Tensor) -> Tensor:
        conv = self.conv
        padding, stride, dilation = self._arguments()
        if not self._takes(x):
            weight = conv.weight if self.packed is None else self.packed.to_dense()
            return F.conv2d(x, weight, conv.bias, conv.stride, conv.padding, conv.dilation, conv.groups)
        if self.packed is None:
            self.packed = torch.ops.mkldnn._reorder_convolution_weight(
                conv.weight, padding, stride, dilation, 1, list(x.shape))
            conv.weight.untyped_storage().resize_(0)            # the packed copy is the weight now
        return torch.ops.mkldnn._convolution_pointwise(x, self.packed, conv.bias, padding, stride, dilation, 1,
                                                       "none", [], "")

    def unpack(self) -> None:
        if self.packed is None:
            return
        weight = self.conv.weight
        with torch.inference_mode(False), torch.no_grad():
            weight.untyped_storage().resize_(self.nbytes)
            weight.copy_(self.packed.to_dense())
        self.packed = None


@contextlib.contextmanager
def prepacked_convolutions(module: nn.Module, known_aliases: Iterable[Tensor] = ()) -> Iterator[int]:
    """Inside the block, every packable convolution of `module` runs on a packed copy of its weight, made
    on its first call; on leaving (also on an exception) the plain weights are back, bit-identical.
    `known_aliases`: tensors that share storage with the module's weights as those same weights (see
    `is_packable`). Yields how many convolutions take part. Re-entering for a module already inside a block
    does nothing."""
    if getattr(module, "_plexus_prepacked", False):
        yield 0
        return
    aliases = Counter(t.untyped_storage().data_ptr() for t in known_aliases
                      if t.device.type == "cpu" and t.untyped_storage().nbytes() > 0)
    convs = [m for m in module.modules()
             if isinstance(m, nn.Conv2d) and is_packable(m, aliases[m.weight.untyped_storage().data_ptr()])]
    tied = Counter(m.weight.untyped_storage().data_ptr() for m in convs)     # one weight in two modules
    packers = [PackedConvolution(m) for m in convs if tied[m.weight.untyped_storage().data_ptr()] == 1]
    module._plexus_prepacked = True
    for packer in packers:
        packer.conv.forward = packer
    try:
        yield len(packers)
    finally:
        errors = []
        for packer in packers:
            del packer.conv.forward
            try:
                packer.unpack()
            except Exception as exc:  # noqa: BLE001 - every weight must get its chance; re-raised below
                errors.append(exc)
        module._plexus_prepacked = False
        if errors:
            raise UnpackError(f"{len(errors)} packed convolution weights could not be put back "
                              f"({type(errors[0]).__name__}: {errors[0]})") from errors[0]
