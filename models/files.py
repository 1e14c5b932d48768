"""Reading model files: `.safetensors` memory-mapped, pickles (`.ckpt`/`.pt`/`.pth`/`.bin`) weights-only.

`load_state_dict(path)` returns a `StateDictSource`: a read-only mapping name -> tensor whose tensors are
materialised one at a time when asked for, plus `shapes()`/`entries()` that describe every tensor without
reading its data (what detection needs).

- safetensors: the header is parsed here (8-byte little-endian length + JSON, see
  https://github.com/huggingface/safetensors#format) to check the file is complete, then the file is
  memory-mapped (private, copy-on-write) and each tensor is a view of its bytes: nothing is read until used,
  and the whole file is never copied into RAM.
- pickles: `torch.load(weights_only=True, mmap=True)` only. A pickle that needs any global beyond tensors and
  plain containers is refused by torch's restricted unpickler before anything runs; we turn that into an
  `UnsafePickleError` that says how to convert the file. Nested `{"state_dict": ...}` wrappers are unwrapped.

A loader that converts a tensor (fp16 in the file, bf16 in the model) holds the converted copy; the file
pages it read would stay in the process's resident set as long as the mapping lives. `release(tensor)` gives
those pages back (they stay in the OS page cache, shared and reclaimable), so a converted model is held once,
not once converted plus once mapped. Releasing is only ever applied to memory inside the file's mapping.
"""
from __future__ import annotations

import ctypes
import json
import mmap
import os
import pickle
import struct
import sys
import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
from models.errors import ModelFileError, UnsafePickleError

SAFETENSORS_SUFFIXES = (".safetensors", ".sft")
PICKLE_SUFFIXES = (".ckpt", ".pt", ".pth", ".bin")

SAFETENSORS_DTYPES: dict[str, torch.dtype] = {
    "F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
    "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
    "BOOL": torch.bool, "F8_E4M3": torch.float8_e4m3fn, "F8_E5M2": torch.float8_e5m2,
}
SAFETENSORS_NAMES: dict[torch.dtype, str] = {v: k for k, v in SAFETENSORS_DTYPES.items()}

# Keys under which training frameworks nest the weights ({"state_dict": {...}, "global_step": ...}).
WRAPPER_KEYS = ("state_dict", "model_state_dict", "module")


@dataclass(frozen=True)
class TensorEntry:
    """What detection needs to know about one tensor, read without touching its data."""

    name: str
    shape: tuple[int, ...]
    dtype: torch.dtype


class StateDictSource(Mapping[str, torch.Tensor]):
    """A read-only, lazily materialised state dict. Use as a context manager or call `close()`."""

    def __init__(self, path: Path, entries: dict[str, TensorEntry], reader, metadata: dict[str, str],
                 mapped: MappedRange | None = None, file_format: str = "safetensors"):
        self.path = path
        self._entries = entries
        self._reader = reader          # name -> Tensor
        self.metadata = metadata
        self._mapped = mapped          # the file's mapping, when tensors are views into it
        self._format = file_format

    def __getitem__(self, name: str) -> torch.Tensor:
        if name not in self._entries:
            raise KeyError(name)
        return self._reader(name)

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def entries(self) -> Iterator[TensorEntry]:
        return iter(self._entries.values())

    def shapes(self) -> dict[str, tuple[int, ...]]:
        return {e.name: e.shape for e in self._entries.values()}

    def dtype_of(self, name: str) -> torch.dtype:
        return self._entries[name].dtype

    @property
    def file_format(self) -> str:
        return self._format

    def holds(self, tensor: torch.Tensor) -> bool:
        """Whether `tensor`'s memory lies in this file's mapping (a view, not a copy of its own)."""
        return self._mapped is not None and self._mapped.contains(tensor)

    def release_all(self) -> None:
        """Drop every page of the file from the resident set (tensors still viewing it fault them back)."""
        if self._mapped is not None:
            self._mapped.release_range()

    def release(self, tensor: torch.Tensor) -> None:
        """Drop the file pages under `tensor` (a view this source returned) from the resident set, once the
        caller holds a converted copy. Memory outside the file's mapping is never touched."""
        if self._mapped is not None:
            self._mapped.release(tensor)

    def close(self) -> None:
        self._reader = _closed_reader(self.path)
        self._mapped = None

    def __enter__(self) -> StateDictSource:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _closed_reader(path: Path):
    def read(name: str) -> torch.Tensor:
        raise ModelFileError(f"{path}: the file was closed before tensor '{name}' was read")
    return read


CAST_CHUNK_ELEMENTS = 1 << 18       # 1 MiB of fp32 scratch: stays in the CPU's cache


def cast_into(out: torch.Tensor, src: torch.Tensor) -> torch.Tensor:
    """`out.copy_(src)` with the dtype conversion done block by block through a small fp32 buffer on the
    CPU: the same values (fp16/bf16 -> fp32 is exact, then one rounding), measured 2-4x faster than a direct
    fp16 -> bf16 copy, which streams the whole tensor through memory twice. Other cases copy directly."""
    is_blockwise = (out.device.type == "cpu" and src.device.type == "cpu" and out.dtype != src.dtype
                    and out.is_floating_point() and src.is_floating_point() and out.is_contiguous()
                    and src.is_contiguous() and out.shape == src.shape and out.numel() > CAST_CHUNK_ELEMENTS)
    if not is_blockwise:
        return out.copy_(src)
    flat_out, flat_src = out.view(-1), src.view(-1)
    scratch = _cast_scratch()
    # one thread: each block is too small to split, and on a busy machine every op's thread barrier can wait
    # a whole time slice for a descheduled worker (the same reason as model_management's row-block merge)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for start in range(0, flat_src.numel(), CAST_CHUNK_ELEMENTS):
            stop = min(start + CAST_CHUNK_ELEMENTS, flat_src.numel())
            block = scratch[:stop - start]
            block.copy_(flat_src[start:stop])
            flat_out[start:stop].copy_(block)
    finally:
        torch.set_num_threads(threads)
    return out


_scratch = threading.local()


def _cast_scratch() -> torch.Tensor:
    """One fp32 block buffer per thread, kept: a fresh one per tensor, freed between the model's large
    allocations, fragments the heap (measured: +200 MiB resident after loading SD1.5)."""
    buffer = getattr(_scratch, "buffer", None)
    if buffer is None:
        buffer = _scratch.buffer = torch.empty(CAST_CHUNK_ELEMENTS, dtype=torch.float32)
    return buffer


def cast(src: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """`src.to(dtype)` through `cast_into` (returns `src` itself when the dtype already matches)."""
    if src.dtype == dtype:
        return src
    return cast_into(torch.empty(src.shape, dtype=dtype, device=src.device), src)


def load_state_dict(path: str | os.PathLike, *, file_format: str | None = None) -> StateDictSource:
    """Open a model file of any supported format; tensors are read when accessed. `file_format`
    ("safetensors" / "pickle") overrides the suffix (for paths without one, such as /proc/self/fd/N)."""
    path = Path(path)
    if not path.is_file():
        raise ModelFileError(f"Model file not found: {path}")
    suffix = path.suffix.lower()
    if file_format == "safetensors" or (file_format is None and suffix in SAFETENSORS_SUFFIXES):
        return _open_safetensors(path)
    if file_format == "pickle" or (file_format is None and suffix in PICKLE_SUFFIXES):
        return _open_pickle(path)
    with open(path, "rb") as f:   # unknown suffix: sniff (zip = torch.save, else try safetensors)
        head = f.read(4)
    return _open_pickle(path) if head[:2] == b"PK" else _open_safetensors(path)


def read_safetensors_header(path: Path) -> tuple[dict, int]:
    """The parsed JSON header and the byte offset where tensor data starts; checks the file is complete."""
    size = path.stat().st_size
    with open(path, "rb") as f:
        raw_len = f.read(8)
        if len(raw_len) < 8:
            raise ModelFileError(f"{path} is not a valid .safetensors file", f"it is only {size} bytes long")
        (header_len,) = struct.unpack("<Q", raw_len)
        if header_len > size - 8 or header_len > 100_000_000:
            raise ModelFileError(f"{path} is not a valid .safetensors file (truncated or corrupt)",
                                 f"header claims {header_len} bytes but the file has {size}")
        try:
            header = json.loads(f.read(header_len))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ModelFileError(f"{path} is not a valid .safetensors file (corrupt header)", str(exc)) from exc
    if not isinstance(header, dict):
        raise ModelFileError(f"{path} is not a valid .safetensors file", "the header is not a JSON object")
    data_start = 8 + header_len
    data_end = max((v["data_offsets"][1] for k, v in header.items() if k != "__metadata__"), default=0)
    if data_start + data_end > size:
        raise ModelFileError(
            f"{path} is truncated", f"its header describes {data_start + data_end} bytes but the file has "
            f"{size}; download or copy it again")
    return header, data_start


def _open_safetensors(path: Path) -> StateDictSource:
    header, data_start = read_safetensors_header(path)
    entries: dict[str, TensorEntry] = {}
    spans: dict[str, tuple[int, int]] = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        dtype = SAFETENSORS_DTYPES.get(info.get("dtype"))
        if dtype is None:
            raise ModelFileError(f"{path}: tensor '{name}' has unsupported dtype {info.get('dtype')!r}")
        shape = tuple(info["shape"])
        begin, end = info["data_offsets"]
        expected = _numel(shape) * torch.empty((), dtype=dtype).element_size()
        if end - begin != expected:
            raise ModelFileError(f"{path} is not a valid .safetensors file (corrupt header)",
                                 f"tensor '{name}' of shape {list(shape)} needs {expected} bytes, its offsets "
                                 f"give {end - begin}")
        entries[name] = TensorEntry(name, shape, dtype)
        spans[name] = (data_start + begin, data_start + end)
    try:
        data = _map_file(path)
    except (OSError, RuntimeError) as exc:
        raise ModelFileError(f"{path} could not be memory-mapped", str(exc)) from exc
    mapped = MappedRange(data.data_ptr(), data.numel())

    def read(name: str) -> torch.Tensor:
        begin, end = spans[name]
        entry = entries[name]
        raw = data[begin:end]
        if begin % entry.dtype.itemsize:          # misaligned (odd writers): a private copy, never a view
            raw = raw.clone()
        return raw.view(entry.dtype).view(entry.shape)

    return StateDictSource(path, entries, read, dict(header.get("__metadata__") or {}), mapped)


def _numel(shape: tuple[int, ...]) -> int:
    n = 1
    for d in shape:
        n *= d
    return n


# start address -> (length, resolved path) of every file `_map_file` mapped; checked against /proc/self/maps
# before use (a mapping may be gone and its addresses reused)
_FILE_MAPPINGS: dict[int, tuple[int, str]] = {}


def _map_file(path: Path) -> torch.Tensor:
    """The whole file as a uint8 tensor over a private (copy-on-write) memory mapping."""
    size = path.stat().st_size
    storage = torch.UntypedStorage.from_file(str(path), False, size)
    if size:
        _FILE_MAPPINGS[storage.data_ptr()] = (size, str(path.resolve()))
    return torch.empty(0, dtype=torch.uint8).set_(storage)


def model_file_ranges() -> dict[int, MappedRange]:
    """The model files this process has mapped (`load_state_dict` of a .safetensors) and still maps, by start
    address: tensors that view them can have their pages dropped and read back from the file (nothing ever
    writes into these private mappings). Linux only (/proc/self/maps); empty elsewhere."""
    maps = Path("/proc/self/maps")
    if not _FILE_MAPPINGS or not maps.exists():
        return {}
    spans: dict[str, list[tuple[int, int]]] = {}
    for line in maps.read_text().splitlines():
        parts = line.split(maxsplit=5)
        if len(parts) == 6 and parts[1].endswith("p"):                  # private mappings of a file
            low, high = (int(x, 16) for x in parts[0].split("-"))
            spans.setdefault(parts[5], []).append((low, high))
    live = {}
    for start, (length, path) in list(_FILE_MAPPINGS.items()):
        pieces = sorted(spans.get(path, ()))
        covered, end = start, start + length
        for low, high in pieces:                        # one mapping can show as adjacent pieces
            if low <= covered < high:
                covered = high
        if covered >= end:
            live[start] = MappedRange(start, length)
        elif not any(low <= start < high for low, high in pieces):
            del _FILE_MAPPINGS[start]                   # unmapped: forget it
    return live


def file_view_test() -> Callable[[torch.Tensor], bool]:
    """Whether a tensor views a model file mapped now (`model_file_ranges`, `MappedRange.contains`): what
    model_management is handed to tell a tensor whose pages are the file's (page cache) from one that owns
    its memory."""
    ranges = list(model_file_ranges().values())
    return lambda tensor: any(r.contains(tensor) for r in ranges)


def release_file_pages(tensors) -> int:
    """Drop the resident pages of those `tensors` that view a mapped model file (the next read faults them
    back in from the page cache or the file); returns the bytes advised. Other tensors are left alone."""
    ranges = list(model_file_ranges().values())
    done = 0
    for tensor in tensors:
        found = next((r for r in ranges if r.contains(tensor)), None)
        if found is not None and tensor.numel():
            found.release(tensor)
            done += tensor.numel() * tensor.element_size()
    return done


class MappedRange:
    """An address range that maps a model file; `release` drops pages inside it from the resident set."""

    def __init__(self, address: int, length: int) -> None:
        self.address, self.length = address, length

    def contains(self, tensor: torch.Tensor) -> bool:
        ptr = tensor.data_ptr()
        return tensor.device.type == "cpu" and self.address <= ptr and \
            ptr + tensor.numel() * tensor.element_size() <= self.address + self.length

    def release_range(self) -> None:
        if _madvise is not None and self.length:
            _madvise(self.address, self.length, MADV_DONTNEED)

    def release(self, tensor: torch.Tensor) -> None:
        if _madvise is None or not self.contains(tensor) or tensor.numel() == 0:
            return
        page = mmap.PAGESIZE
        ptr = tensor.data_ptr()
        low = max(self.address, ptr - ptr % page)
        high = ptr + tensor.numel() * tensor.element_size()
        high = min(self.address + self.length, high + (-high % page))
        # MADV_DONTNEED on unmodified pages of a private file mapping: the next read faults them back in from
        # the page cache, so this is safe even for pages shared with a neighbouring tensor
        _madvise(low, high - low, MADV_DONTNEED)


MADV_DONTNEED = 4


def _load_madvise():
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        fn = libc.madvise
    except (OSError, AttributeError):
        return None
    fn.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    fn.restype = ctypes.c_int
    return fn


_madvise = _load_madvise()


def _mapped_range_of(path: Path, tensor: torch.Tensor) -> MappedRange | None:
    """The mapping of `path` that holds `tensor`, from /proc/self/maps (Linux), or None."""
    maps = Path("/proc/self/maps")
    if not maps.exists():
        return None
    target = str(path.resolve())
    ranges: list[list[int]] = []
    for line in maps.read_text().splitlines():
        parts = line.split(maxsplit=5)
        if len(parts) == 6 and parts[5] == target:
            low, high = (int(x, 16) for x in parts[0].split("-"))
            if ranges and ranges[-1][1] == low:
                ranges[-1][1] = high                       # one mapping can show as adjacent pieces
            else:
                ranges.append([low, high])
    ptr = tensor.data_ptr()
    found = next((r for r in ranges if r[0] <= ptr < r[1]), None)
    return MappedRange(found[0], found[1] - found[0]) if found else None


def _open_pickle(path: Path) -> StateDictSource:
    is_mapped = True
    try:
        try:
            obj = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError as exc:
            if "mmap" not in str(exc):
                raise
            obj = torch.load(path, map_location="cpu", weights_only=True)  # legacy (non-zip) format
            is_mapped = False
    except pickle.UnpicklingError as exc:
        raise UnsafePickleError(
            f"{path} was refused: the pickle needs code beyond tensors and plain containers, and Plexus "
            f"never runs such code", "convert the file to .safetensors with a trusted tool, or use a "
            f"safetensors release of the model. Loader said: " + str(exc).splitlines()[0]) from exc
    except (RuntimeError, EOFError, OSError, ValueError, struct.error) as exc:
        raise ModelFileError(f"{path} could not be read (truncated or corrupt)", str(exc)) from exc
    tensors = _unwrap(obj, path)
    entries = {k: TensorEntry(k, tuple(v.shape), v.dtype) for k, v in tensors.items()}
    probe = next((t for t in tensors.values() if t.numel()), None)
    mapped = _mapped_range_of(path, probe) if is_mapped and probe is not None else None
    return StateDictSource(path, entries, tensors.__getitem__, {}, mapped, "pickle")


def _unwrap(obj, path: Path) -> dict[str, torch.Tensor]:
    """Peel `{"state_dict": {...}}` wrappers (possibly nested) and keep only the tensors."""
    while isinstance(obj, Mapping):
        inner = next((obj[k] for k in WRAPPER_KEYS if isinstance(obj.get(k), Mapping)), None)
        if inner is None:
            break
        obj = inner
    if not isinstance(obj, Mapping):
        raise ModelFileError(f"{path} holds a {type(obj).__name__}, not a state dict of tensors")
    tensors = {str(k): v for k, v in obj.items() if isinstance(v, torch.Tensor)}
    if not tensors:
        raise ModelFileError(f"{path} holds no tensors", f"top-level keys: {sorted(map(str, obj))[:20]}")
    return tensors
