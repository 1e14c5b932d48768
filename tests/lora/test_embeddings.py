"""Textual-inversion embeddings: every file format, name resolution, exact placement in the encoding.

The placement check is independent of the loader: an embedding whose vectors are the token-embedding
rows of real words must encode exactly like the prompt with those words written out, and a
different embedding changes the encoding from its position on (causal attention) and nowhere before.
"""
from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from models.embeddings import EmbeddingStore, embedding_names, find_embedding, read_embedding_file
from models.text.bpe import BPETokenizer
from storage.folders import Folders


@pytest.fixture
def encoder(tiny_models):
    return tiny_models("sd1").text_encoders[0]


def word_rows(encoder, words: str) -> tuple[list[int], torch.Tensor]:
    ids = BPETokenizer.default().encode(words)
    return ids, encoder.model.token_embedding.weight[ids].detach().clone()          # [n, C]


def write_a1111_pt(path: Path, vectors: torch.Tensor) -> Path:
    torch.save({"string_to_token": {"*": 265}, "string_to_param": {"*": vectors}, "name": path.stem,
                "step": 3000, "sd_checkpoint": "abcdef12", "sd_checkpoint_name": "v1-5"}, path)
    return path


def test_formats_are_read(tmp_path: Path) -> None:
    v768, v1280 = torch.randn(3, 768), torch.randn(3, 1280)
    write_a1111_pt(tmp_path / "a1111.pt", v768)
    save_file({"emb_params": v768}, tmp_path / "a1111.safetensors")
    save_file({"clip_l": v768, "clip_g": v1280}, tmp_path / "sdxl.safetensors")
    torch.save({"<cat-toy>": v768[0]}, tmp_path / "learned_embeds.bin")
    store = EmbeddingStore([tmp_path])
    assert torch.equal(store.vectors("a1111.pt", width=768), v768)
    assert torch.equal(store.vectors("a1111.safetensors"), v768)
    assert torch.equal(store.vectors("sdxl", tower="clip_g"), v1280)
    assert torch.equal(store.vectors("sdxl", width=768), v768)
    assert torch.equal(store.vectors("learned_embeds"), v768[:1])                # one vector -> [1, C]
    assert set(read_embedding_file(tmp_path / "a1111.pt")) == {"*"}


def test_names_resolve_with_or_without_extension_and_never_leave_the_folder(tmp_path: Path) -> None:
    (tmp_path / "emb" / "styles").mkdir(parents=True)
    save_file({"emb_params": torch.randn(1, 8)}, tmp_path / "emb" / "styles" / "water.safetensors")
    (tmp_path / "secret.pt").write_bytes(b"x")
    dirs = [tmp_path / "emb"]
    assert find_embedding(dirs, "styles/water") == (tmp_path / "emb/styles/water.safetensors").resolve()
    assert find_embedding(dirs, "styles/water.safetensors") is not None
    assert find_embedding(dirs, "../secret") is None and find_embedding(dirs, "/etc/passwd") is None
    folders = Folders(tmp_path)
    folders.add_path("embeddings", tmp_path / "emb", is_default=True)
    assert embedding_names(folders) == ["styles/water"]


def test_an_embedding_stands_exactly_where_its_name_is(encoder, tmp_path: Path) -> None:
    ids, rows = word_rows(encoder, "photo cat")
    assert len(ids) == 2
    save_file({"emb_params": rows}, tmp_path / "two.safetensors")                # a two-vector embedding
    lookup = EmbeddingStore([tmp_path]).lookup(width=encoder.config.hidden_size)
    with_embedding, _ = encoder.encode("a embedding:two dog", embeddings=lookup)
    written_out, _ = encoder.encode("a photo cat dog")
    assert torch.equal(with_embedding, written_out)

    save_file({"emb_params": torch.randn(2, encoder.config.hidden_size)}, tmp_path / "other.safetensors")
    other, _ = encoder.encode("a embedding:other.safetensors dog", embeddings=lookup)
    position = 2                                                                 # start token, "a", then it
    assert torch.equal(other[:, :position], written_out[:, :position])
    assert not torch.allclose(other[:, position], written_out[:, position])
    chunk = encoder.tokenize("a embedding:two dog", lookup)[0]
    assert [torch.is_tensor(t) and t.ndim == 1 for t, _ in chunk[:5]] == [False, False, True, True, False]


def test_a_missing_embedding_warns_with_its_name_and_the_prompt_still_encodes(encoder, tmp_path, caplog) -> None:
    lookup = EmbeddingStore([tmp_path]).lookup(width=encoder.config.hidden_size)
    with caplog.at_level(logging.WARNING):
        cond, _ = encoder.encode("a embedding:nowhere_to_be_found dog", embeddings=lookup)
    assert "nowhere_to_be_found" in caplog.text
    assert torch.equal(cond, encoder.encode("a dog")[0])


class Payload:
    """A pickle that would run code when loaded (it must never be)."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_an_unsafe_pickle_is_refused_unread_with_a_warning(tmp_path: Path, caplog) -> None:
    marker = tmp_path / "ran"
    torch.save({"string_to_param": {"*": torch.randn(1, 8)}, "extra": Payload(marker)}, tmp_path / "evil.pt")
    assert not marker.exists()
    with caplog.at_level(logging.WARNING):
        assert EmbeddingStore([tmp_path]).vectors("evil") is None
    assert not marker.exists() and "evil" in caplog.text and "refused" in caplog.text


def test_the_clip_object_encodes_with_a_store_as_its_lookup(tmp_path: Path) -> None:
    from diffusion.conditioning import encode_text
    from diffusion.loading import load_checkpoint_file
    from model_management import MemorySettings, ModelManager
    from tests.diffusion.helpers import write_tiny

    _, clip, _ = load_checkpoint_file(write_tiny(tmp_path / "tiny.safetensors"),
                                      ModelManager(MemorySettings(device="cpu", force_fp32=True)))
    encoder = clip.towers[0]
    _, rows = word_rows(encoder, "photo cat")
    (tmp_path / "emb").mkdir()
    write_a1111_pt(tmp_path / "emb" / "two.pt", rows)
    with_store = clip.with_embedding_lookup(EmbeddingStore([tmp_path / "emb"]))
    [[cond, _]] = encode_text(with_store, "a embedding:two dog")
    [[written, _]] = encode_text(clip, "a photo cat dog")
    assert torch.equal(cond, written)
