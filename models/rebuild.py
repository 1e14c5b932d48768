"""Reading loaded weights again from their file, bit for bit as the loader made them.

A model loaded in another dtype than its file's (an fp16 file, a bf16 UNet) owns its converted tensors.
Model management may then merge a LoRA into those tensors in place, which saves a second copy of every
patched weight, and undo it by computing the base values again: this module reads the same bytes from the
same file and converts them the same way the loader did, so the restored weights are bit-identical.

    rebuilder = FileRebuilder(path, lazy, owned_keys)      # at load time
    rebuilder.restore({"input_blocks.1.1.proj_in.weight": tensor})   # later: rewrite the base value

`lazy(source)` maps module keys to tensors of the opened file *before* the cast (views into the mapped file,
possibly sliced or transposed by a layout conversion); copying one into a tensor of the model's dtype is the
cast. The file stays open from load time (its inode pinned), so a file replaced or deleted on disk meanwhile
does not change what a restore reads (Linux reads the pinned file through /proc/self/fd; elsewhere the path
is read again and its size and modification time must not have changed).
"""
from __future__ import annotations

import os
import weakref
from collections.abc import Callable, Mapping
from pathlib import Path

from torch import Tensor

from models.errors import ModelFileError
from models.files import StateDictSource, cast_into, load_state_dict

LazyWeights = Callable[[StateDictSource], Mapping[str, Tensor]]


class FileRebuilder:
    """Rebuilds the base values of `keys` (the tensors the model owns) from the file at `path`."""

    def __init__(self, path: str | os.PathLike, lazy: LazyWeights, keys: frozenset[str] | set[str],
                 file_format: str | None = None) -> None:
        self.path = Path(path)
        self.lazy = lazy
        self.keys = frozenset(keys)
        self.file_format = file_format
        self._fd = os.open(self.path, os.O_RDONLY)
        self._stat = os.fstat(self._fd)
        weakref.finalize(self, os.close, self._fd)

    def _readable_path(self) -> Path:
        pinned = Path(f"/proc/self/fd/{self._fd}")
        if pinned.exists():
            return pinned
        try:
            stat = os.stat(self.path)
        except OSError as exc:
            raise ModelFileError(f"{self.path} is gone; the model's weights cannot be restored from it",
                                 "load the checkpoint again") from exc
        if (stat.st_size, stat.st_mtime_ns) != (self._stat.st_size, self._stat.st_mtime_ns):
            raise ModelFileError(f"{self.path} changed on disk since it was loaded; the model's weights cannot "
                                 "be restored from it", "load the checkpoint again")
        return self.path

    def restore(self, outs: Mapping[str, Tensor]) -> None:
        """Write the base value of each key into its tensor (same shape; the copy casts as loading did)."""
        unknown = [k for k in outs if k not in self.keys]
        if unknown:
            raise KeyError(f"{self.path.name}: cannot rebuild {unknown[:3]} (not owned converted weights)")
        with load_state_dict(self._readable_path(), file_format=self.file_format) as source:
            lazy = self.lazy(source)
            for key, out in outs.items():
                stored = lazy[key]
                cast_into(out, stored)
                source.release(stored)
