"""The wire format between the command and the worker: one JSON object per line each way, on a Unix socket.

Also the client side: connect (starting the worker when none answers), ask, and turn the reply into a value or
the walbucket error it carries. Imports nothing heavy: this is the fast path.
"""

from __future__ import annotations

import json
import os
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from . import errors
from .errors import StoreUnavailable, WalbucketError

__all__ = ["ask_worker", "connect_unix", "decode_error", "encode_error", "tell_worker", "unix_path"]

_MAX_LINE = 1 << 16


def unix_path(path: Path) -> tuple[str, int | None]:
    """Return a connectable name for ``path`` and a directory fd to close afterwards (sun_path holds 107 bytes)."""
    text = str(path)
    if len(text.encode()) < 100:
        return text, None
    fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    return f"/proc/self/fd/{fd}/{path.name}", fd


def connect_unix(path: Path, timeout: float) -> socket.socket:
    name, fd = unix_path(path)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
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


def _exchange(path: Path, request: dict[str, Any], timeout: float) -> dict[str, Any] | None:
    """One round trip; None when nobody answered (no worker, or it went away before replying)."""
    try:
        with connect_unix(path, timeout) as sock:
            sock.sendall(json.dumps(request).encode() + b"\n")
            data = b""
            while not data.endswith(b"\n") and len(data) < _MAX_LINE:
                chunk = sock.recv(_MAX_LINE)
                if not chunk:
                    break
                data += chunk
    except (FileNotFoundError, ConnectionRefusedError, ConnectionResetError, BrokenPipeError):
        return None
    except TimeoutError:
        raise StoreUnavailable(
            f"the async worker did not answer within {timeout:g}s", hint="see worker.log in the spool directory"
        ) from None
    if not data.endswith(b"\n"):
        return None
    reply = json.loads(data)
    return reply if isinstance(reply, dict) else None


def tell_worker(path: Path, request: dict[str, Any], timeout: float = 1.0) -> None:
    """Send ``request`` to a running worker, if there is one, and do not start one; errors are ignored."""
    try:
        _exchange(path, request, timeout)
    except (OSError, ValueError, StoreUnavailable):
        return


def ask_worker(path: Path, request: dict[str, Any], start_worker: Callable[[], None], timeout: float) -> dict[str, Any]:
    """Send ``request`` to the worker listening on ``path``, starting one when none answers."""
    deadline = time.monotonic() + timeout
    last_start = -1e9
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise StoreUnavailable(
                f"no async worker answered within {timeout:g}s", hint="see worker.log in the spool directory"
            )
        reply = _exchange(path, request, remaining)
        if reply is not None:
            return reply
        if time.monotonic() - last_start > 2:  # none running, or it died: start one (the lock keeps it unique)
            start_worker()
            last_start = time.monotonic()
        time.sleep(0.01)
