"""Build WAL-like files in memory: a valid long page header followed by filler, for tests that need no server."""

from __future__ import annotations

import struct

from walbucket.walname import Segment

__all__ = ["PG15_MAGIC", "SEG_SIZE", "SYSTEM_ID", "history_file", "segment_bytes"]

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
