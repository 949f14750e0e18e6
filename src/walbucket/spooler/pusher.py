"""The worker's archiving: each push a command asks for, and the files PostgreSQL marked ready pushed ahead.

Reads ``pg_wal/archive_status/*.ready`` but never renames or touches them: PostgreSQL alone marks a file done.
An upload is acknowledged in the spool only for the very file stored (its stamp); a look-ahead that fails leaves
its error in the spool for the command that asks for that file.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import Any

from walbucket.archive.push import AlreadyArchived, PushOptions, Uploaded, push
from walbucket.core.walname import parse_wal_name
from walbucket.spooler.spool import FileStamp, stamp_of
from walbucket.spooler.tasks import WorkerParts, settle
from walbucket.spooler.wire import encode_error

__all__ = ["Pusher"]

log = logging.getLogger("walbucket.worker")
_READY = ".ready"
_REMEMBER = 4096  # names this worker stored lately: not pushed again while PostgreSQL marks them done


def _stamp_or_none(path: Path) -> FileStamp | None:
    """The file's stamp, or None when PostgreSQL removed or recycled it meanwhile."""
    try:
        return stamp_of(path)
    except FileNotFoundError:
        return None


class Pusher:
    def __init__(
        self,
        parts: WorkerParts,
        options: Callable[[], PushOptions],
        touch: Callable[[], None],
    ) -> None:
        self.parts = parts
        # Decided on the first push, not at start: a probe that fails (an outage, read-only credentials for a
        # restore) must reach the command as that push's error, not keep the worker from serving at all.
        self._make_options = options
        self._options: PushOptions | None = None
        self._options_lock = threading.Lock()
        self._touch = touch  # the worker's clock of activity, for its idle exit
        self._lock = threading.Lock()
        self._pushes: dict[str, tuple[Future[Any], int]] = {}
        self._stored: dict[str, None] = {}  # insertion-ordered set, oldest first
        self._failed: set[str] = set()  # names whose last upload failed
        self._pg_wal: Path | None = None

    def busy(self) -> bool:
        with self._lock:
            return bool(self._pushes)

    def request(self, path: Path) -> dict[str, Any]:
        """Archive ``path`` for a command: its upload, already under way or new, then more ready files queued."""
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
        self._touch()
        if self.parts.stopping.is_set():
            return
        try:  # keep the pipeline full while PostgreSQL has ready files (on the pool: no recursion here)
            self.parts.pool.submit(self._look_ahead)
        except RuntimeError:  # the pool is shutting down
            return

    def _push_task(self, name: str, path: Path, lookahead: bool) -> Uploaded | AlreadyArchived:
        started = time.monotonic()
        try:
            stamp = stamp_of(path)
            parts = self.parts
            outcome = push(path, parts.store, parts.layout, self._push_options(), parts.data_dir, parts.memo)
            if _stamp_or_none(path) == stamp:  # acknowledge only the very file that was stored (it may be gone)
                self.parts.spool.write_ack(name, stamp, "archived" if isinstance(outcome, Uploaded) else "duplicate")
        except Exception as exc:
            if lookahead:
                self.parts.spool.write_error(name, encode_error(exc))
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
        if pg_wal is None or self.parts.stopping.is_set():
            return
        try:
            ready = [n[: -len(_READY)] for n in os.listdir(pg_wal / "archive_status") if n.endswith(_READY)]
        except OSError:
            return
        ready.sort(key=lambda n: (not n.endswith(".history"), n))  # history files first, as PostgreSQL does
        with self._lock:
            queued = len(self._pushes)
            skip = set(self._pushes) | set(self._stored) | self._failed
        settings = self.parts.settings
        for name in ready:
            if queued >= settings.async_lookahead or self._queued_bytes() >= settings.async_queue_bytes:
                break
            if name in skip or parse_wal_name(name) is None:
                continue
            if any((self.parts.spool.archive_dir / f"{name}{s}").exists() for s in (".ok", ".error")):
                continue
            future, new = self._claim(name, pg_wal / name, lookahead=True)
            if future is None or not new:
                continue
            try:
                self.parts.pool.submit(settle, future, self._push_task, name, pg_wal / name, True)
            except RuntimeError as exc:  # the pool is shutting down: nothing may wait on this upload forever
                future.set_exception(exc)
                return
            queued += 1

    def _queued_bytes(self) -> int:
        with self._lock:
            return sum(size for _future, size in self._pushes.values())
