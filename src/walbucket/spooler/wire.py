"""The wire format between the command and the worker: one marshal'ed dict each way, length-prefixed, on a Unix socket.

marshal is built in and costs nothing to import (json costs 10 ms); both ends run the same interpreter, and the socket
is private to one user (0600 in a 0700 directory).

Also the client side: connect (starting the worker when none answers), ask, and turn the reply into a value or
the walbucket error it carries. Imports nothing heavy: this is the fast path.
"""

from __future__ import annotations

import _socket  # the C module: 'socket' imports selectors and collections, 10 ms on the fast path
import marshal
import os
import time

from walbucket.core import errors
from walbucket.core.errors import StoreUnavailable, WalbucketError

TYPE_CHECKING = False  # typing costs milliseconds on the fast path; the checker sees these imports
if TYPE_CHECKING:
    import socket
    from collections.abc import Callable
    from typing import Any

    PathLike = str | os.PathLike[str]

__all__ = [
    "MISMATCH",
    "ask_worker",
    "connect_unix",
    "decode_error",
    "encode_error",
    "pack",
    "read_message",
    "tell_worker",
    "unix_path",
]

_MAX_LINE = 1 << 16
MISMATCH = "mismatch"  # the reply of a worker whose protocol or settings fingerprint differ from the request's


def unix_path(path: PathLike) -> tuple[str, int | None]:
    """Return a connectable name for ``path`` and a directory fd to close afterwards (sun_path holds 107 bytes)."""
    text = os.fspath(path)
    if len(text.encode()) < 100:
        return text, None
    fd = os.open(os.path.dirname(text) or ".", os.O_RDONLY | os.O_DIRECTORY)
    return f"/proc/self/fd/{fd}/{os.path.basename(text)}", fd


def connect_unix(path: PathLike, timeout: float) -> _socket.socket:
    name, fd = unix_path(path)
    sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
    try:
        sock.settimeout(timeout)
        sock.connect(name)
    except BaseException:
        sock.close()
        raise
    finally:
        if fd is not None:
            os.close(fd)
    return sock


def encode_error(exc: BaseException) -> dict[str, str]:
    if isinstance(exc, WalbucketError):
        return {"status": "error", "class": type(exc).__name__, "message": exc.message, "hint": exc.hint or ""}
    return {"status": "error", "class": "internal", "message": repr(exc), "hint": ""}


def decode_error(reply: dict[str, Any]) -> Exception:
    cls = getattr(errors, str(reply.get("class")), None)
    message = str(reply.get("message", "unknown error"))
    if isinstance(cls, type) and issubclass(cls, WalbucketError):
        return cls(message, hint=str(reply.get("hint") or "") or None)
    return RuntimeError(f"async worker: {message}")


def pack(message: dict[str, Any]) -> bytes:
    body = marshal.dumps(message)
    return len(body).to_bytes(4, "big") + body


def read_message(sock: socket.socket | _socket.socket) -> dict[str, Any] | None:
    """Read one packed message; None when the peer closed the connection before sending all of it."""
    data = b""
    size = 4
    while len(data) < size:
        chunk = sock.recv(max(size - len(data), 1 << 16))
        if not chunk:
            return None
        data += chunk
        if size == 4 and len(data) >= 4:
            size = 4 + int.from_bytes(data[:4], "big")
            if size > 4 + _MAX_LINE:
                raise ValueError("message too large")
    message = marshal.loads(data[4:size])
    return message if isinstance(message, dict) else None


def _exchange(path: PathLike, request: dict[str, Any], timeout: float) -> dict[str, Any] | None:
    """One round trip; None when nobody answered (no worker, or it went away before replying)."""
    try:
        sock = connect_unix(path, timeout)
        try:
            sock.sendall(pack(request))
            return read_message(sock)
        finally:
            sock.close()
    except (FileNotFoundError, ConnectionRefusedError, ConnectionResetError, BrokenPipeError):
        return None
    except TimeoutError:
        raise StoreUnavailable(
            f"the async worker did not answer within {timeout:g}s", hint="see worker.log in the spool directory"
        ) from None


def tell_worker(path: PathLike, request: dict[str, Any], timeout: float = 1.0) -> None:
    """Send ``request`` to a running worker, if there is one, and do not start one; errors are ignored."""
    try:
        _exchange(path, request, timeout)
    except (OSError, ValueError, StoreUnavailable):
        return


def ask_worker(
    path: PathLike, request: dict[str, Any], start_worker: Callable[[], None] | None, timeout: float
) -> dict[str, Any] | None:
    """Send ``request`` to the worker listening on ``path``, starting one when none answers.

    A worker whose settings differ answers "mismatch" and stops; it counts as no worker. Without ``start_worker``,
    return None at once when no worker answers (the fast path then hands over to the full command, which starts one).
    """
    deadline = time.monotonic() + timeout
    last_start = -1e9
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise StoreUnavailable(
                f"no async worker answered within {timeout:g}s", hint="see worker.log in the spool directory"
            )
        reply = _exchange(path, request, remaining)
        if reply is not None and reply.get("status") != MISMATCH:
            return reply
        if start_worker is None:
            return None
        if time.monotonic() - last_start > 2:  # none running, or it died: start one (the lock keeps it unique)
            start_worker()
            last_start = time.monotonic()
        time.sleep(0.01)
