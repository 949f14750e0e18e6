"""Atomic local writes: the destination appears complete or not at all, and no temporary file stays behind."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

from walbucket.archive.fsutil import AtomicFile, fsync_dir, write_file_atomically


def names(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


def test_commit_puts_the_bytes_at_dest(tmp_path: Path) -> None:
    dest = tmp_path / "000000010000000000000001"
    with AtomicFile(dest) as f:
        f.write(b"abc")
        f.write(memoryview(b"defg")[1:])
        assert names(tmp_path) == [f".{dest.name}.{os.getpid()}.{threading.get_ident()}.walbucket-tmp"]
        assert not dest.exists()
        f.commit()
    assert dest.read_bytes() == b"abcefg"
    assert names(tmp_path) == [dest.name]


def test_temporary_name_is_hidden_and_never_looks_like_wal(tmp_path: Path) -> None:
    f = AtomicFile(tmp_path / "RECOVERYXLOG")
    try:
        assert f.tmp.parent == tmp_path
        assert f.tmp.name.startswith(".RECOVERYXLOG.")
        assert f.tmp.name.endswith(".walbucket-tmp")
    finally:
        f.discard()


def test_discard_leaves_nothing(tmp_path: Path) -> None:
    f = AtomicFile(tmp_path / "dest")
    f.write(b"partial content")
    f.discard()
    assert names(tmp_path) == []


def test_leaving_the_block_without_commit_leaves_nothing(tmp_path: Path) -> None:
    with AtomicFile(tmp_path / "dest") as f:
        f.write(b"x" * 100_000)
    assert names(tmp_path) == []


def test_an_exception_inside_the_block_leaves_nothing(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match=r"^boom$"), AtomicFile(tmp_path / "dest") as f:
        f.write(b"x")
        raise RuntimeError("boom")
    assert names(tmp_path) == []


def test_an_exception_keeps_an_existing_dest_untouched(tmp_path: Path) -> None:
    dest = tmp_path / "dest"
    dest.write_bytes(b"old")
    with pytest.raises(RuntimeError), AtomicFile(dest) as f:
        f.write(b"new")
        raise RuntimeError("boom")
    assert dest.read_bytes() == b"old"
    assert names(tmp_path) == ["dest"]


def test_commit_replaces_an_existing_dest(tmp_path: Path) -> None:
    dest = tmp_path / "dest"
    dest.write_bytes(b"old content, longer")
    with AtomicFile(dest) as f:
        f.write(b"new")
        f.commit()
    assert dest.read_bytes() == b"new"


def test_discard_after_commit_keeps_the_file(tmp_path: Path) -> None:
    dest = tmp_path / "dest"
    f = AtomicFile(dest)
    f.write(b"kept")
    f.commit()
    f.discard()
    f.discard()
    assert dest.read_bytes() == b"kept"


@pytest.mark.parametrize(("mode", "expected"), [(0o600, 0o600), (0o640, 0o640)])
def test_file_mode(tmp_path: Path, mode: int, expected: int) -> None:
    old = os.umask(0o022)
    try:
        with AtomicFile(tmp_path / "dest", mode) as f:
            f.commit()
    finally:
        os.umask(old)
    assert (tmp_path / "dest").stat().st_mode & 0o777 == expected


def test_a_stale_temporary_file_of_the_same_thread_is_truncated(tmp_path: Path) -> None:
    dest = tmp_path / "dest"
    stale = tmp_path / f".dest.{os.getpid()}.{threading.get_ident()}.walbucket-tmp"
    stale.write_bytes(b"stale stale stale")
    with AtomicFile(dest) as f:
        f.write(b"fresh")
        f.commit()
    assert dest.read_bytes() == b"fresh"
    assert names(tmp_path) == ["dest"]


def test_two_threads_writing_one_name_use_two_temporary_files(tmp_path: Path) -> None:
    dest = tmp_path / "dest"
    other: list[AtomicFile] = []
    with AtomicFile(dest) as mine:
        thread = threading.Thread(target=lambda: other.append(AtomicFile(dest)))
        thread.start()
        thread.join()
        assert other[0].tmp != mine.tmp
        mine.write(b"mine")
        other[0].write(b"other's")
        other[0].commit()
        mine.commit()
    assert dest.read_bytes() == b"mine"
    assert names(tmp_path) == ["dest"]


def test_a_missing_directory_raises_before_anything_is_written(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        AtomicFile(tmp_path / "nowhere" / "dest")
    assert names(tmp_path) == []


def test_write_file_atomically(tmp_path: Path) -> None:
    write_file_atomically(tmp_path / "state.json", b"{}")
    assert (tmp_path / "state.json").read_bytes() == b"{}"
    assert names(tmp_path) == ["state.json"]


def test_fsync_dir_accepts_a_directory_and_refuses_a_file(tmp_path: Path) -> None:
    fsync_dir(tmp_path)
    (tmp_path / "file").write_bytes(b"")
    with pytest.raises(NotADirectoryError):
        fsync_dir(tmp_path / "file")
