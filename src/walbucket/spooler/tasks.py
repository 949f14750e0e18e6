"""What the worker's pusher and prefetcher share: the worker's parts, and running a task to settle its Future."""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from walbucket.archive.identity import IdentityMemo
from walbucket.core.keylayout import KeyLayout
from walbucket.core.settings import Settings
from walbucket.spooler.spool import Spool
from walbucket.store.protocol import Store

__all__ = ["WorkerParts", "settle"]


@dataclass(frozen=True, slots=True)
class WorkerParts:
    """One worker's settings, data directory, spool, warm store, identity memo and pool, and its stop flag."""

    settings: Settings
    data_dir: Path
    spool: Spool
    store: Store
    layout: KeyLayout
    memo: IdentityMemo
    pool: ThreadPoolExecutor
    stopping: threading.Event  # set: the worker is stopping; nothing new is queued


def settle(future: Future[Any], fn: Callable[..., Any], *args: Any) -> None:
    """Run ``fn`` in this thread and settle ``future`` with its result or exception."""
    try:
        future.set_result(fn(*args))
    except Exception as exc:  # noqa: BLE001 - handed to whoever waits on the future
        future.set_exception(exc)
