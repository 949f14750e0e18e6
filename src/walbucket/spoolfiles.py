"""The spool's file names and acknowledgement format, shared by the lean fast path and spool.py.

Imports only os and marshal: this module is on the path PostgreSQL runs thousands of times (json alone would add
10 ms: it imports re). Acknowledgements are marshal'ed dicts, private to one user and one interpreter: the spool is
0700. See spool.py for the layout.
"""

from __future__ import annotations

import marshal
import os

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
SOCKET = "worker.sock"
LOCK = "worker.lock"
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


def prefetched_path(root: str, name: str) -> str:
    return os.path.join(root, RESTORE_DIR, name)


def hand_over(root: str, name: str, dest: str) -> bool:
    """Move a prefetched NAME to ``dest`` durably (rename, or copy across file systems); False when there is none."""
    source = prefetched_path(root, name)
    try:
        os.replace(source, dest)
    except FileNotFoundError:
        return False
    except OSError as exc:
        if exc.errno != 18:  # EXDEV: the spool is on another file system
            raise
        _copy_durably(source, dest)
        os.unlink(source)
    _fsync_dir(os.path.dirname(os.path.abspath(dest)))
    return True


def _copy_durably(source: str, dest: str) -> None:
    tmp = os.path.join(os.path.dirname(os.path.abspath(dest)), f".{os.path.basename(dest)}.{os.getpid()}.walbucket-tmp")
    try:
        with open(source, "rb") as src, open(tmp, "wb") as out:
            while chunk := src.read(1 << 20):
                out.write(chunk)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, dest)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _fsync_dir(directory: str) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def encode_ack(stamp: tuple[int, int, int, int], outcome: str) -> bytes:
    dev, ino, size, mtime_ns = stamp
    return marshal.dumps({"dev": dev, "ino": ino, "size": size, "mtime_ns": mtime_ns, "outcome": outcome})


def encode_error(error: dict[str, str]) -> bytes:
    return marshal.dumps(dict(error))


def take_ack(root: str, name: str, stamp: tuple[int, int, int, int]) -> str | None:
    """Return the recorded outcome when NAME's acknowledgement covers this very file, and consume it."""
    path = ack_path(root, name)
    try:
        with open(path, "rb") as f:
            doc = marshal.loads(f.read())
        os.unlink(path)
    except (OSError, ValueError, EOFError, TypeError):
        return None
    if not isinstance(doc, dict) or (doc.get("dev"), doc.get("ino"), doc.get("size"), doc.get("mtime_ns")) != stamp:
        return None  # an acknowledgement of an earlier file under this name: push this one again
    return str(doc.get("outcome", "archived"))


def take_error(root: str, name: str) -> dict[str, str] | None:
    """Return and consume the error a look-ahead upload of NAME left, if any."""
    path = error_path(root, name)
    try:
        with open(path, "rb") as f:
            doc = marshal.loads(f.read())
        os.unlink(path)
    except (OSError, ValueError, EOFError, TypeError):
        return None
    return {str(k): str(v) for k, v in doc.items()} if isinstance(doc, dict) else None
