"""The spool's file names and acknowledgement format, shared by the lean fast path and spool.py.

Imports only os, marshal and archive/fsutil.py: this module is on the path PostgreSQL runs thousands of times
(json alone would add 10 ms: it imports re). Acknowledgements are marshal'ed dicts, private to one user and one
interpreter: the spool is 0700. See spool.py for the layout. Acknowledgements, errors and prefetched files belong
to one settings fingerprint (core/fingerprint.py): a command only takes those of its own settings.
"""

from __future__ import annotations

import errno
import marshal
import os

from walbucket.archive.fsutil import CHUNK, AtomicFile, fsync_dir
from walbucket.core.errors import WalFileError
from walbucket.core.fingerprint import PROTOCOL

__all__ = [
    "ARCHIVE_DIR",
    "LOCK",
    "LOG",
    "RESTORE_DIR",
    "SOCKET",
    "ack_path",
    "cluster_dir",
    "encode_ack",
    "encode_error",
    "error_path",
    "file_stamp",
    "hand_over",
    "prefetched_path",
    "take_ack",
    "take_error",
]

ARCHIVE_DIR = "archive"
RESTORE_DIR = "restore"
# Named by the wire protocol's version: a command never talks to a worker of an older walbucket, which would not
# check the settings fingerprint; an old worker idles out on its own.
SOCKET = f"worker-{PROTOCOL}.sock"
LOCK = f"worker-{PROTOCOL}.lock"
LOG = "worker.log"


def cluster_dir(spool_dir: str, data_dir: str) -> str:
    """Return the spool directory of one data directory: named by its device and inode, so a new one starts clean."""
    st = os.stat(data_dir)
    return os.path.join(spool_dir, f"{st.st_dev:x}-{st.st_ino:x}")


def file_stamp(path: str) -> tuple[int, int, int, int]:
    """Identify one version of a file: device, inode, size, modification time."""
    st = os.stat(path)
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


def ack_path(root: str, name: str) -> str:
    return os.path.join(root, ARCHIVE_DIR, name + ".ok")


def error_path(root: str, name: str) -> str:
    return os.path.join(root, ARCHIVE_DIR, name + ".error")


def prefetched_path(root: str, fingerprint: str, name: str) -> str:
    return os.path.join(root, RESTORE_DIR, fingerprint, name)


def hand_over(root: str, fingerprint: str, name: str, dest: str) -> bool:
    """Move a prefetched NAME to ``dest`` durably (rename, or copy across file systems); False when there is none.

    A destination that cannot be written raises WalFileError naming it, as the synchronous get does.
    """
    source = prefetched_path(root, fingerprint, name)
    try:
        os.replace(source, dest)
    except OSError as exc:
        # rename(2) may report EXDEV, or ENOENT for a missing destination directory, before it looks at the source
        if not os.path.exists(source):
            return False
        if exc.errno != errno.EXDEV:
            raise _unwritable(dest, exc) from None
        if not _copy_durably(source, dest):
            return False
        try:  # noqa: SIM105 - contextlib would be one more import on the fast path
            os.unlink(source)
        except FileNotFoundError:
            pass  # a stopping worker cleared its spool meanwhile: DEST is written all the same
    try:
        fsync_dir(os.path.dirname(os.path.abspath(dest)))
    except OSError as exc:
        raise _unwritable(dest, exc) from None
    return True


def _unwritable(dest: str, exc: OSError) -> WalFileError:
    return WalFileError(f"cannot write WAL file '{dest}': {exc.strerror}")


def _copy_durably(source: str, dest: str) -> bool:
    """Copy ``source`` to ``dest`` all or nothing (fsutil.AtomicFile); False when ``source`` is gone."""
    try:
        src = open(source, "rb")  # noqa: SIM115 - opened first: a missing source is an answer, not an error
    except FileNotFoundError:
        return False
    try:
        with src, AtomicFile(dest) as out:
            while chunk := src.read(CHUNK):
                out.write(chunk)
            out.commit()
    except OSError as exc:
        raise _unwritable(dest, exc) from None
    return True


def encode_ack(stamp: tuple[int, int, int, int], outcome: str, fingerprint: str) -> bytes:
    dev, ino, size, mtime_ns = stamp
    return marshal.dumps(
        {"dev": dev, "ino": ino, "size": size, "mtime_ns": mtime_ns, "outcome": outcome, "fp": fingerprint}
    )


def encode_error(error: dict[str, str], fingerprint: str) -> bytes:
    return marshal.dumps({**error, "fp": fingerprint})


def take_ack(root: str, name: str, stamp: tuple[int, int, int, int], fingerprint: str) -> str | None:
    """Return the recorded outcome when NAME's acknowledgement covers this very file, and consume it.

    Only an acknowledgement written under the same settings counts: one from a worker with another prefix or bucket
    says nothing about this archive.
    """
    doc = _consume(ack_path(root, name))
    if not isinstance(doc, dict) or (doc.get("dev"), doc.get("ino"), doc.get("size"), doc.get("mtime_ns")) != stamp:
        return None  # an acknowledgement of an earlier file under this name: push this one again
    if doc.get("fp") != fingerprint:
        return None  # stored under other settings: push this one again
    return str(doc.get("outcome", "archived"))


def take_error(root: str, name: str, fingerprint: str) -> dict[str, str] | None:
    """Return and consume the error a look-ahead upload of NAME left under these settings, if any."""
    doc = _consume(error_path(root, name))
    if not isinstance(doc, dict) or doc.get("fp") != fingerprint:
        return None
    return {str(k): str(v) for k, v in doc.items() if k != "fp"}


def _consume(path: str) -> object:
    """Read and remove a marshal'ed spool file; None when it is missing or unreadable."""
    try:
        with open(path, "rb") as f:
            doc = marshal.loads(f.read())
        os.unlink(path)
    except (OSError, ValueError, EOFError, TypeError):
        return None
    return doc
