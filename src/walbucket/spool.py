"""The spool directory shared by the asynchronous worker and the command PostgreSQL runs.

One subdirectory per data directory (named by a hash of its real path), private to the user (0700)::

    <spool_dir>/<cluster>/worker.lock        flock held by the one worker of this data directory
    <spool_dir>/<cluster>/worker.sock        the worker's Unix socket
    <spool_dir>/<cluster>/worker.log         the worker's log
    <spool_dir>/<cluster>/archive/NAME.ok    written (durably) only after NAME is stored in the archive
    <spool_dir>/<cluster>/archive/NAME.error a look-ahead upload of NAME failed: reported on the next push of NAME
    <spool_dir>/<cluster>/restore/NAME       a prefetched file, verified against its hash, handed over by rename

An acknowledgement records the identity of the file it covers (device, inode, size, mtime), so a later file under
the same name (a recycled segment, a restored data directory) is never answered from an old acknowledgement.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

from .fsutil import fsync_dir, write_file_atomically

__all__ = ["FileStamp", "Spool", "stamp_of"]


@dataclass(frozen=True, slots=True)
class FileStamp:
    dev: int
    ino: int
    size: int
    mtime_ns: int


def stamp_of(path: Path) -> FileStamp:
    st = os.stat(path)
    return FileStamp(st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


@dataclass(frozen=True, slots=True)
class Spool:
    root: Path  # <spool_dir>/<cluster>

    @classmethod
    def for_data_dir(cls, spool_dir: Path, data_dir: Path) -> Spool:
        cluster = hashlib.sha256(str(data_dir.resolve()).encode()).hexdigest()[:16]
        return cls(spool_dir / cluster)

    def create(self) -> None:
        for directory in (self.root.parent, self.root, self.archive_dir, self.restore_dir):
            directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(self.root, 0o700)

    @property
    def archive_dir(self) -> Path:
        return self.root / "archive"

    @property
    def restore_dir(self) -> Path:
        return self.root / "restore"

    @property
    def lock_path(self) -> Path:
        return self.root / "worker.lock"

    @property
    def socket_path(self) -> Path:
        return self.root / "worker.sock"

    @property
    def log_path(self) -> Path:
        return self.root / "worker.log"

    # acknowledgements ------------------------------------------------------------------------------------------

    def write_ack(self, name: str, stamp: FileStamp, outcome: str) -> None:
        doc = {"dev": stamp.dev, "ino": stamp.ino, "size": stamp.size, "mtime_ns": stamp.mtime_ns, "outcome": outcome}
        write_file_atomically(self.archive_dir / f"{name}.ok", json.dumps(doc).encode())

    def take_ack(self, name: str, stamp: FileStamp) -> str | None:
        """Return the recorded outcome when NAME's acknowledgement covers this very file, and consume it."""
        path = self.archive_dir / f"{name}.ok"
        try:
            doc = json.loads(path.read_bytes())
        except (OSError, ValueError):
            return None
        path.unlink(missing_ok=True)
        if FileStamp(doc.get("dev"), doc.get("ino"), doc.get("size"), doc.get("mtime_ns")) != stamp:
            return None  # an acknowledgement of an earlier file under this name: push this one again
        return str(doc.get("outcome", "archived"))

    def write_error(self, name: str, error: dict[str, str]) -> None:
        write_file_atomically(self.archive_dir / f"{name}.error", json.dumps(error).encode())

    def take_error(self, name: str) -> dict[str, str] | None:
        path = self.archive_dir / f"{name}.error"
        try:
            doc = json.loads(path.read_bytes())
        except (OSError, ValueError):
            return None
        path.unlink(missing_ok=True)
        return {str(k): str(v) for k, v in doc.items()} if isinstance(doc, dict) else None

    # prefetched files -----------------------------------------------------------------------------------------

    def prefetched(self, name: str) -> Path:
        return self.restore_dir / name

    def hand_over(self, name: str, dest: Path) -> bool:
        """Move a prefetched NAME to ``dest`` durably; return False when there is none."""
        source = self.prefetched(name)
        try:
            os.replace(source, dest)
        except FileNotFoundError:
            return False
        except OSError as exc:
            if exc.errno != 18:  # EXDEV: the spool is on another file system; copy instead
                raise
            write_file_atomically(dest, source.read_bytes())
            source.unlink(missing_ok=True)
        fsync_dir(dest.parent)
        return True

    def prefetched_bytes(self) -> int:
        return sum(p.stat().st_size for p in self.restore_dir.iterdir() if p.is_file())
