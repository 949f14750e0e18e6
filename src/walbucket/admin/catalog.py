"""Analyse an archive from its listing: timelines, segment ranges, gaps, and what is wrong with them. Pure.

Values in (the listing's keys and stored sizes, the identity, parsed history files, metadata and tags where read),
values out: a Catalog and an ArchiveSummary for ``walbucket show``; admin/findings.py turns them into Findings
for ``walbucket verify``.

Timelines follow PostgreSQL (core/timeline.py reads history files): when timeline T branched off its parent P at
LSN S, recovery through T reads P's segments up to the one before S's segment and T's from S's segment on
(XLogFileReadAnyTLI), so P must be archived up to ``segno(S) - 1`` and T from ``segno(S)``.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from walbucket.core.identity import ArchiveIdentity
from walbucket.core.keylayout import KeyLayout
from walbucket.core.timeline import Histories, format_lsn
from walbucket.core.walname import Segment, WalKind, WalName
from walbucket.store.protocol import ObjectInfo

__all__ = [
    "DEFAULT_SEG_SIZE",
    "ArchiveSummary",
    "Catalog",
    "FileSummary",
    "TimelineSummary",
    "catalog",
    "identity_seg_size",
    "missing_runs",
    "ratio",
    "segment_name",
    "summarize",
]

DEFAULT_SEG_SIZE = 16 << 20  # only when the archive has no identity.json to say otherwise


def segment_name(timeline: int, number: int, seg_size: int) -> str:
    return Segment.from_number(timeline, number, seg_size).name


@dataclass(frozen=True, slots=True)
class Catalog:
    """A listing sorted out by kind; segments per timeline as (XLogSegNo, object), in WAL order."""

    seg_size: int
    segments: Mapping[int, tuple[tuple[int, ObjectInfo], ...]]
    partials: tuple[tuple[WalName, ObjectInfo], ...]
    histories: Mapping[int, ObjectInfo]
    backups: tuple[tuple[WalName, ObjectInfo], ...]
    foreign: tuple[str, ...]

    @property
    def timelines(self) -> list[int]:
        """Every timeline that has an object of any kind."""
        found = set(self.segments) | set(self.histories)
        found.update(wal.timeline for wal, _ in (*self.partials, *self.backups))
        return sorted(found)

    def wal_objects(self, segments: bool = True) -> list[tuple[WalName, ObjectInfo]]:
        """Every WAL object (segments last, in WAL order), for checks that go object by object."""
        others = [*self.partials, *self.backups]
        for timeline, info in sorted(self.histories.items()):
            others.append((WalName(f"{timeline:08X}.history", WalKind.HISTORY, timeline, None), info))
        if not segments:
            return others
        return others + [
            (self.segment_wal(tl, n), info) for tl, entries in sorted(self.segments.items()) for n, info in entries
        ]

    def segment_wal(self, timeline: int, number: int) -> WalName:
        segment = Segment.from_number(timeline, number, self.seg_size)
        return WalName(segment.name, WalKind.SEGMENT, timeline, segment)

    def __len__(self) -> int:
        return sum(map(len, self.segments.values())) + len(self.partials) + len(self.histories) + len(self.backups)


def catalog(objects: Iterable[ObjectInfo], layout: KeyLayout, seg_size: int) -> Catalog:
    """Sort listed objects by kind; keys that are not walbucket's (or impossible for ``seg_size``) are foreign."""
    segments: dict[int, list[tuple[int, ObjectInfo]]] = defaultdict(list)
    partials: list[tuple[WalName, ObjectInfo]] = []
    histories: dict[int, ObjectInfo] = {}
    backups: list[tuple[WalName, ObjectInfo]] = []
    foreign: list[str] = []
    for info in objects:
        wal = layout.name_of(info.key)
        if wal is None or (wal.segment is not None and not wal.segment.fits(seg_size)):
            foreign.append(info.key)
        elif wal.kind is WalKind.SEGMENT:
            assert wal.segment is not None
            segments[wal.timeline].append((wal.segment.number(seg_size), info))
        elif wal.kind is WalKind.PARTIAL:
            partials.append((wal, info))
        elif wal.kind is WalKind.HISTORY:
            histories[wal.timeline] = info
        else:
            backups.append((wal, info))
    ordered = {tl: tuple(sorted(entries, key=lambda entry: entry[0])) for tl, entries in sorted(segments.items())}
    return Catalog(seg_size, ordered, tuple(partials), histories, tuple(backups), tuple(foreign))


def missing_runs(numbers: Iterable[int], low: int, high: int) -> list[tuple[int, int]]:
    """Return the runs (first, last) of numbers from ``low`` to ``high`` that ``numbers`` (sorted) lacks."""
    runs: list[tuple[int, int]] = []
    expected = low
    for number in numbers:
        if number > high:
            break
        if number > expected:
            runs.append((expected, number - 1))
        expected = max(expected, number + 1)
    if expected <= high:
        runs.append((expected, high))
    return runs


def identity_seg_size(identity: ArchiveIdentity | None) -> int:
    return identity.seg_size if identity is not None else DEFAULT_SEG_SIZE


def ratio(original: int, stored: int) -> float | None:
    return round(original / stored, 2) if stored else None


@dataclass(frozen=True, slots=True)
class TimelineSummary:
    timeline: int
    parent: int | None  # from the timeline's history file; None for timeline 1 or without one
    switch_lsn: int | None
    history: bool  # the archive holds its history file
    first: str | None
    last: str | None
    segments: int
    missing: int  # segments absent between first and last
    stored_bytes: int
    original_bytes: int

    def to_json(self) -> dict[str, Any]:
        return {
            "timeline": self.timeline, "parent": self.parent,
            "switch_lsn": None if self.switch_lsn is None else format_lsn(self.switch_lsn),
            "history_file": self.history, "first": self.first, "last": self.last, "segments": self.segments,
            "missing": self.missing, "stored_bytes": self.stored_bytes, "original_bytes": self.original_bytes,
            "compression_ratio": ratio(self.original_bytes, self.stored_bytes),
        }  # fmt: skip


@dataclass(frozen=True, slots=True)
class FileSummary:
    name: str
    stored_bytes: int
    original_bytes: int

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "stored_bytes": self.stored_bytes, "original_bytes": self.original_bytes}


@dataclass(frozen=True, slots=True)
class ArchiveSummary:
    """What ``walbucket show`` reports. Original sizes are exact when read from each object's metadata
    (``exact``); otherwise segments and partials count as the segment size (push accepts no other size) and
    history and backup files at their stored size."""

    identity: ArchiveIdentity | None
    seg_size: int
    timelines: tuple[TimelineSummary, ...]
    partials: tuple[FileSummary, ...]
    histories: tuple[FileSummary, ...]
    backups: tuple[FileSummary, ...]
    foreign: tuple[str, ...]
    exact: bool

    @property
    def files(self) -> tuple[FileSummary, ...]:
        return self.partials + self.histories + self.backups

    @property
    def objects(self) -> int:
        return sum(t.segments for t in self.timelines) + len(self.files)

    @property
    def stored_bytes(self) -> int:
        return sum(t.stored_bytes for t in self.timelines) + sum(f.stored_bytes for f in self.files)

    @property
    def original_bytes(self) -> int:
        return sum(t.original_bytes for t in self.timelines) + sum(f.original_bytes for f in self.files)

    def to_json(self) -> dict[str, Any]:
        identity = self.identity
        return {
            "identity": None if identity is None else {
                "system_id": str(identity.system_id), "pg_version": identity.pg_version, "seg_size": identity.seg_size,
            },
            "seg_size": self.seg_size,
            "original_bytes_source": "metadata" if self.exact else "estimate",
            "timelines": [t.to_json() for t in self.timelines],
            "partials": [f.to_json() for f in self.partials],
            "history_files": [f.to_json() for f in self.histories],
            "backup_files": [f.to_json() for f in self.backups],
            "foreign_objects": list(self.foreign),
            "totals": {
                "objects": self.objects, "stored_bytes": self.stored_bytes, "original_bytes": self.original_bytes,
                "compression_ratio": ratio(self.original_bytes, self.stored_bytes),
            },
        }  # fmt: skip


def summarize(
    cat: Catalog, identity: ArchiveIdentity | None, histories: Histories, original: Mapping[str, int] | None = None
) -> ArchiveSummary:
    """Summarize each timeline and the other files; ``original`` maps keys to sizes read from metadata."""
    seg_size = cat.seg_size

    def size_of(info: ObjectInfo, estimate: int) -> int:
        return original.get(info.key, estimate) if original is not None else estimate

    timelines = []
    for tl in cat.timelines:
        entries = cat.segments.get(tl, ())
        history = histories.get(tl)
        last_entry = history[-1] if isinstance(history, tuple) else None
        numbers = [n for n, _ in entries]
        first, last = (numbers[0], numbers[-1]) if numbers else (None, None)
        timelines.append(
            TimelineSummary(
                tl, last_entry.timeline if last_entry else None, last_entry.switch_lsn if last_entry else None,
                tl in cat.histories,
                None if first is None else segment_name(tl, first, seg_size),
                None if last is None else segment_name(tl, last, seg_size),
                len(entries),
                0 if first is None or last is None else last - first + 1 - len(entries),
                sum(info.size for _, info in entries),
                sum(size_of(info, seg_size) for _, info in entries),
            )
        )  # fmt: skip

    def files(pairs: Iterable[tuple[str, ObjectInfo]], estimate: int | None) -> tuple[FileSummary, ...]:
        return tuple(
            FileSummary(name, info.size, size_of(info, info.size if estimate is None else estimate))
            for name, info in sorted(pairs, key=lambda pair: pair[0])
        )

    return ArchiveSummary(
        identity, seg_size, tuple(timelines),
        files(((wal.name, info) for wal, info in cat.partials), seg_size),
        files(((f"{tl:08X}.history", info) for tl, info in cat.histories.items()), None),
        files(((wal.name, info) for wal, info in cat.backups), None),
        cat.foreign, original is not None,
    )  # fmt: skip
