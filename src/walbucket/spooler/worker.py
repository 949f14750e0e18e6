"""The asynchronous worker: one per data directory, holding one warm S3 client, pushing and prefetching in parallel.

PostgreSQL still calls the command once per file; the command asks this worker (worker_protocol) or answers from
the spool (spool.py). The worker reads ``pg_wal/archive_status/*.ready`` to push ahead, but never renames or
touches them: PostgreSQL alone marks a file done. Restoring is prefetch.py's.

It serves only requests of its own protocol version and settings fingerprint (fingerprint.py); another one is
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
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import Any

from walbucket.archive.identity import IdentityMemo
from walbucket.archive.push import AlreadyArchived, PushOptions, Uploaded, push
from walbucket.core.fingerprint import PROTOCOL
from walbucket.core.keylayout import KeyLayout
from walbucket.core.settings import Settings
from walbucket.core.walname import parse_wal_name
from walbucket.spooler.futures import settle
from walbucket.spooler.prefetch import Prefetcher
from walbucket.spooler.spool import FileStamp, Spool, stamp_of
from walbucket.spooler.wire import MISMATCH, encode_error, pack, read_message, unix_path
from walbucket.store.protocol import Store

__all__ = ["Worker", "acquire_lock"]

log = logging.getLogger("walbucket.worker")
_READY = ".ready"
_REMEMBER = 4096  # names this worker stored lately: not pushed again while PostgreSQL marks them done


def _stamp_or_none(path: Path) -> FileStamp | None:
    """The file's stamp, or None when PostgreSQL removed or recycled it meanwhile."""
    try:
        return stamp_of(path)
    except FileNotFoundError:
        return None


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
        # Decided on the first push, not at start: a probe that fails (an outage, read-only credentials for a
        # restore) must reach the command as that push's error, not keep the worker from serving at all.
        self._make_options = options
        self._options: PushOptions | None = None
        self._options_lock = threading.Lock()
        self.memo = IdentityMemo()
        self.pool = ThreadPoolExecutor(settings.async_workers, thread_name_prefix="transfer")
        self._stopping = threading.Event()  # set: nothing new is queued, only what a command waits for runs
        self.draining = threading.Event()  # set once the socket is gone and only work in flight is finished
        self._lock = threading.Lock()
        self._pushes: dict[str, tuple[Future[Any], int]] = {}
        self._stored: dict[str, None] = {}  # insertion-ordered set, oldest first
        self._failed: set[str] = set()  # names whose last upload failed
        self._pg_wal: Path | None = None
        self.restore = Prefetcher(settings, data_dir, spool, store, self.layout, self.memo, self.pool, self._stopping)
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
        with self._lock:
            busy = self._connections or self._pushes or self.restore.busy()
            return not busy and time.monotonic() - self._last_activity > self.settings.async_idle_exit

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
            return self._push_request(Path(str(request["path"])))
        if op == "get":
            return self.restore.request(str(request["name"]))
        if op == "ping":
            return {"status": "ok", "pid": os.getpid()}
        raise ValueError(f"unknown request {op!r}")

    # archiving ------------------------------------------------------------------------------------------------

    def _push_request(self, path: Path) -> dict[str, Any]:
        self._pg_wal = path.parent
        future, new = self._claim(path.name, path, lookahead=False)  # registered first: not taken as a look-ahead
        assert future is not None  # a request always gets its upload, new or under way
        self._look_ahead()
        if new:
            settle(future, self._push_task, path.name, path, False)  # in this thread, ahead of the queue
        outcome = future.result()
        if isinstance(outcome, Uploaded):
            return {"status": "ok", "outcome": "archived", "size": outcome.size, "stored": outcome.stored_size}
        return {"status": "ok", "outcome": "duplicate", "size": outcome.size}

    def _claim(self, name: str, path: Path, *, lookahead: bool) -> tuple[Future[Any] | None, bool]:
        """Register a new upload of NAME for the caller to run: (its future, True).

        (the upload under way, False) when there is one; (None, False) for a look-ahead of a NAME stored or failed
        since the ready files were listed.
        """
        with self._lock:
            running = self._pushes.get(name)
            if running is not None:
                return running[0], False
            if lookahead and (name in self._stored or name in self._failed):
                return None, False
            try:
                size = path.stat().st_size
            except OSError:
                size = 0
            future: Future[Any] = Future()
            self._pushes[name] = (future, size)
        future.add_done_callback(lambda _f: self._forget_push(name, _f))
        return future, True

    def _forget_push(self, name: str, future: Future[Any]) -> None:
        with self._lock:
            self._pushes.pop(name, None)
            if future.exception():
                self._failed.add(name)  # retried when PostgreSQL asks for it again, not by every refill
            else:
                self._failed.discard(name)
                self._stored[name] = None
                while len(self._stored) > _REMEMBER:
                    del self._stored[next(iter(self._stored))]
            self._last_activity = time.monotonic()
        if self._stopping.is_set():
            return
        try:  # keep the pipeline full while PostgreSQL has ready files (on the pool: no recursion here)
            self.pool.submit(self._look_ahead)
        except RuntimeError:  # the pool is shutting down
            return

    def _push_task(self, name: str, path: Path, lookahead: bool) -> Uploaded | AlreadyArchived:
        started = time.monotonic()
        try:
            stamp = stamp_of(path)
            outcome = push(path, self.store, self.layout, self._push_options(), self.data_dir, self.memo)
            if _stamp_or_none(path) == stamp:  # acknowledge only the very file that was stored (it may be gone)
                self.spool.write_ack(name, stamp, "archived" if isinstance(outcome, Uploaded) else "duplicate")
        except Exception as exc:
            if lookahead:
                self.spool.write_error(name, encode_error(exc))
            log.warning("push %s failed: %s", name, getattr(exc, "message", exc))
            raise
        log.info("push %s: %s in %.3fs", name, type(outcome).__name__, time.monotonic() - started)
        return outcome

    def _push_options(self) -> PushOptions:
        with self._options_lock:
            if self._options is None:
                made = self._make_options()
                if made.fallback is not None:  # decide again after the endpoint turned out to refuse conditions
                    made = replace(made, fallback=partial(self._forget_options, made.fallback))
                self._options = made
            return self._options

    def _forget_options(self, fallback: Callable[[], None]) -> None:
        fallback()
        with self._options_lock:
            self._options = None

    def _look_ahead(self) -> None:
        """Queue the files PostgreSQL has marked ready, oldest first, within the look-ahead and byte limits."""
        pg_wal = self._pg_wal
        if pg_wal is None or self._stopping.is_set():
            return
        try:
            ready = [n[: -len(_READY)] for n in os.listdir(pg_wal / "archive_status") if n.endswith(_READY)]
        except OSError:
            return
        ready.sort(key=lambda n: (not n.endswith(".history"), n))  # history files first, as PostgreSQL does
        with self._lock:
            queued = len(self._pushes)
            skip = set(self._pushes) | set(self._stored) | self._failed
        for name in ready:
            if queued >= self.settings.async_lookahead or self._queued_bytes() >= self.settings.async_queue_bytes:
                break
            if name in skip or parse_wal_name(name) is None:
                continue
            if any((self.spool.archive_dir / f"{name}{s}").exists() for s in (".ok", ".error")):
                continue
            future, new = self._claim(name, pg_wal / name, lookahead=True)
            if future is None or not new:
                continue
            try:
                self.pool.submit(settle, future, self._push_task, name, pg_wal / name, True)
            except RuntimeError as exc:  # the pool is shutting down: nothing may wait on this upload forever
                future.set_exception(exc)
                return
            queued += 1

    def _queued_bytes(self) -> int:
        with self._lock:
            return sum(size for _future, size in self._pushes.values())
