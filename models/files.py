"""Reading model files: `.safetensors` memory-mapped, pickles (`.ckpt`/`.pt`/`.pth`/`.bin`) weights-only.

`load_state_dict(path)` returns a `StateDictSource`: a read-only mapping name -> tensor whose tensors are
materialised one at a time when asked for, plus `shapes()`/`entries()` that describe every tensor without
reading its data (what detection needs).

- safetensors: the header is parsed here (8-byte little-endian length + JSON, see
  https://github.com/huggingface/safetensors#format) to check the file is complete, then tensors are read
  through `safe_open`, which memory-maps the file; the whole file is never copied into RAM at once.
- pickles: `torch.load(weights_only=True, mmap=True)` only. A pickle that needs any global beyond tensors and
  plain containers is refused by torch's restricted unpickler before anything runs; we turn that into an
  `UnsafePickleError` that says how to convert the file. Nested `{"state_dict": ...}` wrappers are unwrapped.
"""
from __future__ import annotations

import json
import os
import pickle
import struct
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import safe_open

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

    def __init__(self, path: Path, entries: dict[str, TensorEntry], reader, metadata: dict[str, str]):
        self.path = path
        self._entries = entries
        self._reader = reader          # name -> Tensor
        self.metadata = metadata

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

    def close(self) -> None:
        self._reader = _closed_reader(self.path)

    def __enter__(self) -> StateDictSource:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _closed_reader(path: Path):
    def read(name: str) -> torch.Tensor:
        raise ModelFileError(f"{path}: the file was closed before tensor '{name}' was read")
    return read


def load_state_dict(path: str | os.PathLike) -> StateDictSource:
    """Open a model file of any supported format; tensors are read when accessed."""
    path = Path(path)
    if not path.is_file():
        raise ModelFileError(f"Model file not found: {path}")
    suffix = path.suffix.lower()
    if suffix in SAFETENSORS_SUFFIXES:
        return _open_safetensors(path)
    if suffix in PICKLE_SUFFIXES:
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
    header, _ = read_safetensors_header(path)
    entries: dict[str, TensorEntry] = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        dtype = SAFETENSORS_DTYPES.get(info.get("dtype"))
        if dtype is None:
            raise ModelFileError(f"{path}: tensor '{name}' has unsupported dtype {info.get('dtype')!r}")
        entries[name] = TensorEntry(name, tuple(info["shape"]), dtype)
    try:
        handle = safe_open(str(path), framework="pt", device="cpu")   # memory-mapped
    except Exception as exc:  # safetensors raises its own SafetensorError for malformed files
        raise ModelFileError(f"{path} could not be opened as .safetensors", str(exc)) from exc

    def read(name: str) -> torch.Tensor:
        try:
            return handle.get_tensor(name)
        except Exception as exc:
            raise ModelFileError(f"{path}: tensor '{name}' could not be read", str(exc)) from exc

    return StateDictSource(path, entries, read, dict(header.get("__metadata__") or {}))


def _open_pickle(path: Path) -> StateDictSource:
    try:
        try:
            obj = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError as exc:
            if "mmap" not in str(exc):
                raise
            obj = torch.load(path, map_location="cpu", weights_only=True)  # legacy (non-zip) format
    except pickle.UnpicklingError as exc:
        raise UnsafePickleError(
            f"{path} was refused: the pickle needs code beyond tensors and plain containers, and Plexus "
            f"never runs such code", "convert the file to .safetensors with a trusted tool, or use a "
            f"safetensors release of the model. Loader said: " + str(exc).splitlines()[0]) from exc
    except (RuntimeError, EOFError, OSError, ValueError, struct.error) as exc:
        raise ModelFileError(f"{path} could not be read (truncated or corrupt)", str(exc)) from exc
    tensors = _unwrap(obj, path)
    entries = {k: TensorEntry(k, tuple(v.shape), v.dtype) for k, v in tensors.items()}
    return StateDictSource(path, entries, tensors.__getitem__, {})


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
