"""storage.safe_paths: every way out of a folder is refused; upload names are made safe."""
from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

from storage.errors import UnsafePathError
from storage.safe_paths import (check_relative_name, claim_free_path, next_free_name, resolve_inside,
                                sanitize_filename)


@pytest.fixture
def root(tmp_path: Path) -> Path:
    (tmp_path / "root" / "sub").mkdir(parents=True)
    (tmp_path / "root" / "sub" / "a.png").write_bytes(b"x")
    (tmp_path / "secret.txt").write_text("secret")
    return tmp_path / "root"


def test_plain_names_resolve_inside(root: Path) -> None:
    assert resolve_inside(root, "sub/a.png") == Path(os.path.realpath(root)) / "sub" / "a.png"
    assert resolve_inside(root, "sub", "a.png") == resolve_inside(root, "sub/a.png")
    assert resolve_inside(root, "") == Path(os.path.realpath(root))
    assert resolve_inside(root, "./sub//a.png").name == "a.png"
    assert resolve_inside(root, "new/not-yet.png").name == "not-yet.png"  # need not exist


@pytest.mark.parametrize("name, reason", [
    ("../secret.txt", ".."),
    ("sub/../../secret.txt", ".."),
    ("..", ".."),
    ("/etc/passwd", "absolute"),
    ("C:/Windows/win.ini", "absolute"),
    ("c:secret", "absolute"),
    ("..\\secret.txt", "backslash"),
    ("sub\\a.png", "backslash"),
    ("a.png\x00.txt", "NUL"),
    ("%2e%2e/secret.txt", "percent"),
    ("%2E%2E%2Fsecret.txt", "percent"),
    ("..%2fsecret.txt", "percent"),
    ("%252e%252e/secret.txt", "percent"),
    ("sub%5c..%5csecret", "percent"),
    ("a%00.png", "percent"),
])
def test_escapes_are_refused(root: Path, name: str, reason: str) -> None:
    with pytest.raises(UnsafePathError) as caught:
        resolve_inside(root, name)
    assert reason.lower() in caught.value.message.lower()
    assert caught.value.to_json()["type"] == "unsafe_path"


def test_each_joined_part_is_checked(root: Path) -> None:
    with pytest.raises(UnsafePathError):
        resolve_inside(root, "sub", "../../secret.txt")
    with pytest.raises(UnsafePathError):
        resolve_inside(root, "/tmp", "a.png")


def test_non_string_is_refused(root: Path) -> None:
    with pytest.raises(UnsafePathError):
        check_relative_name(None)  # type: ignore[arg-type]


@pytest.mark.skipif(not hasattr(os, "symlink"), reason="no symlinks")
def test_symlink_leading_out_is_refused(root: Path, tmp_path: Path) -> None:
    os.symlink(tmp_path / "secret.txt", root / "link.txt")
    os.symlink(tmp_path, root / "linkdir")
    with pytest.raises(UnsafePathError, match="symlink"):
        resolve_inside(root, "link.txt")
    with pytest.raises(UnsafePathError, match="symlink"):
        resolve_inside(root, "linkdir/secret.txt")
    # trusted folders (model folders) may link elsewhere, the textual checks still apply
    assert resolve_inside(root, "link.txt", allow_symlinks_out=True).name == "link.txt"
    with pytest.raises(UnsafePathError):
        resolve_inside(root, "../secret.txt", allow_symlinks_out=True)


@pytest.mark.skipif(not hasattr(os, "symlink"), reason="no symlinks")
def test_symlink_staying_inside_is_allowed(root: Path, tmp_path: Path) -> None:
    os.symlink(root / "sub" / "a.png", root / "alias.png")
    assert resolve_inside(root, "alias.png") == Path(os.path.realpath(root / "sub" / "a.png"))


@pytest.mark.skipif(not hasattr(os, "symlink"), reason="no symlinks")
def test_root_that_is_itself_a_symlink_works(root: Path, tmp_path: Path) -> None:
    os.symlink(root, tmp_path / "root-link")
    assert resolve_inside(tmp_path / "root-link", "sub/a.png").read_bytes() == b"x"


@pytest.mark.parametrize("raw, clean", [
    ("photo.png", "photo.png"),
    ("../../etc/passwd", "passwd"),
    ("C:\\Users\\me\\cat.png", "cat.png"),
    ("a<b>c:d\"e|f?g*h.png", "a_b_c_d_e_f_g_h.png"),
    ("bell\x07\x00.png", "bell__.png"),
    ("...hidden", "hidden"),
    ("trailing. . ", "trailing"),
    ("CON.txt", "_CON.txt"),
    ("lpt1", "_lpt1"),
    ("", "file"),
    ("..", "file"),
    ("/", "file"),
])
def test_sanitize_filename(raw: str, clean: str) -> None:
    assert sanitize_filename(raw) == clean


def test_sanitize_filename_limits_length_and_keeps_extension() -> None:
    name = sanitize_filename("é" * 300 + ".png")
    assert len(name.encode("utf-8")) <= 255 and name.endswith(".png")


def test_next_free_name(tmp_path: Path) -> None:
    assert next_free_name(tmp_path, "a.png") == "a.png"
    (tmp_path / "a.png").write_bytes(b"")
    assert next_free_name(tmp_path, "a.png") == "a (1).png"
    (tmp_path / "a (1).png").write_bytes(b"")
    assert next_free_name(tmp_path, "a.png") == "a (2).png"
    (tmp_path / "noext").write_bytes(b"")
    assert next_free_name(tmp_path, "noext") == "noext (1)"


def test_claim_free_path_never_hands_out_a_name_twice(tmp_path: Path) -> None:
    claimed: list[Path] = []
    lock = threading.Lock()

    def claim() -> None:
        path = claim_free_path(tmp_path / "up", "img.png")
        with lock:
            claimed.append(path)

    threads = [threading.Thread(target=claim) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len({p.name for p in claimed}) == 8
    assert "img.png" in {p.name for p in claimed} and "img (7).png" in {p.name for p in claimed}
