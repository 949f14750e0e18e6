"""WAL file names: every kind PostgreSQL archives parses, anything else is refused; Segment arithmetic."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from walbucket.core.walname import (
    MAX_SEG_SIZE,
    MIN_SEG_SIZE,
    Segment,
    WalKind,
    WalName,
    parse_wal_name,
    segments_per_log,
    valid_segment_size,
)

MIB = 1 << 20
GIB = 1 << 30
SEG_SIZES = [1 << n for n in range(20, 31)]

timelines = st.integers(min_value=1, max_value=0xFFFFFFFF)
seg_sizes = st.sampled_from(SEG_SIZES)


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("000000010000000000000001", WalName("000000010000000000000001", WalKind.SEGMENT, 1, Segment(1, 0, 1))),
        (
            "0000000A00000002000000FF",
            WalName("0000000A00000002000000FF", WalKind.SEGMENT, 10, Segment(10, 2, 0xFF)),
        ),
        (
            "000000020000000000000003.partial",
            WalName("000000020000000000000003.partial", WalKind.PARTIAL, 2, Segment(2, 0, 3)),
        ),
        ("00000002.history", WalName("00000002.history", WalKind.HISTORY, 2, None)),
        ("FFFFFFFF.history", WalName("FFFFFFFF.history", WalKind.HISTORY, 0xFFFFFFFF, None)),
        (
            "000000010000000000000002.00000028.backup",
            WalName("000000010000000000000002.00000028.backup", WalKind.BACKUP, 1, Segment(1, 0, 2)),
        ),
    ],
)
def test_parse_wal_name_accepts_every_kind(name: str, expected: WalName) -> None:
    assert parse_wal_name(name) == expected


@pytest.mark.parametrize(
    ("name", "is_wal_data"),
    [
        ("000000010000000000000001", True),
        ("000000010000000000000001.partial", True),
        ("00000001.history", False),
        ("000000010000000000000001.00000028.backup", False),
    ],
)
def test_only_segments_and_partials_carry_wal_data(name: str, is_wal_data: bool) -> None:
    wal = parse_wal_name(name)
    assert wal is not None
    assert wal.is_wal_data is is_wal_data


@pytest.mark.parametrize(
    "name",
    [
        "",
        "00000001000000000000000a",  # lower-case hex
        "0000000100000000000000Ab",
        "00000001.HISTORY",
        "0000000a.history",
        "00000001000000000000001",  # 23 digits
        "0000000100000000000000011",  # 25 digits
        "0000001.history",
        "000000001.history",
        "000000000000000000000001",  # timeline 0
        "00000000.history",
        "000000000000000000000001.partial",
        "000000000000000000000001.00000028.backup",
        "000000010000000000000001.part",
        "000000010000000000000001.partial.tmp",
        "000000010000000000000001.gz",
        "000000010000000000000001 ",
        " 000000010000000000000001",
        "000000010000000000000001\n",
        "000000010000000000000001.0000028.backup",
        "000000010000000000000001.00000028",
        "000000010000000000000001.backup",
        "RECOVERYXLOG",
        "RECOVERYHISTORY",
        "00000001.history.partial",
        "pg_wal/000000010000000000000001",
        "0x0000010000000000000001",
    ],
)
def test_parse_wal_name_rejects_what_postgres_does_not_archive(name: str) -> None:
    assert parse_wal_name(name) is None


@given(timeline=timelines, log=st.integers(0, 0xFFFFFFFF), seg=st.integers(0, 0xFFFFFFFF))
def test_segment_name_parses_back_to_the_same_segment(timeline: int, log: int, seg: int) -> None:
    segment = Segment(timeline, log, seg)
    assert parse_wal_name(segment.name) == WalName(segment.name, WalKind.SEGMENT, timeline, segment)
    partial = parse_wal_name(segment.name + ".partial")
    assert partial is not None
    assert (partial.kind, partial.segment) == (WalKind.PARTIAL, segment)


@given(timeline=timelines)
def test_history_name_round_trips(timeline: int) -> None:
    name = f"{timeline:08X}.history"
    assert parse_wal_name(name) == WalName(name, WalKind.HISTORY, timeline, None)


@given(seg_size=seg_sizes, timeline=timelines, number=st.integers(0, (1 << 40) - 1))
def test_from_number_and_number_round_trip(seg_size: int, timeline: int, number: int) -> None:
    segment = Segment.from_number(timeline, number, seg_size)
    assert segment.number(seg_size) == number
    assert segment.seg < segments_per_log(seg_size)
    assert segment.start_lsn(seg_size) == number * seg_size


@given(seg_size=seg_sizes, timeline=timelines, number=st.integers(0, (1 << 40) - 2))
def test_next_is_the_following_number(seg_size: int, timeline: int, number: int) -> None:
    segment = Segment.from_number(timeline, number, seg_size)
    following = segment.next(seg_size)
    assert following.number(seg_size) == number + 1
    assert following.timeline == timeline
    assert following > segment


@pytest.mark.parametrize(
    ("seg_size", "last", "after"),
    [
        (16 * MIB, "0000000100000000000000FF", "000000010000000100000000"),
        (16 * MIB, "00000001000000000000000F", "000000010000000000000010"),
        (GIB, "000000010000000000000003", "000000010000000100000000"),
        (GIB, "000000010000000500000002", "000000010000000500000003"),
        (MIB, "000000020000000000000FFF", "000000020000000100000000"),
    ],
)
def test_next_crosses_a_log_id_boundary(seg_size: int, last: str, after: str) -> None:
    wal = parse_wal_name(last)
    assert wal is not None and wal.segment is not None
    assert wal.segment.next(seg_size).name == after


@pytest.mark.parametrize(
    ("seg_size", "per_log"),
    [(MIB, 4096), (16 * MIB, 256), (64 * MIB, 64), (GIB, 4)],
)
def test_segments_per_log(seg_size: int, per_log: int) -> None:
    assert segments_per_log(seg_size) == per_log


@pytest.mark.parametrize(
    ("name", "seg_size", "lsn"),
    [
        ("000000010000000000000001", 16 * MIB, 0x0100_0000),
        ("000000010000000100000000", 16 * MIB, 0x1_0000_0000),
        ("0000000100000002000000A0", 16 * MIB, 0x2_A000_0000),
        ("000000010000000000000003", GIB, 0xC000_0000),
        ("000000010000000100000002", GIB, 0x1_8000_0000),
    ],
)
def test_start_lsn(name: str, seg_size: int, lsn: int) -> None:
    wal = parse_wal_name(name)
    assert wal is not None and wal.segment is not None
    assert wal.segment.start_lsn(seg_size) == lsn


def test_on_timeline_keeps_the_position() -> None:
    assert Segment(1, 3, 7).on_timeline(5) == Segment(5, 3, 7)


def test_segments_order_by_timeline_then_position() -> None:
    assert sorted([Segment(2, 0, 1), Segment(1, 1, 0), Segment(1, 0, 5)]) == [
        Segment(1, 0, 5),
        Segment(1, 1, 0),
        Segment(2, 0, 1),
    ]


@pytest.mark.parametrize(
    ("size", "valid"),
    [
        (MIN_SEG_SIZE, True),
        (16 * MIB, True),
        (MAX_SEG_SIZE, True),
        (MIN_SEG_SIZE // 2, False),
        (MAX_SEG_SIZE * 2, False),
        (16 * MIB + 8192, False),
        (3 * MIB, False),
        (0, False),
    ],
)
def test_valid_segment_size(size: int, valid: bool) -> None:
    assert valid_segment_size(size) is valid


@pytest.mark.parametrize(
    ("name", "seg_size", "fits"),
    [
        ("0000000100000000000000FF", 16 * MIB, True),
        ("000000010000000000000100", 16 * MIB, False),  # would alias 000000010000000100000000
        ("000000010000000000000FFF", MIB, True),
        ("000000010000000000001000", MIB, False),
        ("000000010000000000000003", GIB, True),
        ("000000010000000000000004", GIB, False),
        ("0000000100000000FFFFFFFF", MIB, False),
    ],
)
def test_a_segment_number_fits_only_below_the_segments_per_log_id(name: str, seg_size: int, fits: bool) -> None:
    wal = parse_wal_name(name)
    assert wal is not None and wal.segment is not None
    assert wal.segment.fits(seg_size) is fits


@given(seg_size=seg_sizes, timeline=timelines, number=st.integers(0, (1 << 40) - 1))
def test_every_segment_built_from_a_number_fits(seg_size: int, timeline: int, number: int) -> None:
    assert Segment.from_number(timeline, number, seg_size).fits(seg_size)
