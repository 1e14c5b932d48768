"""Textual-inversion embeddings: find a file by name, read its vectors, hand them to the tokenizer.

A prompt says `embedding:name` (with or without the file's extension, possibly in a subfolder); the
text encoder's tokenizer calls an `EmbeddingLookup` (`name -> [n, C] vectors | None`, see
`models.text.prompt`) and puts the n vectors where the name stands. :class:`EmbeddingStore` is that
lookup over the "embeddings" model folders; a name it cannot find or read gives None (the tokenizer
logs a warning naming it and goes on), never an exception.

File formats (Gal et al. 2022, "An Image is Worth One Word", arXiv:2208.01618, for the method; the
layouts as A1111, diffusers and ComfyUI's `sd1_clip.load_embed` read them, for facts only):
- A1111 `.pt`: `{"string_to_token": {"*": 265}, "string_to_param": {"*": [n, C]}, "name": ..., ...}`.
- A1111 `.safetensors`: `{"emb_params": [n, C]}`; SDXL embeddings: `{"clip_l": [n, 768], "clip_g": [n, 1280]}`.
- diffusers `learned_embeds.bin`: `{"<token>": [C] or [n, C]}`.
Pickles are read with `weights_only=True` only: a file that needs any other global is refused unread.
"""
from __future__ import annotations

import logging
import os
import pickle
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import torch
from torch import Tensor

from models.errors import ModelFileError, UnsafePickleError
from models.files import SAFETENSORS_SUFFIXES, load_state_dict

log = logging.getLogger("plexus.embeddings")

EMBEDDING_SUFFIXES = (".safetensors", ".pt", ".bin")          # tried in this order for a bare name
TOWER_KEYS = ("clip_l", "clip_g")                                # SDXL files: one entry per text tower
EmbeddingLookup = Callable[[str], Tensor | None]


def load_trusted_pickle(path: Path) -> object:
    """`torch.load(weights_only=True)` with Plexus's errors: tensors, numbers, strings and containers only."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise UnsafePickleError(
            f"{path} was refused: the pickle needs code beyond tensors and plain containers, and Plexus never "
            "runs such code", "convert it to .safetensors with a trusted tool. Loader said: "
            + str(exc).splitlines()[0]) from exc
    except (RuntimeError, EOFError, OSError, ValueError) as exc:
        raise ModelFileError(f"{path} could not be read (truncated or corrupt)", str(exc)) from exc


def read_embedding_file(path: str | os.PathLike) -> dict[str, Tensor]:
    """The file's candidate vector sets by key (`"*"` for A1111 `.pt`, `emb_params`, `clip_l` ...)."""
    path = Path(path)
    if path.suffix.lower() in SAFETENSORS_SUFFIXES:
        with load_state_dict(path) as source:
            return {k: source[k] for k in source}
    data = load_trusted_pickle(path)
    if isinstance(data, Tensor):
        return {"": data}
    if not isinstance(data, Mapping):
        raise ModelFileError(f"{path} holds a {type(data).__name__}, not an embedding")
    if isinstance(data.get("string_to_param"), Mapping):                     # A1111 .pt
        return {str(k): v for k, v in data["string_to_param"].items() if isinstance(v, Tensor)}
    return {str(k): v for k, v in data.items() if isinstance(v, Tensor)}     # emb_params, clip_l, diffusers


def select_vectors(found: Mapping[str, Tensor], *, width: int | None = None, tower: str | None = None,
                   where: str = "embedding") -> Tensor:
    """The [n, C] vectors for one text tower from a file's entries.

    `tower` ("clip_l" / "clip_g") picks an SDXL entry; otherwise an entry whose width is `width` is
    preferred, then the only entry there is."""
    if not found:
        raise ModelFileError(f"{where} holds no vectors")
    if tower is not None and tower in found:
        chosen = found[tower]
    elif width is not None and any(v.shape[-1] == width for v in found.values()):
        chosen = next(v for v in found.values() if v.shape[-1] == width)
    elif len(found) == 1 or "emb_params" in found:
        chosen = found.get("emb_params", next(iter(found.values())))
    else:
        raise ModelFileError(f"{where} has several vector sets ({', '.join(sorted(found))}) and none is "
                             f"{width} wide")
    vectors = chosen.detach().float()
    if vectors.ndim == 1:
        vectors = vectors.unsqueeze(0)                                       # [C] -> [1, C]
    return vectors.reshape(-1, vectors.shape[-1])                            # [n, C]


def find_embedding(directories: Sequence[Path | str], name: str) -> Path | None:
    """The file `name` refers to in the first directory that has it: the exact relative path, else with
    each of EMBEDDING_SUFFIXES appended. Names that leave their directory are never resolved."""
    name = name.strip()
    if not name or "\x00" in name or "\\" in name or os.path.isabs(name):
        return None
    for directory in directories:
        root = Path(os.path.realpath(directory))
        for candidate in [name] + [name + s for s in EMBEDDING_SUFFIXES]:
            path = Path(os.path.realpath(root / candidate))
            if os.path.commonpath([root, path]) == str(root) and path.is_file():
                return path
    return None


def embedding_names(folders) -> list[str]:
    """Names for GET /embeddings: the files of the "embeddings" kind without their extension, e.g.
    `["easynegative", "styles/watercolor"]` (`folders` is a `storage.Folders`)."""
    return [os.path.splitext(name)[0] for name in folders.list_files("embeddings")]


class EmbeddingStore:
    """Embeddings found in `directories`, read on first use and kept while the file is unchanged."""

    def __init__(self, directories: Sequence[Path | str]) -> None:
        self.directories = [Path(d) for d in directories]
        self._cache: dict[Path, tuple[float, dict[str, Tensor]]] = {}

    def vectors(self, name: str, *, width: int | None = None, tower: str | None = None) -> Tensor | None:
        """[n, C] float32 vectors of `name`, or None (with a warning) if it is missing or unreadable."""
        path = find_embedding(self.directories, name)
        if path is None:
            return None               # the tokenizer warns "embedding:<name> does not exist"
        try:
            mtime = path.stat().st_mtime
            cached = self._cache.get(path)
            if cached is None or cached[0] != mtime:
                cached = (mtime, read_embedding_file(path))
                self._cache[path] = cached
            return select_vectors(cached[1], width=width, tower=tower, where=f"embedding {name!r} ({path.name})")
        except ModelFileError as exc:
            log.warning("embedding:%s could not be used: %s", name, exc)
            return None

    def __call__(self, name: str) -> Tensor | None:
        """The store as an `EmbeddingLookup` for any tower: an SDXL file's `clip_l`/`clip_g` entry is picked
        by the tokenizer's width check only through :meth:`lookup`, so give each tower its own there."""
        return self.vectors(name)

    def lookup(self, *, width: int | None = None, tower: str | None = None) -> EmbeddingLookup:
        """The `name -> vectors | None` callable one text tower's tokenizer takes."""
        return lambda name: self.vectors(name, width=width, tower=tower)
