"""Settle a Future by running its work in the calling thread: the worker's and the prefetcher's shared helper."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

__all__ = ["settle"]


def settle(future: Future[Any], fn: Callable[..., Any], *args: Any) -> None:
    """Run ``fn`` in this thread and settle ``future`` with its result or exception."""
    try:
        future.set_result(fn(*args))
    except Exception as exc:  # noqa: BLE001 - handed to whoever waits on the future
        future.set_exception(exc)
