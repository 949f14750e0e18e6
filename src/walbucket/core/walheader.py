"""Parse the long page header that starts every WAL segment, and the head of ``global/pg_control``.

Layout of XLogLongPageHeaderData (unchanged from PostgreSQL 9.4 to 18, little-endian on every platform
walbucket supports):

====== ================ =====
offset field            type
====== ================ =====
0      xlp_magic        u16   identifies the WAL format, hence the PostgreSQL major version
2      xlp_info         u16   0x0002 (XLP_LONG_HEADER) on a segment's first page
4      xlp_tli          u32   timeline of the page (may be the parent's on a new timeline's first segment)
8      xlp_pageaddr     u64   LSN of the page: the segment's start LSN
16     xlp_rem_len      u32
24     xlp_sysid        u64   the cluster's system identifier
32     xlp_seg_size     u32
36     xlp_xlog_blcksz  u32
====== ================ =====

Pure: bytes in, values out; ``read_*`` are two-line I/O wrappers.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path

from walbucket.core.timeline import format_lsn
from walbucket.core.walname import WalName, segments_per_log, valid_segment_size

__all__ = [
    "LONG_HEADER_SIZE",
    "PAGE_MAGIC",
    "HeaderError",
    "SegmentMismatch",
    "WalHeader",
    "parse_control_system_id",
    "parse_long_header",
    "read_control_system_id",
    "read_wal_header",
    "segment_mismatch",
]

LONG_HEADER_SIZE = 40
_XLP_LONG_HEADER = 0x0002
_LONG_HEADER = struct.Struct("<HHIQI4xQII")

# XLOG_PAGE_MAGIC of each released major version (src/include/access/xlog_internal.h).
# 15 is checked against the installed PostgreSQL by tests/test_real_wal.py.
PAGE_MAGIC: dict[int, int] = {
    0xD07E: 94,
    0xD087: 95,
    0xD093: 96,
    0xD097: 10,
    0xD098: 11,
    0xD101: 12,
    0xD106: 13,
    0xD10D: 14,
    0xD110: 15,
    0xD113: 16,
    0xD116: 17,
    0xD118: 18,
}


class HeaderError(ValueError):
    """The bytes are not the start of a PostgreSQL WAL segment (the message says why)."""


@dataclass(frozen=True, slots=True)
class WalHeader:
    pg_version: int  # major version: 94, 95, 96, 10, 11, ...
    magic: int
    timeline: int
    page_lsn: int
    system_id: int
    seg_size: int
    block_size: int


def parse_long_header(page: bytes) -> WalHeader:
    """Parse and sanity-check the long page header at the start of a segment."""
    if len(page) < LONG_HEADER_SIZE:
        raise HeaderError(f"file is {len(page)} bytes, shorter than a WAL page header")
    magic, info, tli, pageaddr, _rem, sysid, seg_size, blcksz = _LONG_HEADER.unpack_from(page)
    version = PAGE_MAGIC.get(magic)
    if version is None:
        raise HeaderError(f"unknown WAL page magic 0x{magic:04X} (not a WAL file of PostgreSQL 9.4 to 18)")
    if not info & _XLP_LONG_HEADER:
        raise HeaderError("first page has no long header (not the start of a segment)")
    if not valid_segment_size(seg_size):
        raise HeaderError(f"invalid segment size {seg_size} in page header")
    if blcksz < 1024 or blcksz > 32768 or blcksz & (blcksz - 1):
        raise HeaderError(f"invalid block size {blcksz} in page header")
    if tli == 0 or pageaddr % seg_size:
        raise HeaderError("page header holds an invalid timeline or page address")
    return WalHeader(version, magic, tli, pageaddr, sysid, seg_size, blcksz)


def read_wal_header(path: Path) -> WalHeader:
    with path.open("rb") as f:
        return parse_long_header(f.read(LONG_HEADER_SIZE))


def parse_control_system_id(control: bytes) -> int:
    """Return the system identifier from the head of ``global/pg_control`` (a u64 at offset 0 in every version)."""
    if len(control) < 16:
        raise HeaderError("pg_control is too short")
    (system_id,) = struct.unpack_from("<Q", control)
    return int(system_id)


def read_control_system_id(data_dir: Path) -> int | None:
    """Return the system id of the cluster in ``data_dir``, or None when it has no readable pg_control."""
    try:
        with (data_dir / "global" / "pg_control").open("rb") as f:
            return parse_control_system_id(f.read(16))
    except (OSError, HeaderError):
        return None


@dataclass(frozen=True, slots=True)
class SegmentMismatch:
    """How a segment's page header or size disagrees with its name (:func:`segment_mismatch`)."""

    reason: str  # "size", "name" (no such segment at this segment size) or "address" (another segment's data)
    detail: str  # completes "WAL file 'NAME' ...": push's and backfill's words


def segment_mismatch(wal: WalName, header: WalHeader, size: int) -> SegmentMismatch | None:
    """Check a segment (or .partial) of ``size`` bytes against its name; None when they agree.

    The one rule push applies before storing, backfill's dry run predicts, and get applies before restoring:
    the file is exactly one segment long; its name exists at the header's segment size (checked before the page
    address: a name beyond its log id aliases another segment's start LSN); its first page is that segment's, on
    its timeline or an earlier one (a new timeline's first segment starts with its parent's page).
    """
    assert wal.segment is not None, "only segments and .partial files have a page header"
    if size != header.seg_size:
        return SegmentMismatch("size", f"is {size} bytes, but its segment size is {header.seg_size}")
    if not wal.segment.fits(header.seg_size):
        return SegmentMismatch(
            "name",
            f"is not a segment name at segment size {header.seg_size}: "
            f"its last 8 hex digits must be below {segments_per_log(header.seg_size):08X}",
        )
    if header.page_lsn != wal.segment.start_lsn(header.seg_size) or header.timeline > wal.timeline:
        return SegmentMismatch(
            "address",
            f"holds the data of another segment (page address {format_lsn(header.page_lsn)}, "
            f"timeline {header.timeline})",
        )
    return None
