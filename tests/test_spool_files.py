"""spooler/files.py's hand-over of a prefetched file: by rename, or by a durable copy across file systems."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from walbucket.core.errors import WalFileError
from walbucket.spooler import files

FP = "0123456789abcdef"
NAME = "000000010000000000000003"


def prefetched(root: Path, data: bytes = b"verified WAL") -> Path:
    path = Path(files.prefetched_path(str(root), FP, NAME))
    path.parent.mkdir(parents=True)
    path.write_bytes(data)
    path.chmod(0o600)
    return path


@pytest.fixture
def other_file_system(monkeypatch: pytest.MonkeyPatch) -> None:
    """rename(2) of the prefetched file fails with EXDEV, as when pg_wal is on another file system than the spool."""
    real = os.replace

    def replace(src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> None:
        if f"{os.sep}restore{os.sep}" in os.fspath(src):
            raise OSError(errno.EXDEV, os.strerror(errno.EXDEV))
        real(src, dst)

    monkeypatch.setattr(os, "replace", replace)


@pytest.mark.parametrize("across", [False, True], ids=["rename", "copy"])
def test_a_prefetched_file_is_handed_over_whole_and_private(
    tmp_path: Path, request: pytest.FixtureRequest, across: bool
) -> None:
    if across:
        request.getfixturevalue("other_file_system")
    source = prefetched(tmp_path / "spool")
    dest = tmp_path / "pg_wal" / "RECOVERYXLOG"
    dest.parent.mkdir()
    old = os.umask(0o022)
    try:
        assert files.hand_over(str(tmp_path / "spool"), FP, NAME, str(dest))
    finally:
        os.umask(old)
    assert dest.read_bytes() == b"verified WAL"
    assert dest.stat().st_mode & 0o777 == 0o600  # as the synchronous get writes it
    assert not source.exists()
    assert [p.name for p in dest.parent.iterdir()] == ["RECOVERYXLOG"]  # no temporary file left


def test_nothing_prefetched_is_no_hand_over(tmp_path: Path) -> None:
    assert not files.hand_over(str(tmp_path), FP, NAME, str(tmp_path / "RECOVERYXLOG"))


def test_an_unwritable_destination_across_file_systems_names_it_and_keeps_the_prefetched_file(
    tmp_path: Path, other_file_system: None
) -> None:
    source = prefetched(tmp_path / "spool")
    dest = tmp_path / "missing" / "RECOVERYXLOG"
    with pytest.raises(WalFileError, match=f"^cannot write WAL file '{dest}': No such file or directory$"):
        files.hand_over(str(tmp_path / "spool"), FP, NAME, str(dest))
    assert source.read_bytes() == b"verified WAL"
