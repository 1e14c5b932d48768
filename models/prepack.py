"""Convolution weights packed once into oneDNN's blocked layout on the CPU, for a block of forwards (a
sampling run), instead of on every call.

On the CPU, `F.conv2d` hands oneDNN the weight in PyTorch's plain [out, in, kh, kw] layout, and oneDNN
re-orders it into the blocked layout its kernel reads, on every call; a full-size SD1.5 UNet forward does
that for 1.1 GiB of bf16 weights. Packing each weight once, on the convolution's first call inside the block
(its input shape picks the layout), and running `mkldnn._convolution_pointwise` on the packed copy from then
on makes a UNet forward faster by 15% (bf16) and 19% (fp32) at 32x32 latents and by 1-6% at 64x64, where
the convolutions themselves take longer (bench/unet.py `--prepack on off`, bench/results/unet-session3.json).

Memory: the packed copy replaces the plain weight for the length of the block. Once a weight is packed its
storage is shrunk to nothing; when the block ends the storage is grown back and refilled from the packed
copy (re-ordering is a permutation, so the values come back bit for bit). A weight that is a view into a
mapped model file (kept in its stored dtype) instead has its file pages dropped from memory; they are read
back from the file when next touched. The weights are never held twice, and the tensor objects stay the
same, so whatever holds them (the model manager's in-place patches and their rebuild from the file) finds
them as they were. The price is that nothing but the convolutions' own forward may read those weights
inside the block: the sampler opens it after loading and patching and closes it before returning
(diffusion/prepacking.py).

bf16 `nn.Linear` layers are packed the same way on request (`is_packing_linears`, which the sampler sets:
diffusion/prepacking.py): `mkldnn._reorder_linear_weight` on the first call, `mkldnn._linear_pointwise` after,
instead of oneDNN re-blocking each matmul's weight per call (bench/roofline.py `--pack-linears on off`).

Only plain `nn.Conv2d` modules without hooks, on the CPU, in fp32 or bf16, with one group and zero padding
mode are packed, and only when the weight either owns its whole (resizable) storage, shared with no tensor
but those the caller names as the same weight, or views a mapped model file; everything else runs as
usual. A call that the packed kernel cannot take (another dtype or device, an unbatched input) runs
`F.conv2d` on a temporary plain copy.
"""
from __future__ import annotations

import contextlib
import ctypes
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from models.files import MappedRange, model_file_ranges

PACKABLE_DTYPES = (torch.float32, torch.bfloat16)


class UnpackError(RuntimeError):
    """A packed weight could not be put back (its storage could not grow again): the module's weights are
    lost and it must be loaded again."""


def is_packing_available(dtype: torch.dtype) -> bool:
    """oneDNN is built in, and (for bf16) the CPU runs its bf16 kernels."""
    if not torch.backends.mkldnn.is_available():
        return False
    return dtype != torch.bfloat16 or bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())


def _is_packable_conv(conv: nn.Module) -> bool:
    if type(conv) is not nn.Conv2d or conv._forward_hooks or conv._forward_pre_hooks:
        return False
    weight, bias = conv.weight, conv.bias
    if weight.device.type != "cpu" or weight.dtype not in PACKABLE_DTYPES or weight.requires_grad:
        return False
    if conv.groups != 1 or conv.padding_mode != "zeros" or isinstance(conv.padding, str):
        return False
    if bias is not None and (bias.dtype != weight.dtype or bias.device != weight.device):
        return False
    return weight.is_contiguous() and is_packing_available(weight.dtype)


def _is_packable_linear(linear: nn.Module) -> bool:
    """A plain bf16 `nn.Linear` on the CPU (fp32 linears run MKL's sgemm, which packing through oneDNN does
    not beat)."""
    if type(linear) is not nn.Linear or linear._forward_hooks or linear._forward_pre_hooks:
        return False
    weight, bias = linear.weight, linear.bias
    if weight.device.type != "cpu" or weight.dtype != torch.bfloat16 or weight.requires_grad:
        return False
    if bias is not None and (bias.dtype != weight.dtype or bias.device != weight.device):
        return False
    return weight.is_contiguous() and is_packing_available(weight.dtype)


def owns_its_storage(weight: Tensor, known_aliases: int = 0) -> bool:
    """The weight's storage is resizable, holds exactly the weight, and no tensor shares it but the
    `known_aliases` ones the caller vouches for as the same weight (a model manager's own handle on it)."""
    storage = weight.untyped_storage()
    return (storage.resizable() and weight.storage_offset() == 0
            and storage.nbytes() == weight.numel() * weight.element_size()
            and _storage_users(storage) == 1 + known_aliases)


def file_range_of(weight: Tensor, file_ranges: Mapping[int, MappedRange]) -> MappedRange | None:
    """The mapped model file the weight is a view into (models.files.model_file_ranges), if any."""
    storage = weight.untyped_storage()
    found = file_ranges.get(storage.data_ptr())
    if found is None or storage.resizable() or found.length != storage.nbytes() or not found.contains(weight):
        return None
    return found


def is_packable(conv: nn.Module, known_aliases: int = 0,
                file_ranges: Mapping[int, MappedRange] | None = None) -> bool:
    """Whether `prepacked_convolutions` would pack this module (see the module notes)."""
    if not _is_packable_conv(conv):
        return False
    return owns_its_storage(conv.weight, known_aliases) or \
        file_range_of(conv.weight, file_ranges or {}) is not None


def _load_malloc_trim():
    try:
        fn = ctypes.CDLL(None).malloc_trim               # glibc
    except (OSError, AttributeError):
        return None
    fn.argtypes, fn.restype = [ctypes.c_size_t], ctypes.c_int
    return fn


_malloc_trim = _load_malloc_trim()


def _return_freed_memory() -> None:
    """Give the heap pages freed by the packed copies back to the system. Every run frees and allocates
    the weights' size again; glibc keeps much of it otherwise, and the process's RSS creeps up run by run."""
    if _malloc_trim is not None:
        _malloc_trim(0)


def _storage_users(storage: torch.UntypedStorage) -> int:
    """How many tensors share `storage` (the Python object `storage` itself holds one more reference). A
    weight whose storage another tensor also uses (tied weights, a view, another model built from the same
    tensors) must not give its storage up."""
    return torch._C._storage_Use_Count(storage._cdata) - 1


class PackedConvolution:
    """Stands in for one convolution's `forward` inside the block: packs on the first call, then runs the
    packed kernel; `unpack` puts the plain weight back."""

    def __init__(self, conv: nn.Conv2d, file_range: MappedRange | None = None):
        self.conv = conv
        self.packed: Tensor | None = None
        self.nbytes = conv.weight.untyped_storage().nbytes()
        self.file_range = file_range          # a view into a mapped model file: pages dropped, not the storage

    def _arguments(self) -> tuple[list[int], list[int], list[int]]:
        c = self.conv
        return list(c.padding), list(c.stride), list(c.dilation)

    def _takes(self, x: Tensor) -> bool:
        return x.dim() == 4 and x.device.type == "cpu" and x.dtype == self.conv.weight.dtype

    def __call__(self, x: Tensor) -> Tensor:
        conv = self.conv
        padding, stride, dilation = self._arguments()
        if not self._takes(x):
            weight = conv.weight if self.packed is None or self.file_range else self.packed.to_dense()
            return F.conv2d(x, weight, conv.bias, conv.stride, conv.padding, conv.dilation, conv.groups)
        if self.packed is None:
            self.packed = torch.ops.mkldnn._reorder_convolution_weight(
                conv.weight, padding, stride, dilation, 1, list(x.shape))
            if self.file_range is not None:
                self.file_range.release(conv.weight)            # read back from the file when next needed
            else:
                conv.weight.untyped_storage().resize_(0)        # the packed copy is the weight now
        return torch.ops.mkldnn._convolution_pointwise(x, self.packed, conv.bias, padding, stride, dilation, 1,
                                                       "none", [], "")

    def unpack(self) -> None:
        if self.packed is None or self.file_range is not None:
            self.packed = None
            return
        weight = self.conv.weight
        with torch.inference_mode(False), torch.no_grad():
            weight.untyped_storage().resize_(self.nbytes)
            weight.copy_(self.packed.to_dense())
        self.packed = None


class PackedLinear(PackedConvolution):
    """The same for one bf16 `nn.Linear`: packed for oneDNN's matmul on the first call (its row count is the
    layout hint), then `mkldnn._linear_pointwise` on the packed copy."""

    def _takes(self, x: Tensor) -> bool:
        return x.dim() >= 2 and x.device.type == "cpu" and x.dtype == self.conv.weight.dtype

    def __call__(self, x: Tensor) -> Tensor:
        linear = self.conv
        if not self._takes(x):
            weight = linear.weight if self.packed is None or self.file_range else self.packed.to_dense()
            return F.linear(x, weight, linear.bias)
        if self.packed is None:
            self.packed = torch.ops.mkldnn._reorder_linear_weight(linear.weight, x.numel() // x.shape[-1])
            if self.file_range is not None:
                self.file_range.release(linear.weight)
            else:
                linear.weight.untyped_storage().resize_(0)
        return torch.ops.mkldnn._linear_pointwise(x, self.packed, linear.bias, "none", [], "")


@contextlib.contextmanager
def prepacked_convolutions(module: nn.Module, known_aliases: Iterable[Tensor] = (),
                           is_packing_linears: bool = False) -> Iterator[int]:
    """Inside the block, every packable convolution of `module` runs on a packed copy of its weight, made
    on its first call; on leaving (also on an exception) the plain weights are back, bit-identical.
    `known_aliases`: tensors that share storage with the module's weights as those same weights (see
    `is_packable`). Yields how many convolutions take part. Re-entering for a module already inside a block
    does nothing. `is_packing_linears`: bf16 `nn.Linear` layers too (PackedLinear)."""
    if getattr(module, "_plexus_prepacked", False):
        yield 0
        return
    aliases = Counter(t.untyped_storage().data_ptr() for t in known_aliases
                      if t.device.type == "cpu" and t.untyped_storage().nbytes() > 0)
    file_ranges = model_file_ranges()
    packers: list[PackedConvolution] = []
    owned: Counter = Counter()
    for m in module.modules():
        if _is_packable_conv(m):
            kind: type[PackedConvolution] = PackedConvolution
        elif is_packing_linears and _is_packable_linear(m):
            kind = PackedLinear
        else:
            continue
        if owns_its_storage(m.weight, aliases[m.weight.untyped_storage().data_ptr()]):
            packers.append(kind(m))
            owned[m.weight.untyped_storage().data_ptr()] += 1
        elif (found := file_range_of(m.weight, file_ranges)) is not None:
            packers.append(kind(m, found))
    # one owned weight in two modules (tied): giving its storage up for one would break the other
    packers = [p for p in packers
               if p.file_range is not None or owned[p.conv.weight.untyped_storage().data_ptr()] == 1]
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
        if packers:
            _return_freed_memory()
        if errors:
            raise UnpackError(f"{len(errors)} packed convolution weights could not be put back "
                              f"({type(errors[0]).__name__}: {errors[0]})") from errors[0]
