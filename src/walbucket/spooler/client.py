"""The command's side of asynchronous mode: answer from the spool, or ask the worker (starting it if allowed).

This is the path PostgreSQL runs thousands of times, so it imports only os, socket, json and walbucket's errors
(no boto3, no dataclasses, no pathlib): the lean entry point cli/entry.py calls it before anything else is imported.
Results are plain dicts; cli/lines.py turns them into the log line.
"""

from __future__ import annotations

import os

from walbucket.core.errors import StoreUnavailable
from walbucket.core.fingerprint import PROTOCOL
from walbucket.spooler import files as spoolfiles
from walbucket.spooler.wire import ask_worker, decode_error, tell_worker

TYPE_CHECKING = False  # typing costs milliseconds on the fast path; the checker sees these imports
if TYPE_CHECKING:
    from collections.abc import Callable, Mapping, Sequence
    from typing import Any

    Starter = Callable[[], None] | None

__all__ = ["get_async", "push_async", "worker_starter"]


def worker_starter(command: Sequence[str], data_dir: str, root: str, env: Mapping[str, str]) -> Callable[[], None]:
    """Return a function that starts a detached worker with ``env``, the command's own environment.

    A worker started while another holds the spool's lock waits a little for it (the old one may be draining after a
    settings change), then exits.
    """

    def start() -> None:
        import subprocess

        fd = os.open(os.path.join(root, spoolfiles.LOG), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            subprocess.Popen(
                list(command), cwd=data_dir, stdin=subprocess.DEVNULL, stdout=fd, stderr=fd, env=dict(env),
                start_new_session=True, close_fds=True,
            )  # fmt: skip
        finally:
            os.close(fd)

    return start


def _plain_name(name: str) -> bool:
    """A name that is safe to join to a spool path (PostgreSQL's names always are; the worker checks the rest)."""
    return bool(name) and "/" not in name and not name.startswith(".")


def _request(op: str, fingerprint: str, **fields: str) -> dict[str, Any]:
    """A request for the worker: the protocol version and the settings fingerprint go with every one."""
    return {"op": op, "v": PROTOCOL, "fp": fingerprint, **fields}


def push_async(path: str, root: str, wait: float, start_worker: Starter, fingerprint: str) -> dict[str, Any] | None:
    """Answer archive_command for ``path``: a result only once the object is stored; None when no worker answered.

    Raises the walbucket error of a failed upload (one left by a look-ahead upload first, so it is reported once).
    Only acknowledgements and errors written under ``fingerprint`` (these settings) count.
    """
    name = os.path.basename(path)
    try:
        stamp = spoolfiles.file_stamp(path)
    except OSError:
        return None  # the full command reports a missing or unreadable file with its exit code
    if not _plain_name(name):
        return None
    outcome = spoolfiles.take_ack(root, name, stamp, fingerprint)
    if outcome is not None:
        return {"outcome": outcome, "from_spool": True}
    error = spoolfiles.take_error(root, name, fingerprint)
    if error is not None:
        raise decode_error(error)  # the look-ahead upload failed: say why; PostgreSQL retries, and so will we
    request = _request("push", fingerprint, path=os.path.abspath(path))
    reply = ask_worker(os.path.join(root, spoolfiles.SOCKET), request, start_worker, wait)
    if reply is None:
        return None
    spoolfiles.take_ack(root, name, stamp, fingerprint)  # this reply answers it; leave no acknowledgement behind
    spoolfiles.take_error(root, name, fingerprint)
    if reply.get("status") != "ok":
        raise decode_error(reply)
    return {**reply, "from_spool": False}


def get_async(
    name: str, dest: str, root: str, wait: float, start_worker: Starter, fingerprint: str
) -> dict[str, Any] | None:
    """Answer restore_command for ``name`` from the prefetch spool or through the worker; None when none answered.

    A file the worker restored may be gone before it is handed over (the worker stopped and cleared the spool): then
    the worker is asked again, and without one the caller starts one or answers synchronously.
    """
    if not _plain_name(name):
        return None
    socket_path = os.path.join(root, spoolfiles.SOCKET)
    if spoolfiles.hand_over(root, fingerprint, name, dest):
        tell_worker(socket_path, _request("prefetch", fingerprint, name=name))  # keep the window ahead of recovery
        return {"status": "ok", "size": os.stat(dest).st_size, "from_spool": True}
    for _attempt in range(3):
        reply = ask_worker(socket_path, _request("get", fingerprint, name=name), start_worker, wait)
        if reply is None:
            return None
        status = reply.get("status")
        if status == "missing":
            return {"status": "missing"}
        if status != "ok":
            raise decode_error(reply)
        if spoolfiles.hand_over(root, fingerprint, name, dest):
            return {"status": "ok", "size": os.stat(dest).st_size, "from_spool": False}
    raise StoreUnavailable(f"the async worker restored '{name}' but it vanished from the spool three times")
