"""The archive identity document and how a WAL header is checked against it."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from walbucket.core.identity import ArchiveIdentity, decode_identity, encode_identity, identity_conflict
from walbucket.core.walheader import WalHeader

MIB = 1 << 20
ARCHIVE = ArchiveIdentity(system_id=7_300_000_000_000_000_001, pg_version=15, seg_size=16 * MIB)


def wal_header(system_id: int = ARCHIVE.system_id, pg_version: int = 15, seg_size: int = 16 * MIB) -> WalHeader:
    return WalHeader(pg_version, 0xD110, 1, 0, system_id, seg_size, 8192)


def test_from_header_keeps_system_id_version_and_segment_size() -> None:
    assert ArchiveIdentity.from_header(wal_header()) == ARCHIVE


def test_encode_identity_is_stable_json_with_the_system_id_as_a_string() -> None:
    raw = encode_identity(ARCHIVE)
    assert raw == (
        b'{\n  "format": 1,\n  "pg_version": 15,\n  "seg_size": 16777216,\n  "system_id": "7300000000000000001"\n}\n'
    )
    # a u64 as a JSON number loses precision in many readers (jq, JavaScript): hence a string
    assert json.loads(raw)["system_id"] == "7300000000000000001"


@given(
    system_id=st.integers(0, (1 << 64) - 1),
    pg_version=st.sampled_from([94, 95, 96, 10, 11, 12, 13, 14, 15, 16, 17, 18]),
    seg_size=st.sampled_from([1 << n for n in range(20, 31)]),
)
def test_encode_decode_round_trip(system_id: int, pg_version: int, seg_size: int) -> None:
    identity = ArchiveIdentity(system_id, pg_version, seg_size)
    assert decode_identity(encode_identity(identity)) == identity


def test_decode_identity_accepts_a_numeric_system_id() -> None:
    assert decode_identity(b'{"system_id": 5, "pg_version": 16, "seg_size": 1048576}') == ArchiveIdentity(5, 16, MIB)


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"", "Expecting value: line 1 column 1 (char 0)"),
        (b"not json", "Expecting value: line 1 column 1 (char 0)"),
        (b"[]", "list indices must be integers or slices, not str"),
        (b'{"pg_version": 15, "seg_size": 16777216}', "'system_id'"),
        (b'{"system_id": "x", "pg_version": 15, "seg_size": 16777216}', "invalid literal for int() with base 10: 'x'"),
        (b'{"system_id": "1", "pg_version": null, "seg_size": 16777216}', "int() argument must be a string"),
        (b'{"system_id": "\x80"}', "'utf-8' codec can't decode byte 0x80 in position 15"),
    ],
)
def test_decode_identity_rejects_what_is_not_an_identity(raw: bytes, reason: str) -> None:
    with pytest.raises(ValueError) as caught:
        decode_identity(raw)
    assert str(caught.value).startswith(f"not a walbucket identity document: {reason}")


@pytest.mark.parametrize(
    ("header", "conflict"),
    [
        (wal_header(), None),
        (
            wal_header(system_id=42),
            "system id 42 differs from the archive's system id 7300000000000000001",
        ),
        (wal_header(pg_version=16), "PostgreSQL 16 differs from the archive's 15"),
        (wal_header(pg_version=96), "PostgreSQL 9.6 differs from the archive's 15"),
        (wal_header(seg_size=64 * MIB), "segment size 67108864 differs from the archive's 16777216"),
        # the system id is named first: it is the conflict that tells two clusters apart
        (
            wal_header(system_id=42, pg_version=16, seg_size=MIB),
            "system id 42 differs from the archive's system id 7300000000000000001",
        ),
    ],
)
def test_identity_conflict(header: WalHeader, conflict: str | None) -> None:
    assert identity_conflict(ARCHIVE, header) == conflict
