"""Push what a pg_wal directory holds and the archive lacks: the gap an old primary leaves behind at failover.

Each file goes through ``push`` itself, with its identity and duplicate checks: identical copies already archived
are duplicates, different content is a conflict and is never overwritten. Only files PostgreSQL finished are taken:
segments need an ``archive_status/<name>.ready`` or ``.done`` file, because a segment without one is either being
written or a recycled file under a future name (``include_unmarked`` takes them anyway; push still refuses a
recycled one, whose page header names another segment). Segments and partials go first, so that an empty archive
gets its identity before history and backup files are tagged.
"""

from __future__ import annotations

import hashlib
import os
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, get_args

from walbucket.admin.listing import Progress, Tally, run_parallel
from walbucket.archive.fsutil import CHUNK
from walbucket.archive.identity import IdentityMemo, load_identity
from walbucket.archive.push import PushOptions, Uploaded, push
from walbucket.core.errors import ArchiveConflict, IdentityMismatch, WalFileError
from walbucket.core.identity import identity_conflict
from walbucket.core.keylayout import META_SHA256, KeyLayout
from walbucket.core.walheader import HeaderError, read_wal_header, segment_mismatch
from walbucket.core.walname import WalKind, WalName, parse_wal_name
from walbucket.store.protocol import Store

__all__ = ["BACKFILL_JOBS", "BackfillItem", "BackfillReport", "backfill", "candidates"]

BACKFILL_JOBS = 4
Outcome = Literal["uploaded", "duplicate", "conflict", "refused", "would-upload", "skipped"]
_FAILED = ("conflict", "refused")


@dataclass(frozen=True, slots=True)
class BackfillItem:
    name: str
    outcome: Outcome
    detail: str = ""
    size: int | None = None
    stored_size: int | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name, "outcome": self.outcome, "detail": self.detail,
            "size": self.size, "stored_size": self.stored_size,
        }  # fmt: skip


@dataclass(frozen=True, slots=True)
class BackfillReport:
    directory: str
    dry_run: bool
    items: tuple[BackfillItem, ...]

    @property
    def counts(self) -> dict[str, int]:
        counted = Counter(item.outcome for item in self.items)
        return {outcome: counted[outcome] for outcome in get_args(Outcome)}

    @property
    def failed(self) -> tuple[BackfillItem, ...]:
        return tuple(item for item in self.items if item.outcome in _FAILED)

    def to_json(self) -> dict[str, Any]:
        return {
            "directory": self.directory, "dry_run": self.dry_run, "ok": not self.failed, "counts": self.counts,
            "files": [item.to_json() for item in self.items],
        }  # fmt: skip


_ORDER = {WalKind.SEGMENT: 0, WalKind.PARTIAL: 0, WalKind.BACKUP: 1, WalKind.HISTORY: 1}


def candidates(pg_wal: Path, include_unmarked: bool = False) -> tuple[list[tuple[WalName, Path]], list[BackfillItem]]:
    """Return the WAL files of ``pg_wal`` to push, in push order, and the ones skipped (with the reason)."""
    status = pg_wal / "archive_status"
    chosen: list[tuple[WalName, Path]] = []
    skipped: list[BackfillItem] = []
    for entry in sorted(os.scandir(pg_wal), key=lambda e: e.name):
        wal = parse_wal_name(entry.name)
        if wal is None or not entry.is_file():
            continue
        marked = (status / f"{wal.name}.ready").exists() or (status / f"{wal.name}.done").exists()
        if wal.kind is WalKind.SEGMENT and not marked and not include_unmarked:
            reason = "no archive_status file: being written, or a recycled file (--include-unmarked takes it)"
            skipped.append(BackfillItem(wal.name, "skipped", reason))
            continue
        chosen.append((wal, Path(entry.path)))
    chosen.sort(key=lambda pair: (_ORDER[pair[0].kind], pair[0].name))
    return chosen, skipped


def backfill(
    pg_wal: Path,
    store: Store,
    layout: KeyLayout,
    options: PushOptions,
    *,
    dry_run: bool = False,
    include_unmarked: bool = False,
    jobs: int = BACKFILL_JOBS,
    progress: Progress | None = None,
) -> BackfillReport:
    """Push each finished WAL file of ``pg_wal`` (or, with ``dry_run``, tell what pushing would do)."""
    if not pg_wal.is_dir():
        raise WalFileError(f"'{pg_wal}' is not a directory", hint="give the pg_wal directory of the old primary")
    chosen, skipped = candidates(pg_wal, include_unmarked)
    data_dir = pg_wal.parent if (pg_wal.parent / "global" / "pg_control").is_file() else None
    memo = IdentityMemo()
    tally = Tally(progress, "checking" if dry_run else "pushing", len(chosen))

    def one(pair: tuple[WalName, Path]) -> BackfillItem:
        wal, path = pair
        item = (
            _predict(wal, path, store, layout, memo) if dry_run else _push(path, store, layout, options, data_dir, memo)
        )
        tally.add()
        return item

    first = [pair for pair in chosen if pair[0].is_wal_data]
    then = [pair for pair in chosen if not pair[0].is_wal_data]
    items = run_parallel(jobs, one, first) + run_parallel(jobs, one, then)
    ordered = sorted(items + skipped, key=lambda item: item.name)
    return BackfillReport(str(pg_wal), dry_run, tuple(ordered))


def _push(
    path: Path, store: Store, layout: KeyLayout, options: PushOptions, data_dir: Path | None, memo: IdentityMemo
) -> BackfillItem:
    try:
        outcome = push(path, store, layout, options, data_dir=data_dir, memo=memo)
    except ArchiveConflict as exc:
        return BackfillItem(path.name, "conflict", exc.message)
    except (IdentityMismatch, WalFileError) as exc:
        return BackfillItem(path.name, "refused", exc.message)
    if isinstance(outcome, Uploaded):
        return BackfillItem(path.name, "uploaded", "", outcome.size, outcome.stored_size)
    return BackfillItem(path.name, "duplicate", "already archived with identical content", outcome.size)


def _predict(wal: WalName, path: Path, store: Store, layout: KeyLayout, memo: IdentityMemo) -> BackfillItem:
    """What push would answer, without writing: compare with the archived object's SHA-256; check the header."""
    try:
        size = path.stat().st_size
        if wal.is_wal_data:
            problem = _header_problem(wal, path, store, layout, memo)
            if problem is not None:
                return BackfillItem(wal.name, "refused", problem, size)
        existing = store.head(layout.key(wal))
        if existing is None:
            return BackfillItem(wal.name, "would-upload", "", size)
        if existing.metadata.get(META_SHA256) == _sha256(path):
            return BackfillItem(wal.name, "duplicate", "already archived with identical content", size)
    except OSError as exc:
        return BackfillItem(wal.name, "refused", f"cannot read WAL file '{path}': {exc.strerror}")
    return BackfillItem(wal.name, "conflict", f"WAL file '{wal.name}' is archived with different content", size)


def _header_problem(wal: WalName, path: Path, store: Store, layout: KeyLayout, memo: IdentityMemo) -> str | None:
    """Push's refusal of a segment in push's words (core/walheader.py's rule), or None."""
    try:
        header = read_wal_header(path)
    except HeaderError as exc:
        return f"WAL file '{wal.name}' is not a valid segment: {exc}"
    mismatch = segment_mismatch(wal, header, path.stat().st_size)
    if mismatch is not None:
        return f"WAL file '{wal.name}' {mismatch.detail}"
    identity = load_identity(store, layout, memo)
    conflict = identity_conflict(identity, header) if identity is not None else None
    return None if conflict is None else f"WAL file '{wal.name}' does not belong to this archive: {conflict}"


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()
