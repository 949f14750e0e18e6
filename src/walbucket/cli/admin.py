"""The edge for the commands people run by hand (inspection, checks, repair): parse, call a service, render.

Like cli/main.py, it may print; cli/parser.py holds these commands' options and help.
Reports go to stdout (text, or JSON with --json); the one summary line goes to stderr like every command's; a
progress indicator is drawn on stderr only when stderr is a terminal. docs/inspect.md describes the commands.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import re
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

from walbucket.core.errors import FINDINGS_EXIT, UsageError
from walbucket.core.settings import Settings

__all__ = ["ADMIN_COMMANDS"]


class _Meter:
    """A one-line progress indicator on a terminal, redrawn at most ten times a second."""

    def __init__(self, stream: IO[str]) -> None:
        self._stream = stream
        self._lock = threading.Lock()
        self._drawn = 0.0

    def __call__(self, phase: str, done: int, total: int | None) -> None:
        now = time.monotonic()
        with self._lock:
            if now - self._drawn < 0.1 and done != total:
                return
            self._drawn = now
            text = f"{phase}: {done}/{total} ({100 * done // total}%)" if total else f"{phase}: {done}"
            self._stream.write(f"\r\x1b[2K{text}")
            self._stream.flush()

    def close(self) -> None:
        with self._lock:
            if self._drawn:
                self._stream.write("\r\x1b[2K")
                self._stream.flush()


@contextmanager
def _progress() -> Iterator[_Meter | None]:
    if not sys.stderr.isatty():
        yield None
        return
    meter = _Meter(sys.stderr)
    try:
        yield meter
    finally:
        meter.close()


def _work_dir() -> Path:
    """Where deep verification restores objects for a moment: memory (/dev/shm) when there is one."""
    import tempfile

    shm = Path("/dev/shm")
    return shm if shm.is_dir() and os.access(shm, os.W_OK | os.X_OK) else Path(tempfile.gettempdir())


def _where(settings: Settings) -> str:
    root = f"s3://{settings.bucket}/{settings.prefix + '/' if settings.prefix else ''}"
    return root + (f" at {settings.endpoint_url}" if settings.endpoint_url else "")


def _emit(args: argparse.Namespace, settings: Settings, data: dict[str, Any], lines: list[str]) -> None:
    if args.json:
        import json

        print(json.dumps({"bucket": settings.bucket, "prefix": settings.prefix, **data}, indent=2))
    else:
        from walbucket.cli.lines import printable

        print("\n".join(printable(line) for line in lines))  # a key may hold control characters: one line each


def _show(args: argparse.Namespace, settings: Settings) -> tuple[str, int]:
    from walbucket.admin.listing import DEFAULT_JOBS
    from walbucket.admin.verify import show
    from walbucket.cli.lines import size
    from walbucket.cli.render import render_show
    from walbucket.core.keylayout import KeyLayout

    store = args.open_store(settings)
    with _progress() as progress:
        summary = show(
            store, KeyLayout(settings.prefix), exact=args.exact, jobs=args.jobs or DEFAULT_JOBS,
            progress=progress, work_dir=_work_dir(),
        )  # fmt: skip
    _emit(args, settings, summary.to_json(), render_show(summary, _where(settings)))
    timelines = len(summary.timelines)
    line = f"{summary.objects} objects on {timelines} timeline{'s' * (timelines != 1)}, "
    return line + f"{size(summary.stored_bytes)} stored", 0


def _verify(args: argparse.Namespace, settings: Settings) -> tuple[str, int]:
    from walbucket.admin.listing import DEFAULT_JOBS
    from walbucket.admin.verify import DEEP_JOBS, verify
    from walbucket.cli.render import render_verify
    from walbucket.cli.wiring import tags_expected
    from walbucket.core.keylayout import KeyLayout

    store = args.open_store(settings)
    with _progress() as progress:
        report = verify(
            store, KeyLayout(settings.prefix), deep=args.deep, jobs=args.jobs or DEFAULT_JOBS,
            deep_jobs=args.jobs or DEEP_JOBS, progress=progress, work_dir=_work_dir(), now=time.time(),
            tags=tags_expected(settings),
        )  # fmt: skip
    _emit(args, settings, report.to_json(), render_verify(report, _where(settings)))
    errors, warnings = len(report.errors), len(report.warnings)
    line = f"{errors} error{'s' * (errors != 1)}, {warnings} warning{'s' * (warnings != 1)} in "
    line += f"{report.summary.objects} objects ({'deep' if report.deep else 'sampled'})"
    return line, FINDINGS_EXIT if errors else 0


# A password in a connection string would sit in argv for anyone to read: libpq has ~/.pgpass and PGPASSWORD.
_DSN_SECRET = re.compile(r"(^|\s)password\s*=|^postgres(ql)?://[^@/]*:[^@/]*@", re.IGNORECASE)


def _check(args: argparse.Namespace, settings: Settings) -> tuple[str, int]:
    from walbucket.admin.check import psql_switch_wal, run_checks
    from walbucket.cli.render import render_check
    from walbucket.core.keylayout import KeyLayout
    from walbucket.store.factory import credential_source

    if args.dsn and _DSN_SECRET.search(args.dsn):
        raise UsageError("--dsn holds a password", hint="give it in ~/.pgpass or PGPASSWORD, not on the command line")
    # A check should answer in seconds, not wait out a long retry budget against an unreachable endpoint.
    store = args.open_store(dataclasses.replace(settings, retry_budget=min(settings.retry_budget, 10.0)))
    detail = f"bucket '{settings.bucket}', prefix '{settings.prefix}', compression {settings.compression}, "
    detail += f"conditional_writes {settings.conditional_writes}"
    switch = (lambda: psql_switch_wal(args.psql, args.dsn, args.timeout)) if args.dsn else None
    pgdata = Path(args.pgdata) if args.pgdata else Path.cwd()
    report = run_checks(
        store, KeyLayout(settings.prefix), settings_detail=detail, credentials=lambda: credential_source(settings),
        conditional_mode=settings.conditional_writes, data_dir=pgdata, switch_wal=switch, wait_timeout=args.timeout,
        tags_mode=settings.object_tags, checksum_mode=settings.upload_checksum,
    )  # fmt: skip
    _emit(args, settings, report.to_json(), render_check(report, _where(settings)))
    failed = len(report.failed)
    if failed:
        return f"{failed} of {len(report.items)} checks failed", FINDINGS_EXIT
    return f"all {len(report.items)} checks passed or were skipped", 0


def _backfill(args: argparse.Namespace, settings: Settings) -> tuple[str, int]:
    from walbucket.admin.backfill import BACKFILL_JOBS, backfill
    from walbucket.archive.push import PushOptions
    from walbucket.cli.render import render_backfill, summary_of_backfill
    from walbucket.cli.wiring import push_options
    from walbucket.core.keylayout import KeyLayout

    store = args.open_store(settings)
    # a dry run writes nothing, not even the conditional-write probe
    options = PushOptions() if args.dry_run else push_options(settings, store)
    with _progress() as progress:
        report = backfill(
            Path(args.pg_wal), store, KeyLayout(settings.prefix), options, dry_run=args.dry_run,
            include_unmarked=args.include_unmarked, jobs=args.jobs or BACKFILL_JOBS, progress=progress,
        )  # fmt: skip
    _emit(args, settings, report.to_json(), render_backfill(report))
    return summary_of_backfill(report), FINDINGS_EXIT if report.failed else 0


# Each command: (parsed arguments, settings) -> (the one log line, or "" for none; exit code).
ADMIN_COMMANDS: dict[str, Callable[[argparse.Namespace, Settings], tuple[str, int]]] = {
    "show": _show,
    "verify": _verify,
    "check": _check,
    "backfill": _backfill,
}
