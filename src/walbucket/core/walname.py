"""WAL file names and their kinds.

PostgreSQL archives four kinds of file, all named in upper-case hex:

- segment  ``TTTTTTTTLLLLLLLLSSSSSSSS``            (timeline, log id, segment within the log id)
- partial  ``TTTTTTTTLLLLLLLLSSSSSSSS.partial``    (the last, incomplete segment of a timeline at promotion)
- history  ``TTTTTTTT.history``                    (how timeline T branched off its parent)
- backup   ``TTTTTTTTLLLLLLLLSSSSSSSS.OOOOOOOO.backup`` (a base backup's start and stop positions)

Pure: names in, values out.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from enum import Enum

__all__ = [
    "MAX_SEG_SIZE",
    "MIN_SEG_SIZE",
    "Segment",
    "WalKind",
    "WalName",
    "parse_wal_name",
    "segments_per_log",
    "valid_segment_size",
]

MIN_SEG_SIZE = 1 << 20
MAX_SEG_SIZE = 1 << 30


class WalKind(str, Enum):
    SEGMENT = "segment"
    PARTIAL = "partial"
    HISTORY = "history"
    BACKUP = "backup"


_PATTERNS = {
    WalKind.SEGMENT: re.compile(r"(?P<tli>[0-9A-F]{8})(?P<log>[0-9A-F]{8})(?P<seg>[0-9A-F]{8})"),
    WalKind.PARTIAL: re.compile(r"(?P<tli>[0-9A-F]{8})(?P<log>[0-9A-F]{8})(?P<seg>[0-9A-F]{8})\.partial"),
    WalKind.HISTORY: re.compile(r"(?P<tli>[0-9A-F]{8})\.history"),
    WalKind.BACKUP: re.compile(
        r"(?P<tli>[0-9A-F]{8})(?P<log>[0-9A-F]{8})(?P<seg>[0-9A-F]{8})\.(?P<off>[0-9A-F]{8})\.backup"
    ),
}


def valid_segment_size(size: int) -> bool:
    """Tell whether ``size`` is a WAL segment size PostgreSQL accepts (a power of two, 1 MiB to 1 GiB)."""
    return MIN_SEG_SIZE <= size <= MAX_SEG_SIZE and size & (size - 1) == 0


def segments_per_log(seg_size: int) -> int:
    """Return how many segments one log id holds (XLogSegmentsPerXLogId)."""
    return 0x1_0000_0000 // seg_size


@dataclass(frozen=True, order=True, slots=True)
class Segment:
    """A segment position: timeline plus the log id and segment number of its file name."""

    timeline: int
    log: int
    seg: int

    @property
    def name(self) -> str:
        return f"{self.timeline:08X}{self.log:08X}{self.seg:08X}"

    def number(self, seg_size: int) -> int:
        """Return XLogSegNo: the segment's index counted from LSN 0."""
        return self.log * segments_per_log(seg_size) + self.seg

    def start_lsn(self, seg_size: int) -> int:
        return self.number(seg_size) * seg_size

    def fits(self, seg_size: int) -> bool:
        """Tell whether the name's segment number exists at ``seg_size`` (is below segments_per_log).

        A name's last 8 hex digits are bounded only by the segment size, which the name does not carry: at 16 MiB,
        ``000000010000000000000100`` would alias ``000000010000000100000000``, same start LSN, another name.
        """
        return self.seg < segments_per_log(seg_size)

    @classmethod
    def from_number(cls, timeline: int, number: int, seg_size: int) -> Segment:
        log, seg = divmod(number, segments_per_log(seg_size))
        return cls(timeline, log, seg)

    def next(self, seg_size: int) -> Segment:
        return Segment.from_number(self.timeline, self.number(seg_size) + 1, seg_size)

    def on_timeline(self, timeline: int) -> Segment:
        return replace(self, timeline=timeline)


@dataclass(frozen=True, slots=True)
class WalName:
    """A parsed WAL file name. ``segment`` is None only for history files."""

    name: str
    kind: WalKind
    timeline: int
    segment: Segment | None

    @property
    def is_wal_data(self) -> bool:
        """Segments and partials carry WAL pages (and so a long page header)."""
        return self.kind in (WalKind.SEGMENT, WalKind.PARTIAL)


def parse_wal_name(name: str) -> WalName | None:
    """Parse a WAL file name as PostgreSQL writes it; return None when it is not one."""
    for kind, pattern in _PATTERNS.items():
        match = pattern.fullmatch(name)
        if match is None:
            continue
        timeline = int(match["tli"], 16)
        if timeline == 0:
            return None
        segment = None
        if kind is not WalKind.HISTORY:
            segment = Segment(timeline, int(match["log"], 16), int(match["seg"], 16))
        return WalName(name, kind, timeline, segment)
    return None
