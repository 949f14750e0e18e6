"""List an archive by key prefix, in parallel, so that 100,000 objects take seconds rather than minutes.

A plain listing of ``<prefix>/wal/`` is one request stream of 1,000 keys per request, each waiting for the previous
one's continuation token. Instead the directories one level down (``wal/<timeline+log id>/``, 256 segments each at
16 MiB) are discovered with one delimited listing, merged into at most a few streams per worker when there are many
(``wal/000000010000000`` covers 16 log ids), and listed on a thread pool. The union of the streams is exactly the
listing of the kind's prefix: the merged prefixes have one length, so none is a prefix of another.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TypeVar

from walbucket.core.keylayout import KeyLayout
from walbucket.core.walname import WalKind
from walbucket.store.protocol import ObjectInfo, Store

__all__ = ["DEFAULT_JOBS", "Listing", "Progress", "Tally", "list_archive", "plan_prefixes", "run_parallel"]

DEFAULT_JOBS = 16
STREAMS_PER_JOB = 4  # more streams than workers evens out streams of unequal length
_REPORT_EVERY = 1000
_T = TypeVar("_T")
_R = TypeVar("_R")

# A progress callback: (what is being done, how many done, how many in all or None when unknown).
Progress = Callable[[str, int, "int | None"], None]


@dataclass(frozen=True, slots=True)
class Listing:
    """Every object under the layout's kind directories, in key order (sizes only, no metadata)."""

    objects: tuple[ObjectInfo, ...]
    streams: tuple[str, ...]  # the prefixes that were listed, one request stream each


def plan_prefixes(dirs: Sequence[str], base: str, limit: int) -> list[str]:
    """Merge sibling directory prefixes under ``base`` into at most ``limit`` prefixes of one common length.

    Cutting the last character of every name merges up to 16 hex siblings into one prefix; cut until few enough.
    """
    names = sorted({d[len(base) :] for d in dirs if d.startswith(base)})
    if not names:
        return []
    length = max(len(name) for name in names)
    merged = names
    while len(merged) > max(limit, 1) and length > 0:
        length -= 1
        merged = sorted({name[:length] for name in names})
    return [base + name for name in merged]


def run_parallel(jobs: int, fn: Callable[[_T], _R], items: Iterable[_T]) -> list[_R]:
    """Apply ``fn`` to ``items`` on a pool of ``jobs`` threads; results in the order of ``items``.

    A worker holds one item's data at a time, so memory stays bounded by ``jobs`` items.
    """
    pool = ThreadPoolExecutor(max_workers=max(jobs, 1), thread_name_prefix="walbucket")
    try:
        futures = [pool.submit(fn, item) for item in items]
        return [future.result() for future in futures]
    finally:  # after a failure, start nothing more: one error is the answer
        pool.shutdown(wait=True, cancel_futures=True)


class Tally:
    """A count shared by worker threads, reported to ``progress`` as (phase, count, total) after each step."""

    def __init__(self, progress: Progress | None, phase: str, total: int | None = None) -> None:
        self._progress = progress
        self._phase = phase
        self._lock = threading.Lock()
        self.total = total
        self.count = 0

    def add(self, n: int = 1) -> None:
        with self._lock:
            self.count += n
            count = self.count
        if self._progress is not None:
            self._progress(self._phase, count, self.total)


def _stream(store: Store, prefix: str, counter: Tally) -> list[ObjectInfo]:
    objects: list[ObjectInfo] = []
    pending = 0
    for info in store.list(prefix):
        objects.append(info)
        pending += 1
        if pending == _REPORT_EVERY:
            counter.add(pending)
            pending = 0
    counter.add(pending)
    return objects


def list_archive(
    store: Store,
    layout: KeyLayout,
    *,
    kinds: Iterable[WalKind] = tuple(WalKind),
    jobs: int = DEFAULT_JOBS,
    progress: Progress | None = None,
) -> Listing:
    """List every object of ``kinds`` under the layout, by sub-prefix on ``jobs`` threads.

    Objects that sit directly in a grouped kind's directory (``wal/x``) are not listed: walbucket writes none.
    """
    kinds = tuple(kinds)
    grouped = [kind for kind in kinds if layout.grouped(kind)]

    def discover(kind: WalKind) -> list[str]:
        base = layout.kind_prefix(kind)
        dirs = list(store.list_prefixes(base))
        return plan_prefixes(dirs, base, max(jobs, 1) * STREAMS_PER_JOB)

    with ThreadPoolExecutor(max_workers=max(len(grouped), 1), thread_name_prefix="walbucket-list") as pool:
        planned = list(pool.map(discover, grouped))
    flat = [layout.kind_prefix(kind) for kind in kinds if kind not in grouped]
    streams = sorted([prefix for group in planned for prefix in group] + flat)
    counter = Tally(progress, "listing")
    results = run_parallel(jobs, lambda prefix: _stream(store, prefix, counter), streams)
    objects = sorted((info for result in results for info in result), key=lambda info: info.key)
    return Listing(tuple(objects), tuple(streams))
