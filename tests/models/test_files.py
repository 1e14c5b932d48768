"""models.files: memory-mapped safetensors, weights-only pickles, wrappers, clear errors for bad files."""
from __future__ import annotations

import os
import pickle
import zipfile

import pytest
import torch
from safetensors.torch import save_file

from models.errors import ModelFileError, UnsafePickleError
from models.files import StateDictSource, load_state_dict, read_safetensors_header


@pytest.fixture
def tensors():
    return {"a.weight": torch.randn(3, 4), "b.bias": torch.arange(5, dtype=torch.int64),
            "c": torch.randn(2, 2).to(torch.bfloat16), "d": torch.randn(7).half()}


def test_safetensors_entries_without_reading_and_lazy_values(tmp_path, tensors):
    path = tmp_path / "m.safetensors"
    save_file(tensors, path)
    with load_state_dict(path) as sd:
        assert isinstance(sd, StateDictSource)
        assert sd.shapes() == {k: tuple(v.shape) for k, v in tensors.items()}
        assert {e.name: e.dtype for e in sd.entries()} == {k: v.dtype for k, v in tensors.items()}
        for k, v in tensors.items():
            assert torch.equal(sd[k], v)
            assert sd[k].dtype == v.dtype


def test_safetensors_is_memory_mapped_not_read(tmp_path, monkeypatch):
    """Opening and reading one tensor must not read the whole file through Python file objects."""
    path = tmp_path / "big.safetensors"
    save_file({"small": torch.ones(2), "big": torch.zeros(4_000_000)}, path)
    reads: list[int] = []
    import builtins
    real_open = builtins.open

    class Spy:
        def __init__(self, f):
            self.f = f

        def read(self, n=-1):
            data = self.f.read(n)
            reads.append(len(data))
            return data

        def __getattr__(self, name):
            return getattr(self.f, name)

        def __enter__(self):
            return self

        def __exit__(self, *a):
            self.f.close()

    monkeypatch.setattr(builtins, "open", lambda *a, **k: Spy(real_open(*a, **k)))
    with load_state_dict(path) as sd:
        assert torch.equal(sd["small"], torch.ones(2))
    assert sum(reads) < 10_000, reads         # header only; tensor data comes through the mmap


@pytest.mark.parametrize("suffix", [".ckpt", ".pt", ".pth", ".bin"])
def test_pickle_formats_and_nested_state_dict(tmp_path, tensors, suffix):
    path = tmp_path / f"m{suffix}"
    torch.save({"state_dict": {"state_dict": tensors}, "global_step": 12, "epoch": 3}, path)
    with load_state_dict(path) as sd:
        assert set(sd) == set(tensors)
        assert all(torch.equal(sd[k], v) for k, v in tensors.items())


def test_legacy_non_zip_pickle(tmp_path, tensors):
    path = tmp_path / "old.ckpt"
    torch.save({"state_dict": tensors}, path, _use_new_zipfile_serialization=False)
    with load_state_dict(path) as sd:
        assert torch.equal(sd["a.weight"], tensors["a.weight"])


class WritesAFile:
    """A pickle payload that would create a file when unpickled."""

    def __init__(self, target: str):
        self.target = target

    def __reduce__(self):
        return (open, (self.target, "w"))


@pytest.mark.parametrize("zip_format", [True, False])
def test_malicious_pickle_is_refused_and_never_executed(tmp_path, zip_format):
    target = tmp_path / "pwned.txt"
    path = tmp_path / "evil.ckpt"
    torch.save({"state_dict": {"w": torch.ones(1)}, "payload": WritesAFile(str(target))}, path,
               _use_new_zipfile_serialization=zip_format)
    assert not target.exists()
    with pytest.raises(UnsafePickleError, match="evil.ckpt") as info:
        load_state_dict(path)
    assert "safetensors" in str(info.value)
    assert not target.exists()


def test_raw_pickle_with_os_system_is_refused(tmp_path):
    target = tmp_path / "pwned2.txt"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {target}",))
    path = tmp_path / "evil.bin"
    with zipfile.ZipFile(path, "w") as z:     # hand-made torch zip layout holding an evil data.pkl
        z.writestr("evil/data.pkl", pickle.dumps({"x": Evil()}, protocol=2))
        z.writestr("evil/version", "3\n")
        z.writestr("evil/byteorder", "little")
    with pytest.raises(ModelFileError):
        load_state_dict(path)
    assert not target.exists()


def test_truncated_safetensors_names_the_file(tmp_path, tensors):
    path = tmp_path / "cut.safetensors"
    save_file(tensors, path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 10])
    with pytest.raises(ModelFileError, match="cut.safetensors.*truncated"):
        load_state_dict(path)


@pytest.mark.parametrize("content", [b"", b"\x05\x00", b"\xff" * 64, b"\x10\x00\x00\x00\x00\x00\x00\x00{not json!!!}"])
def test_corrupt_safetensors_names_the_file(tmp_path, content):
    path = tmp_path / "bad.safetensors"
    path.write_bytes(content)
    with pytest.raises(ModelFileError, match="bad.safetensors"):
        load_state_dict(path)


def test_truncated_ckpt_names_the_file(tmp_path, tensors):
    path = tmp_path / "cut.ckpt"
    torch.save({"state_dict": tensors}, path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelFileError, match="cut.ckpt"):
        load_state_dict(path)


def test_missing_file_and_no_tensors(tmp_path):
    with pytest.raises(ModelFileError, match="not found"):
        load_state_dict(tmp_path / "nope.safetensors")
    path = tmp_path / "empty.ckpt"
    torch.save({"global_step": 1}, path)
    with pytest.raises(ModelFileError, match="no tensors"):
        load_state_dict(path)


def test_header_reader_reports_metadata(tmp_path):
    path = tmp_path / "m.safetensors"
    save_file({"x": torch.ones(1)}, path, metadata={"modelspec.title": "t"})
    header, start = read_safetensors_header(path)
    assert header["__metadata__"] == {"modelspec.title": "t"} and start > 8
    with load_state_dict(path) as sd:
        assert sd.metadata == {"modelspec.title": "t"}


def test_streaming_writer_matches_the_safetensors_library(tmp_path):
    from safetensors import safe_open

    from models.testing import write_safetensors_streaming
    tensors = {"z": torch.randn(3, 5), "a": torch.randn(2).to(torch.bfloat16), "s": torch.tensor(7, dtype=torch.int32),
               "h": torch.randn(4, 1, 2).half()}
    path = tmp_path / "w.safetensors"
    write_safetensors_streaming(path, {k: (tuple(v.shape), v.dtype) for k, v in tensors.items()}, tensors.__getitem__)
    with safe_open(str(path), framework="pt") as f:
        assert set(f.keys()) == set(tensors)
        for k, v in tensors.items():
            assert torch.equal(f.get_tensor(k), v)


def _mapped_rss_kib(path) -> int:
    """Resident KiB of every mapping of `path` (/proc/self/smaps)."""
    total, is_file = 0, False
    target = str(path.resolve())
    for line in open("/proc/self/smaps"):
        fields = line.split()
        if "-" in fields[0] and len(fields) >= 5 and ":" in fields[3]:       # a mapping's header line
            is_file = len(fields) == 6 and fields[5] == target
        elif is_file and fields[0] == "Rss:":
            total += int(fields[1])
    return total


@pytest.mark.skipif(not os.path.exists("/proc/self/smaps"), reason="reads /proc/self/smaps (Linux)")
def test_release_gives_back_the_pages_of_a_converted_tensor(tmp_path):
    path = tmp_path / "big.safetensors"
    values = torch.randn(4_000_000).half()
    save_file({"big": values, "small": torch.ones(3)}, path)
    with load_state_dict(path) as sd:
        view = sd["big"]
        assert sd.holds(view) and not sd.holds(values)
        converted = view.to(torch.bfloat16)                       # reads every page of the tensor
        assert _mapped_rss_kib(path) >= 7_000
        sd.release(view)
        assert _mapped_rss_kib(path) < 100
        sd.release(converted)                                      # outside the mapping: left alone
        assert torch.equal(view, values)                           # the pages fault back in from the file
        assert torch.equal(converted, values.to(torch.bfloat16))


def test_misaligned_offsets_are_read_as_copies(tmp_path):
    """A writer that does not pad its header: tensor data starts at an odd offset."""
    import json
    import struct
    values = torch.arange(6, dtype=torch.float32)
    header = json.dumps({"x": {"dtype": "F32", "shape": [6], "data_offsets": [0, 24]}}).encode()
    header += b" " * ((8 - len(header) % 8) % 8 + 1)               # 8 + len(header) is odd
    path = tmp_path / "odd.safetensors"
    path.write_bytes(struct.pack("<Q", len(header)) + header + values.numpy().tobytes())
    with load_state_dict(path) as sd:
        assert torch.equal(sd["x"], values) and not sd.holds(sd["x"])


def test_offsets_that_disagree_with_the_shape_are_refused(tmp_path):
    import json
    import struct
    header = json.dumps({"x": {"dtype": "F32", "shape": [6], "data_offsets": [0, 16]}}).encode()
    header += b" " * (-len(header) % 8)
    path = tmp_path / "bad.safetensors"
    path.write_bytes(struct.pack("<Q", len(header)) + header + bytes(24))
    with pytest.raises(ModelFileError, match="needs 24 bytes"):
        load_state_dict(path)


@pytest.mark.parametrize("src_dtype,dst_dtype", [(torch.float16, torch.bfloat16), (torch.float32, torch.bfloat16),
                                                 (torch.bfloat16, torch.float32), (torch.float16, torch.float32),
                                                 (torch.float32, torch.float16)])
def test_blockwise_cast_equals_a_direct_cast(src_dtype, dst_dtype):
    from models.files import CAST_CHUNK_ELEMENTS, cast
    src = (torch.randn(3 * CAST_CHUNK_ELEMENTS + 17) * 300).to(src_dtype)
    src[:4] = torch.tensor([float("inf"), float("-inf"), float("nan"), 1e-8])
    got = cast(src, dst_dtype)
    expected = src.to(dst_dtype)
    assert got.dtype == dst_dtype and torch.equal(got[2:3].isnan(), expected[2:3].isnan())
    assert torch.equal(torch.cat([got[:2], got[3:]]), torch.cat([expected[:2], expected[3:]]))
    transposed = src[4: 4 + 64 * 64].view(64, 64).t()                  # non-contiguous: plain copy, same values
    assert torch.equal(cast(transposed, dst_dtype), transposed.to(dst_dtype))
