"""The show and verify services: list the archive in parallel, read what the analysis needs, return reports.

Reading is bounded: the listing gives keys and stored sizes; only history files are downloaded (they are tiny and
define the timelines). ``verify`` compares metadata and tags of a sample (the first and last segment of each
timeline and every other file), or of every object with ``deep``, which also downloads each object and checks it
exactly as ``walbucket get`` would (hash, size, page header, identity). Each worker holds one object at a time.
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from walbucket.admin.catalog import ArchiveSummary, Catalog, catalog, identity_seg_size, summarize
from walbucket.admin.finding import Finding, finding
from walbucket.admin.findings import group_problems, object_problems, structural_findings
from walbucket.admin.listing import DEFAULT_JOBS, Progress, Tally, list_archive, run_parallel
from walbucket.admin.retention import retention_findings
from walbucket.archive.get import verify_into
from walbucket.archive.identity import IdentityMemo, load_identity
from walbucket.core.errors import IdentityMismatch, IntegrityError, StoreError, StoreUnavailable
from walbucket.core.identity import ArchiveIdentity
from walbucket.core.keylayout import META_SIZE, KeyLayout
from walbucket.core.timeline import Histories, HistoryEntry, parse_history
from walbucket.core.walname import WalName
from walbucket.store.protocol import ObjectInfo, Store, StoredObject

__all__ = ["Survey", "VerifyReport", "show", "survey", "verify"]

DEEP_JOBS = 4  # each worker holds one compressed object and one chunk of it decompressed


@dataclass(frozen=True, slots=True)
class Survey:
    """What one parallel listing and the history files tell about an archive."""

    identity: ArchiveIdentity | None
    identity_error: str | None
    catalog: Catalog
    histories: Histories
    streams: int  # prefixes listed in parallel


@dataclass(frozen=True, slots=True)
class VerifyReport:
    summary: ArchiveSummary
    findings: tuple[Finding, ...]
    checked: int  # objects whose metadata and tags were compared (and, with deep, content checked)
    deep: bool

    @property
    def errors(self) -> tuple[Finding, ...]:
        return tuple(f for f in self.findings if f.severity == "error")

    @property
    def warnings(self) -> tuple[Finding, ...]:
        return tuple(f for f in self.findings if f.severity == "warning")

    def to_json(self) -> dict[str, Any]:
        return {
            "ok": not self.errors, "deep": self.deep, "objects": self.summary.objects, "checked": self.checked,
            "errors": len(self.errors), "warnings": len(self.warnings),
            "findings": [f.to_json() for f in self.findings],
            "timelines": [t.to_json() for t in self.summary.timelines],
        }  # fmt: skip


def survey(
    store: Store, layout: KeyLayout, *, jobs: int = DEFAULT_JOBS, progress: Progress | None = None, work_dir: Path
) -> Survey:
    """List the archive by prefix in parallel, read its identity and its history files."""
    identity, identity_error = None, None
    try:
        identity = load_identity(store, layout)
    except IntegrityError as exc:
        identity_error = exc.message
    listing = list_archive(store, layout, jobs=jobs, progress=progress)
    cat = catalog(listing.objects, layout, identity_seg_size(identity))
    keys = sorted(cat.histories.items())
    read = run_parallel(jobs, lambda item: _read_history(store, layout, item[1], work_dir), keys)
    histories = {tl: entries for (tl, _), entries in zip(keys, read, strict=True)}
    return Survey(identity, identity_error, cat, histories, len(listing.streams))


def show(
    store: Store,
    layout: KeyLayout,
    *,
    exact: bool = False,
    jobs: int = DEFAULT_JOBS,
    progress: Progress | None = None,
    work_dir: Path,
) -> ArchiveSummary:
    """Summarize the archive: identity, timelines with their ranges and sizes, partial, history and backup files.

    ``exact`` reads every object's original size from its metadata (a HEAD each, in parallel).
    """
    found = survey(store, layout, jobs=jobs, progress=progress, work_dir=work_dir)
    if found.identity_error is not None:  # without it the segment size, and so every range, is unknown
        raise IntegrityError(found.identity_error, hint="walbucket verify lists what else is wrong")
    original: dict[str, int] | None = None
    if exact:
        objects = [info for _, info in found.catalog.wal_objects()]
        tally = Tally(progress, "reading metadata", len(objects))

        def size(info: ObjectInfo) -> int | None:
            head = store.head(info.key)
            tally.add()
            value = head.metadata.get(META_SIZE, "") if head is not None else ""
            return int(value) if value.isdigit() else None

        sizes = run_parallel(jobs, size, objects)
        original = {info.key: n for info, n in zip(objects, sizes, strict=True) if n is not None}
    return summarize(found.catalog, found.identity, found.histories, original)


def verify(
    store: Store,
    layout: KeyLayout,
    *,
    deep: bool = False,
    jobs: int = DEFAULT_JOBS,
    deep_jobs: int = DEEP_JOBS,
    progress: Progress | None = None,
    work_dir: Path,
    now: float | None = None,
    tags: bool = True,
) -> VerifyReport:
    """Find gaps, timeline and history problems, orphan partials, and objects that disagree with the identity.

    With backup history files in the archive, also compare them with the bucket's lifecycle rules as of ``now``
    (default: the current time): one more request. Without ``tags`` (a store that refuses them), objects are checked
    by their metadata and key names alone.
    """
    found = survey(store, layout, jobs=jobs, progress=progress, work_dir=work_dir)
    cat = found.catalog
    findings = structural_findings(cat, found.identity, found.identity_error, found.histories)
    findings += _retention(store, layout, cat, time.time() if now is None else now)
    selected = cat.wal_objects() if deep else _sample(cat)
    memo = IdentityMemo()
    memo.value = found.identity
    tally = Tally(progress, "downloading and checking" if deep else "checking metadata and tags", len(selected))

    def check(pair: tuple[WalName, ObjectInfo]) -> list[tuple[str, str, str]]:
        problems = _check_object(store, layout, pair, found.identity, cat.seg_size, deep, memo, work_dir, tags)
        tally.add()
        return problems

    checked = run_parallel(deep_jobs if deep else jobs, check, selected)
    findings += group_problems(problem for problems in checked for problem in problems)
    summary = summarize(cat, found.identity, found.histories)
    return VerifyReport(summary, tuple(findings), len(selected), deep)


def _retention(store: Store, layout: KeyLayout, cat: Catalog, now: float) -> list[Finding]:
    """Compare the backups recorded with the lifecycle rules; a refusal to show the rules is a warning."""
    if not cat.backups:
        return []
    found: list[Finding] = []
    try:
        rules = store.lifecycle_rules()
    except StoreUnavailable:
        raise
    except StoreError as exc:  # a policy without s3:GetLifecycleConfiguration: still tell which WAL is gone
        message = f"the bucket's lifecycle rules could not be read ({exc.message}): WAL expiry was not compared "
        found.append(finding("lifecycle-unreadable", message + "with the backups recorded"))
        rules = None
    segments = {tl: dict(entries) for tl, entries in cat.segments.items()}
    times: dict[str, float] = {}
    for wal, backup in cat.backups:
        assert wal.segment is not None
        info = segments.get(wal.timeline, {}).get(wal.segment.number(cat.seg_size))
        if info is not None:  # a store that lists no upload time: the backup's is close
            uploaded = info.last_modified if info.last_modified is not None else backup.last_modified
            times[wal.name[:24]] = uploaded if uploaded is not None else now
    backups = [(wal, info.last_modified) for wal, info in cat.backups]
    return found + retention_findings(rules, layout, backups, times, now)


def _sample(cat: Catalog) -> list[tuple[WalName, ObjectInfo]]:
    """Every object but the segments, and the first and last segment of each timeline."""
    chosen = cat.wal_objects(segments=False)
    for tl, entries in sorted(cat.segments.items()):
        ends = entries[:1] + entries[-1:] if len(entries) > 1 else entries
        chosen += [(cat.segment_wal(tl, number), info) for number, info in ends]
    return chosen


def _check_object(
    store: Store,
    layout: KeyLayout,
    pair: tuple[WalName, ObjectInfo],
    identity: ArchiveIdentity | None,
    seg_size: int,
    deep: bool,
    memo: IdentityMemo,
    work_dir: Path,
    tags: bool,
) -> list[tuple[str, str, str]]:
    wal, info = pair
    if not deep:
        head = store.head(info.key)
        metadata = None if head is None else head.metadata
        found_tags = store.tags(info.key) if head is not None and tags else None
        problems = object_problems(wal, metadata, found_tags, identity, seg_size)
        return [(wal.name, code, detail) for code, detail in problems]
    stored = store.read(info.key)
    metadata = None if stored is None else stored.info.metadata
    found_tags = store.tags(info.key) if stored is not None and tags else None
    problems = object_problems(wal, metadata, found_tags, identity, seg_size)
    if stored is not None and not any(code == "bad-metadata" for code, _ in problems):
        try:
            _verify_content(wal, stored, store, layout, memo, work_dir)
        except IntegrityError as exc:
            problems.append(("damaged-object", exc.message))
        except IdentityMismatch as exc:
            problems.append(("identity-mismatch", exc.message))
    return [(wal.name, code, detail) for code, detail in problems]


def _verify_content(
    wal: WalName, stored: StoredObject, store: Store, layout: KeyLayout, memo: IdentityMemo, work_dir: Path
) -> None:
    """Check the object as ``get`` would, by restoring it into ``work_dir`` and removing it again."""
    with tempfile.TemporaryDirectory(dir=work_dir, prefix="walbucket-verify-") as scratch:
        verify_into(wal, stored, Path(scratch) / wal.name, store, layout, None, memo)


def _read_history(store: Store, layout: KeyLayout, info: ObjectInfo, work_dir: Path) -> tuple[HistoryEntry, ...] | str:
    wal = layout.name_of(info.key)
    assert wal is not None
    stored = store.read(info.key)
    if stored is None:
        return "it was listed but is gone"
    with tempfile.TemporaryDirectory(dir=work_dir, prefix="walbucket-history-") as scratch:
        dest = Path(scratch) / wal.name
        try:
            verify_into(wal, stored, dest, store, layout, None)
        except IntegrityError as exc:
            return exc.message
        text = dest.read_text(encoding="utf-8", errors="replace")
    try:
        return parse_history(text)
    except ValueError as exc:
        return f"it is not a timeline history file: {exc}"
