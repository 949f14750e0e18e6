"""The restore side of the async worker: fetch what recovery asks for, and prefetch what follows into the spool.

Each file is verified (get.verify_into) and renamed into ``restore/`` before the command may hand it over. The window
of segments prefetched past the one recovery is at starts at 4 and doubles, up to ``async_lookahead``, each time
recovery asks for a segment whose prefetch is still in flight: a recovery the worker keeps ahead of fetches few
objects past its end, and a slow endpoint gets a deeper window. Prefetches never take a ``.partial``.
"""

from __future__ import annotations

import threading
from concurrent.futures import Future, wait
from typing import Any

from walbucket.archive.get import Missing, Restored, get
from walbucket.archive.identity import load_identity
from walbucket.core.walname import WalKind, parse_wal_name
from walbucket.spooler.tasks import WorkerParts, settle

__all__ = ["Prefetcher"]

_FIRST_WINDOW = 4


class Prefetcher:
    def __init__(
        self,
        parts: WorkerParts,
    ) -> None:
        self.parts = parts
        self._lock = threading.Lock()
        self._gets: dict[str, Future[Any]] = {}
        self._window = min(_FIRST_WINDOW, parts.settings.async_lookahead)

    def busy(self) -> bool:
        with self._lock:
            return any(not f.done() for f in self._gets.values())

    def clear(self) -> None:
        """Remove every file this worker prefetched: only the worker that verified a file may hand it over."""
        for leftover in self.parts.spool.restore_dir.iterdir():
            leftover.unlink(missing_ok=True)

    def clear_all(self) -> None:
        """Remove the files every earlier worker prefetched, under any settings, and make this worker's directory."""
        root = self.parts.spool.restore_root
        for directory in root.iterdir():
            if directory.is_dir():
                for leftover in directory.iterdir():
                    leftover.unlink(missing_ok=True)
                if directory != self.parts.spool.restore_dir:
                    directory.rmdir()
            else:
                directory.unlink(missing_ok=True)  # a file of the flat layout before fingerprints
        self.parts.spool.restore_dir.mkdir(mode=0o700, exist_ok=True)

    def request(self, name: str) -> dict[str, Any]:
        """Fetch NAME for the command that asks for it, ahead of the queue; then move the window past it."""
        future, fresh = self._submit(name, requested=True)
        if not fresh and not future.done():  # recovery waits for a prefetch: the window was too short
            with self._lock:
                self._window = min(self._window * 2, self.parts.settings.async_lookahead)
        outcome = future.result()
        if isinstance(outcome, Missing) and self.parts.settings.restore_partial and not fresh:
            outcome = self._fetch_with_partial(name)  # a prefetch found no segment: only a request takes a .partial
        if isinstance(outcome, Missing):
            # the archive ends here: prefetching what follows would add lookahead GETs (all 404) to every
            # not-available answer, and compete with the answer itself for the transfer threads
            return {"status": "missing"}
        self.advance(name)
        return {"status": "ok", "size": outcome.size, "stored": outcome.stored_size, "partial": outcome.from_partial}

    def _submit(self, name: str, *, requested: bool = False) -> tuple[Future[Any], bool]:
        """Queue a prefetch, or fetch the file PostgreSQL waits for right here, ahead of the queue.

        Return the future and whether it is a new one (False: a prefetch of NAME already ran or runs).
        """
        with self._lock:
            running = self._gets.get(name)
            if running is not None and not (running.done() and not self.parts.spool.prefetched(name).exists()):
                return running, False
            future: Future[Any] = Future() if requested else self.parts.pool.submit(self._fetch, name, False)
            self._gets[name] = future
        if requested:
            settle(future, self._fetch, name, self.parts.settings.restore_partial)
        return future, True

    def _fetch_with_partial(self, name: str) -> Restored | Missing:
        """Fetch NAME again, allowing its .partial, registered so that no prefetch of NAME runs beside it."""
        while True:
            with self._lock:
                running = self._gets.get(name)
                if running is None or running.done():
                    future: Future[Any] = Future()
                    self._gets[name] = future
                    break
            wait([running])
        settle(future, self._fetch, name, True)
        outcome: Restored | Missing = future.result()
        return outcome

    def _fetch(self, name: str, partial: bool) -> Restored | Missing:
        """Fetch NAME into the spool; only with ``partial`` may a missing segment be answered by its .partial.

        Prefetches never take a .partial: a copy made while the segment was missing must not be served after the
        old primary archived the full segment.
        """
        if self.parts.spool.prefetched(name).exists():
            return Restored(name, "", self.parts.spool.prefetched(name).stat().st_size, 0)
        return get(
            name, self.parts.spool.prefetched(name), self.parts.store, self.parts.layout,
            data_dir=self.parts.data_dir, restore_partial=partial, memo=self.parts.memo,
        )  # fmt: skip

    def advance(self, name: str) -> None:
        """Recovery is at NAME: forget what it passed and queue the window of segments that follow."""
        wal = parse_wal_name(name)
        if wal is None or wal.kind is not WalKind.SEGMENT or wal.segment is None or self.parts.stopping.is_set():
            return
        with self._lock:  # forget what recovery has passed
            for other in [n for n, f in self._gets.items() if f.done() and n[:8] == name[:8] and n < name]:
                del self._gets[other]
        for old in self.parts.spool.restore_dir.iterdir():
            if old.name[:8] == name[:8] and old.name < name:
                old.unlink(missing_ok=True)
        identity = load_identity(self.parts.store, self.parts.layout, self.parts.memo)
        if identity is None:
            return
        budget = self.parts.settings.async_queue_bytes - self._spooled_bytes()
        segment = wal.segment
        for _ in range(self._window):
            segment = segment.next(identity.seg_size)
            if budget < identity.seg_size or self.parts.stopping.is_set():
                break
            # in flight or already spooled: kept; absent last time (the archive's end then): asked again
            try:
                self._submit(segment.name)
            except RuntimeError:  # the pool shut down meanwhile: a prefetch is only ever an optimisation
                break
            budget -= identity.seg_size

    def _spooled_bytes(self) -> int:
        total = 0
        for path in self.parts.spool.restore_dir.iterdir():
            try:
                total += path.stat().st_size
            except OSError:
                continue
        return total
