"""Durable local file writes: temp file in the destination's directory, fsync, rename, fsync the directory.

Imports only os: the fast path (spooler/files.py) hands prefetched files over with these too. Paths are ``str`` or
``pathlib.Path``; a Path given is a Path kept.
"""

from __future__ import annotations

import os
from _thread import get_ident

TYPE_CHECKING = False
if TYPE_CHECKING:
    from pathlib import Path
    from types import TracebackType

__all__ = ["CHUNK", "AtomicFile", "fsync_dir", "write_file_atomically"]

CHUNK = 1 << 20  # local files are read and written in pieces of this size: memory stays bounded


def fsync_dir(directory: str | Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class AtomicFile:
    """Write ``dest`` all or nothing: nothing appears at ``dest`` unless :meth:`commit` returns.

    The temporary name starts with '.' and ends in '.walbucket-tmp' so that nothing mistakes it for WAL.
    """

    def __init__(self, dest: str | Path, mode: int = 0o600) -> None:
        self.dest = dest
        # process and thread in the name: two threads of the worker may write the same name at once
        temporary = f".{os.path.basename(dest)}.{os.getpid()}.{get_ident()}.walbucket-tmp"
        self.tmp = (
            os.path.join(os.path.dirname(dest), temporary) if isinstance(dest, str) else dest.with_name(temporary)
        )
        self._fd = os.open(self.tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, mode)
        self._done = False

    def write(self, data: bytes | memoryview) -> None:
        view = memoryview(data)
        while view:
            written = os.write(self._fd, view)
            view = view[written:]

    def commit(self) -> None:
        os.fsync(self._fd)
        os.close(self._fd)
        self._fd = -1
        os.replace(self.tmp, self.dest)
        self._done = True
        fsync_dir(os.path.dirname(os.path.abspath(self.dest)))

    def discard(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
        if not self._done:
            try:  # noqa: SIM105 - contextlib would be one more import on the fast path
                os.unlink(self.tmp)
            except FileNotFoundError:
                pass

    def __enter__(self) -> AtomicFile:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.discard()


def write_file_atomically(dest: str | Path, data: bytes) -> None:
    with AtomicFile(dest) as f:
        f.write(data)
        f.commit()
