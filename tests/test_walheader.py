"""The long page header of a segment and the head of pg_control, parsed from bytes built in memory."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest

from walbucket.core.walheader import (
    LONG_HEADER_SIZE,
    PAGE_MAGIC,
    HeaderError,
    WalHeader,
    parse_control_system_id,
    parse_long_header,
    read_control_system_id,
    read_wal_header,
)
from walfactory import PG15_MAGIC, SYSTEM_ID, segment_bytes

MIB = 1 << 20


def header(
    *,
    magic: int = PG15_MAGIC,
    info: int = 0x0002,
    timeline: int = 1,
    pageaddr: int = 16 * MIB,
    system_id: int = SYSTEM_ID,
    seg_size: int = 16 * MIB,
    block_size: int = 8192,
) -> bytes:
    return struct.pack("<HHIQI4xQII", magic, info, timeline, pageaddr, 0, system_id, seg_size, block_size)


def test_header_is_forty_bytes() -> None:
    assert len(header()) == LONG_HEADER_SIZE


def test_parse_long_header_returns_every_field() -> None:
    parsed = parse_long_header(header(timeline=3, pageaddr=0x2_A000_0000, system_id=42, block_size=16384))
    assert parsed == WalHeader(
        pg_version=15,
        magic=PG15_MAGIC,
        timeline=3,
        page_lsn=0x2_A000_0000,
        system_id=42,
        seg_size=16 * MIB,
        block_size=16384,
    )


def test_parse_long_header_ignores_what_follows_the_header() -> None:
    assert parse_long_header(header() + b"\xff" * 100).system_id == SYSTEM_ID


def test_parse_long_header_accepts_other_info_bits_beside_the_long_flag() -> None:
    # XLP_FIRST_IS_CONTRECORD (0x0001) and XLP_BKP_REMOVABLE (0x0004) may be set on the first page too
    assert parse_long_header(header(info=0x0007)).timeline == 1


@pytest.mark.parametrize(("magic", "version"), sorted(PAGE_MAGIC.items()))
def test_page_magic_gives_the_major_version(magic: int, version: int) -> None:
    assert parse_long_header(header(magic=magic)).pg_version == version


def test_page_magic_table_covers_9_4_to_18_once_each() -> None:
    assert sorted(PAGE_MAGIC.values()) == [10, 11, 12, 13, 14, 15, 16, 17, 18, 94, 95, 96]
    assert sorted(PAGE_MAGIC) == list(PAGE_MAGIC)  # magics grow with versions


@pytest.mark.parametrize(
    ("page", "message"),
    [
        (b"", "file is 0 bytes, shorter than a WAL page header"),
        (header()[:39], "file is 39 bytes, shorter than a WAL page header"),
        (header(magic=0xD0FF), "unknown WAL page magic 0xD0FF (not a WAL file of PostgreSQL 9.4 to 18)"),
        (header(magic=0x0000), "unknown WAL page magic 0x0000 (not a WAL file of PostgreSQL 9.4 to 18)"),
        (header(info=0x0000), "first page has no long header (not the start of a segment)"),
        (header(info=0x0005), "first page has no long header (not the start of a segment)"),
        (header(seg_size=3 * MIB), f"invalid segment size {3 * MIB} in page header"),
        (header(seg_size=MIB // 2), f"invalid segment size {MIB // 2} in page header"),
        (header(seg_size=2 << 30), f"invalid segment size {2 << 30} in page header"),
        (header(seg_size=0), "invalid segment size 0 in page header"),
        (header(block_size=512), "invalid block size 512 in page header"),
        (header(block_size=65536), "invalid block size 65536 in page header"),
        (header(block_size=8000), "invalid block size 8000 in page header"),
        (header(block_size=0), "invalid block size 0 in page header"),
        (header(timeline=0), "page header holds an invalid timeline or page address"),
        (header(pageaddr=16 * MIB + 8192), "page header holds an invalid timeline or page address"),
        (header(pageaddr=MIB, seg_size=16 * MIB), "page header holds an invalid timeline or page address"),
    ],
)
def test_parse_long_header_rejects(page: bytes, message: str) -> None:
    with pytest.raises(HeaderError) as caught:
        parse_long_header(page)
    assert str(caught.value) == message


@pytest.mark.parametrize("block_size", [1024, 2048, 4096, 8192, 16384, 32768])
def test_every_block_size_postgres_allows_is_accepted(block_size: int) -> None:
    assert parse_long_header(header(block_size=block_size)).block_size == block_size


def test_header_error_is_a_value_error() -> None:
    assert issubclass(HeaderError, ValueError)


def test_read_wal_header_reads_the_start_of_the_file(tmp_path: Path) -> None:
    path = tmp_path / "000000020000000300000004"
    path.write_bytes(segment_bytes(path.name, seg_size=MIB, system_id=99))
    parsed = read_wal_header(path)
    assert (parsed.timeline, parsed.page_lsn, parsed.system_id, parsed.seg_size) == (
        2,
        0x3_0000_0000 + 4 * MIB,
        99,
        MIB,
    )


def test_read_wal_header_of_a_short_file_raises_header_error(tmp_path: Path) -> None:
    path = tmp_path / "000000010000000000000001"
    path.write_bytes(b"short")
    with pytest.raises(HeaderError, match=r"^file is 5 bytes, shorter than a WAL page header$"):
        read_wal_header(path)


def control(system_id: int) -> bytes:
    # the head of ControlFileData: system_identifier (u64), pg_control_version (u32), catalog_version_no (u32)
    return struct.pack("<QII", system_id, 1300, 202209061) + b"\0" * 200


@pytest.mark.parametrize("system_id", [0, 1, SYSTEM_ID, (1 << 64) - 1])
def test_parse_control_system_id(system_id: int) -> None:
    assert parse_control_system_id(control(system_id)) == system_id


def test_parse_control_system_id_rejects_a_short_file() -> None:
    with pytest.raises(HeaderError, match=r"^pg_control is too short$"):
        parse_control_system_id(b"\0" * 15)


def test_read_control_system_id_from_a_data_dir(tmp_path: Path) -> None:
    (tmp_path / "global").mkdir()
    (tmp_path / "global" / "pg_control").write_bytes(control(SYSTEM_ID))
    assert read_control_system_id(tmp_path) == SYSTEM_ID


@pytest.mark.parametrize("layout", ["missing dir", "no global", "no pg_control", "short pg_control", "a directory"])
def test_read_control_system_id_is_none_without_a_readable_pg_control(tmp_path: Path, layout: str) -> None:
    data_dir = tmp_path / "data"
    if layout != "missing dir":
        data_dir.mkdir()
    if layout in ("no pg_control", "short pg_control", "a directory"):
        (data_dir / "global").mkdir()
    if layout == "short pg_control":
        (data_dir / "global" / "pg_control").write_bytes(b"\x01" * 8)
    if layout == "a directory":
        (data_dir / "global" / "pg_control").mkdir()
    assert read_control_system_id(data_dir) is None
