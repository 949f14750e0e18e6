"""The asynchronous worker: one per data directory, holding one warm S3 client, pushing and prefetching in parallel.

PostgreSQL still calls the command once per file; the command asks this worker (wire.py) or answers from
the spool (spool.py). The worker reads ``pg_wal/archive_status/*.ready`` to push ahead, but never renames or
touches them: PostgreSQL alone marks a file done. Archiving is pusher.py's, restoring prefetch.py's.

It serves only requests of its own protocol version and settings fingerprint (core/fingerprint.py); another one is
answered "mismatch" and makes it stop, so that the command gets a worker for its own settings. It stops after
``async_idle_exit`` seconds without work, on SIGTERM or SIGINT (:meth:`Worker.stop`), or on a mismatch, always the
same way: no new connections (the socket is removed first, so a command starts the next worker, which waits for
this one's lock), the connections already queued served, every request in flight answered, queued look-aheads and
prefetches dropped, and only then the pool shut down and the prefetched files removed.
"""

from __future__ import annotations

import fcntl
import logging
import os
import socket
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from walbucket.archive.identity import IdentityMemo
from walbucket.archive.push import PushOptions
from walbucket.core.fingerprint import PROTOCOL
from walbucket.core.keylayout import KeyLayout
from walbucket.core.settings import Settings
from walbucket.spooler.prefetch import Prefetcher
from walbucket.spooler.pusher import Pusher
from walbucket.spooler.spool import Spool
from walbucket.spooler.tasks import WorkerParts
from walbucket.spooler.wire import MISMATCH, encode_error, pack, read_message, unix_path
from walbucket.store.protocol import Store

__all__ = ["Worker", "acquire_lock"]

log = logging.getLogger("walbucket.worker")


def acquire_lock(spool: Spool, wait: float = 0.0) -> int | None:
    """Take the worker lock of this spool; return its fd, or None when another worker holds it.

    A worker that holds the lock without its socket is starting or draining (after a settings change, say): wait up
    to ``wait`` seconds for it, so that the new worker takes over as soon as the old one exits. One that holds the
    lock and serves on its socket makes this one exit at once.
    """
    fd = os.open(spool.lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    deadline = time.monotonic() + wait
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            break
        except BlockingIOError:
            if spool.socket_path.exists() or time.monotonic() >= deadline:
                os.close(fd)
                return None
            time.sleep(0.02)
    os.ftruncate(fd, 0)
    os.write(fd, f"{os.getpid()}\n".encode())
    return fd


class Worker:
    def __init__(
        self, settings: Settings, data_dir: Path, spool: Spool, store: Store, options: Callable[[], PushOptions]
    ) -> None:
        self.settings = settings
        self.data_dir = data_dir
        self.spool = spool
        self.store = store
        self.layout = KeyLayout(settings.prefix)
        self.memo = IdentityMemo()
        self.pool = ThreadPoolExecutor(settings.async_workers, thread_name_prefix="transfer")
        self._stopping = threading.Event()  # set: nothing new is queued, only what a command waits for runs
        self.draining = threading.Event()  # set once the socket is gone and only work in flight is finished
        self._lock = threading.Lock()
        parts = WorkerParts(settings, data_dir, spool, store, self.layout, self.memo, self.pool, self._stopping)
        self.archive = Pusher(parts, options, self._touch)
        self.restore = Prefetcher(parts)
        self._connections = 0
        self._drained = threading.Condition(self._lock)
        self._last_activity = time.monotonic()
        self._stop_reason = ""
        self._signal = False

    # serving --------------------------------------------------------------------------------------------------

    def stop(self, reason: str = "stopped on a signal") -> None:
        """Stop serving, gracefully (see the module docstring); from any thread, not from a signal handler."""
        if not self._stop_reason:
            self._stop_reason = reason
        self.spool.socket_path.unlink(missing_ok=True)  # no new command reaches this worker from now on
        self._stopping.set()

    def signalled(self, _signum: int = 0, _frame: object = None) -> None:
        """A signal handler: only a flag (an Event's lock may be held by the thread the signal interrupts); the
        accept loop sees it within its timeout and stops."""
        self._signal = True

    def serve(self) -> str:
        """Serve until idle or stopped; return why it stopped."""
        return self.run(self.listen())

    def listen(self) -> socket.socket:
        """Clear what earlier workers left and listen on the spool's socket: commands can connect from now on."""
        self.restore.clear_all()  # prefetching is cheap to redo; never trust a file from a dead worker
        self.spool.socket_path.unlink(missing_ok=True)  # ours to replace: we hold the lock
        name, fd = unix_path(self.spool.socket_path)
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            listener.bind(name)
        finally:
            if fd is not None:
                os.close(fd)
        os.chmod(self.spool.socket_path, 0o600)
        listener.listen(64)
        listener.settimeout(0.2)
        return listener

    def run(self, listener: socket.socket) -> str:
        """Accept commands on ``listener`` until idle or stopped, then shut down gracefully; return why."""
        log.info("worker %d serving %s", os.getpid(), self.data_dir)
        try:
            while not self._stopping.is_set():
                if self._signal:
                    self.stop()
                    break
                if self._idle():
                    self.stop(f"idle for {self.settings.async_idle_exit:g}s")
                    break
                try:
                    conn, _ = listener.accept()
                except TimeoutError:
                    continue
                self._start_handler(conn)
        finally:
            self._stopping.set()
            self._shut_down(listener)
        log.info("worker %d %s: exiting", os.getpid(), self._stop_reason or "stopped")
        return self._stop_reason or "stopped"

    def _start_handler(self, conn: socket.socket) -> None:
        with self._lock:
            self._connections += 1
            self._last_activity = time.monotonic()
        try:
            threading.Thread(target=self._handle, args=(conn,), daemon=True).start()
        except RuntimeError:  # no thread to be had: the command sees the connection close and asks again
            conn.close()
            with self._lock:
                self._connections -= 1
                self._drained.notify_all()

    def _shut_down(self, listener: socket.socket) -> None:
        self.spool.socket_path.unlink(missing_ok=True)  # from now on commands start the next worker
        self.draining.set()
        listener.setblocking(False)
        while True:  # commands that connected before the socket went away are still served
            try:
                conn, _ = listener.accept()
            except OSError:
                break
            conn.setblocking(True)
            self._start_handler(conn)
        listener.close()
        with self._drained:
            self._drained.wait_for(lambda: self._connections == 0)
        self.pool.shutdown(wait=True, cancel_futures=True)  # look-aheads and prefetches nobody waits for
        # Nothing verifies a prefetched file again when the command hands it over, so none outlives the worker
        # that verified it; a command that was answered but had not taken its file yet asks the next worker.
        self.restore.clear()

    def _idle(self) -> bool:
        if self.archive.busy():
            return False
        with self._lock:
            busy = self._connections or self.restore.busy()
            return not busy and time.monotonic() - self._last_activity > self.settings.async_idle_exit

    def _touch(self) -> None:
        with self._lock:
            self._last_activity = time.monotonic()

    def _handle(self, conn: socket.socket) -> None:
        try:
            with conn:
                conn.settimeout(self.settings.async_wait)
                try:
                    request = read_message(conn)
                    if request is None:
                        return
                    if request.get("v") != PROTOCOL or request.get("fp") != self.spool.fingerprint:
                        conn.sendall(pack({"status": MISMATCH}))  # the command finds a worker for its settings
                        self.stop("stopped for a command with other settings")
                        return
                    if request.get("op") == "prefetch":  # recovery took NAME from the spool: move the window on
                        conn.sendall(pack({"status": "ok"}))  # first: PostgreSQL waits for the command, not for this
                        self.restore.advance(str(request["name"]))
                        return
                    reply = self._dispatch(request)
                except Exception as exc:  # noqa: BLE001 - every failure goes back to the command as its reply
                    reply = encode_error(exc)
                conn.sendall(pack(reply))
        except OSError as exc:
            log.warning("connection failed: %s", exc)
        finally:
            with self._lock:
                self._connections -= 1
                self._last_activity = time.monotonic()
                self._drained.notify_all()

    def _dispatch(self, request: dict[str, Any]) -> dict[str, Any]:
        op = request.get("op")
        if op == "push":
            return self.archive.request(Path(str(request["path"])))
        if op == "get":
            return self.restore.request(str(request["name"]))
        if op == "ping":
            return {"status": "ok", "pid": os.getpid()}
        raise ValueError(f"unknown request {op!r}")
