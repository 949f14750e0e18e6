"""Build WAL-like files in memory: a valid long page header followed by filler, for tests that need no server."""

from __future__ import annotations

import struct

from walbucket.core.walname import Segment, WalKind, parse_wal_name

__all__ = ["PG15_MAGIC", "SEG_SIZE", "SYSTEM_ID", "history_file", "segment_bytes", "segment_names", "segment_of"]

PG15_MAGIC = 0xD110
SEG_SIZE = 16 << 20
SYSTEM_ID = 7_300_000_000_000_000_001


def segment_bytes(
    name: str,
    *,
    system_id: int = SYSTEM_ID,
    seg_size: int = SEG_SIZE,
    magic: int = PG15_MAGIC,
    page_timeline: int | None = None,
    fill: bytes = b"walbucket-test-filler",
    size: int | None = None,
) -> bytes:
    """Return the bytes of segment ``name`` (24 hex digits, optionally '.partial') with a valid long header."""
    base = name[:24]
    segment = Segment(int(base[:8], 16), int(base[8:16], 16), int(base[16:24], 16))
    header = struct.pack(
        "<HHIQI4xQII",
        magic,
        0x0002,
        page_timeline or segment.timeline,
        segment.start_lsn(seg_size),
        0,
        system_id,
        seg_size,
        8192,
    )
    body = (fill * (seg_size // max(len(fill), 1) + 1))[: seg_size - len(header)]
    data = header + body
    return data if size is None else data[:size]


def history_file(timeline: int, parent: int = 1, switch_lsn: str = "0/3000000") -> bytes:
    return f"{parent}\t{switch_lsn}\tno recovery target specified\n".encode()


def segment_of(name: str) -> Segment:
    """The Segment of a segment's name (24 hex digits)."""
    wal = parse_wal_name(name)
    assert wal is not None and wal.kind is WalKind.SEGMENT and wal.segment is not None, name
    return wal.segment


def segment_names(first: str, last: str, seg_size: int = SEG_SIZE) -> list[str]:
    """Names of the segments from ``first`` to ``last``, both included, in WAL order."""
    segment, end, names = segment_of(first), segment_of(last), []
    while segment <= end:
        names.append(segment.name)
        segment = segment.next(seg_size)
    return names
