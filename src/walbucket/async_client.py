"""The command's side of asynchronous mode: answer from the spool, or ask the worker (starting it if needed).

This is the path PostgreSQL runs thousands of times, so it imports neither boto3 nor anything that does.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from .errors import StoreUnavailable, UsageError, WalFileError
from .get import Missing
from .spool import Spool, stamp_of
from .walname import parse_wal_name
from .worker_protocol import ask_worker, decode_error, tell_worker

__all__ = ["AsyncPushed", "AsyncRestored", "get_async", "push_async", "worker_starter"]


@dataclass(frozen=True, slots=True)
class AsyncPushed:
    name: str
    outcome: str  # archived | duplicate
    size: int | None
    stored_size: int | None
    from_spool: bool  # answered from an acknowledgement the worker wrote ahead of the request


@dataclass(frozen=True, slots=True)
class AsyncRestored:
    name: str
    size: int
    from_spool: bool  # prefetched before PostgreSQL asked


def worker_starter(command: Sequence[str], data_dir: Path, spool: Spool) -> Callable[[], None]:
    """Return a function that starts a detached worker; a second one exits at once (the spool's lock)."""

    def start() -> None:
        # private like the rest of the spool (0600), whatever the umask: the log names the cluster's WAL files
        fd = os.open(spool.log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)
        with open(fd, "ab") as log:
            subprocess.Popen(
                list(command), cwd=data_dir, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                start_new_session=True, close_fds=True,
            )  # fmt: skip

    return start


def push_async(path: Path, spool: Spool, start_worker: Callable[[], None], wait: float) -> AsyncPushed:
    """Answer archive_command for ``path``: 0 only once the worker has stored it (now or ahead of time)."""
    name = path.name
    if parse_wal_name(name) is None:
        raise UsageError(
            f"'{name}' is not the name of a WAL file PostgreSQL archives",
            hint="archive_command must pass %p: a segment, .partial, .history or .backup file",
        )
    try:
        stamp = stamp_of(path)
    except OSError as exc:
        raise WalFileError(f"cannot read WAL file '{path}': {exc.strerror}") from None
    outcome = spool.take_ack(name, stamp)
    if outcome is not None:
        return AsyncPushed(name, outcome, None, None, True)
    error = spool.take_error(name)
    if error is not None:
        raise decode_error(error)  # the look-ahead upload failed: say why; PostgreSQL retries, and so will we
    reply = ask_worker(spool.socket_path, {"op": "push", "path": str(path.resolve())}, start_worker, wait)
    spool.take_ack(name, stamp)  # this reply answers it; leave no acknowledgement or error behind
    spool.take_error(name)
    if reply.get("status") != "ok":
        raise decode_error(reply)
    return AsyncPushed(name, str(reply.get("outcome")), reply.get("size"), reply.get("stored"), False)


def get_async(
    name: str, dest: Path, spool: Spool, start_worker: Callable[[], None], wait: float
) -> AsyncRestored | Missing:
    """Answer restore_command for ``name`` from the prefetch spool, or through the worker."""
    if parse_wal_name(name) is None:
        raise UsageError(
            f"'{name}' is not a WAL file name",
            hint="restore_command must be 'walbucket get %f %p' (the name first, then the destination path)",
        )
    if spool.hand_over(name, dest):
        tell_worker(spool.socket_path, {"op": "prefetch", "name": name})  # keep the window ahead of recovery
        return AsyncRestored(name, dest.stat().st_size, True)
    for _attempt in range(3):
        reply = ask_worker(spool.socket_path, {"op": "get", "name": name}, start_worker, wait)
        status = reply.get("status")
        if status == "missing":
            return Missing(name, "")
        if status != "ok":
            raise decode_error(reply)
        if spool.hand_over(name, dest):
            return AsyncRestored(name, dest.stat().st_size, False)
    raise StoreUnavailable(f"the async worker restored '{name}' but it vanished from the spool three times")
