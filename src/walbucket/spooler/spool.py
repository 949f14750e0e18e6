"""The spool directory shared by the asynchronous worker and the command PostgreSQL runs.

One subdirectory per data directory (named by its device and inode number), private to the user (0700)::

    <spool_dir>/<cluster>/worker-2.lock      flock held by the one worker of this data directory (2: protocol)
    <spool_dir>/<cluster>/worker-2.sock      the worker's Unix socket
    <spool_dir>/<cluster>/worker.log         the worker's log
    <spool_dir>/<cluster>/archive/NAME.ok    written (durably) only after NAME is stored in the archive
    <spool_dir>/<cluster>/archive/NAME.error a look-ahead upload of NAME failed: reported on the next push of NAME
    <spool_dir>/<cluster>/restore/FP/NAME    a prefetched file, verified against its hash, handed over by rename

An acknowledgement records the identity of the file it covers (device, inode, size, mtime), so a later file under
the same name (a recycled segment, a restored data directory) is never answered from an old acknowledgement.
Acknowledgements and errors record, and prefetched files live under, the settings fingerprint FP of the worker that
wrote them (core/fingerprint.py): a command with other settings never takes them.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from walbucket.archive.fsutil import write_file_atomically
from walbucket.spooler import files as spoolfiles

__all__ = ["FileStamp", "Spool", "stamp_of"]

FileStamp = tuple[int, int, int, int]  # device, inode, size, modification time (ns)


def stamp_of(path: Path) -> FileStamp:
    return spoolfiles.file_stamp(str(path))


@dataclass(frozen=True, slots=True)
class Spool:
    root: Path  # <spool_dir>/<cluster>
    fingerprint: str  # of the settings this spool's acknowledgements and prefetched files are written under

    @classmethod
    def for_data_dir(cls, spool_dir: Path, data_dir: Path, fingerprint: str) -> Spool:
        return cls(Path(spoolfiles.cluster_dir(str(spool_dir), str(data_dir))), fingerprint)

    def create(self) -> None:
        for directory in (self.root.parent, self.root, self.archive_dir, self.restore_root, self.restore_dir):
            directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(self.root, 0o700)

    @property
    def archive_dir(self) -> Path:
        return self.root / spoolfiles.ARCHIVE_DIR

    @property
    def restore_root(self) -> Path:
        """The prefetched files of every fingerprint, one directory each."""
        return self.root / spoolfiles.RESTORE_DIR

    @property
    def restore_dir(self) -> Path:
        """The prefetched files of this spool's fingerprint."""
        return self.restore_root / self.fingerprint

    @property
    def lock_path(self) -> Path:
        return self.root / spoolfiles.LOCK

    @property
    def socket_path(self) -> Path:
        return self.root / spoolfiles.SOCKET

    @property
    def log_path(self) -> Path:
        return self.root / spoolfiles.LOG

    # acknowledgements ------------------------------------------------------------------------------------------

    def write_ack(self, name: str, stamp: FileStamp, outcome: str) -> None:
        ack = spoolfiles.encode_ack(stamp, outcome, self.fingerprint)
        write_file_atomically(Path(spoolfiles.ack_path(str(self.root), name)), ack)

    def take_ack(self, name: str, stamp: FileStamp) -> str | None:
        return spoolfiles.take_ack(str(self.root), name, stamp, self.fingerprint)

    def write_error(self, name: str, error: dict[str, str]) -> None:
        doc = spoolfiles.encode_error(error, self.fingerprint)
        write_file_atomically(Path(spoolfiles.error_path(str(self.root), name)), doc)

    def take_error(self, name: str) -> dict[str, str] | None:
        return spoolfiles.take_error(str(self.root), name, self.fingerprint)

    # prefetched files -----------------------------------------------------------------------------------------

    def prefetched(self, name: str) -> Path:
        return Path(spoolfiles.prefetched_path(str(self.root), self.fingerprint, name))

    def hand_over(self, name: str, dest: Path) -> bool:
        """Move a prefetched NAME to ``dest`` durably; return False when there is none."""
        return spoolfiles.hand_over(str(self.root), self.fingerprint, name, str(dest))
