"""Object keys, metadata and tags: the documented layout (docs/key-layout.md), exactly."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from walbucket.core.keylayout import (
    KIND_DIRS,
    KeyLayout,
    normalize_prefix,
    object_metadata,
    object_tags,
)
from walbucket.core.walname import Segment, WalKind, WalName, parse_wal_name


def wal(name: str) -> WalName:
    parsed = parse_wal_name(name)
    assert parsed is not None
    return parsed


KEYS = [
    ("000000010000000200000003", "wal/0000000100000002/000000010000000200000003"),
    ("000000010000000200000003.partial", "partial/0000000100000002/000000010000000200000003.partial"),
    ("0000000A.history", "history/0000000A.history"),
    ("000000010000000200000003.00000028.backup", "backup/0000000100000002/000000010000000200000003.00000028.backup"),
]


@pytest.mark.parametrize(("name", "key"), KEYS)
def test_key_without_prefix(name: str, key: str) -> None:
    assert KeyLayout().key(wal(name)) == key


@pytest.mark.parametrize(("name", "key"), KEYS)
@pytest.mark.parametrize("prefix", ["pg/main", "/pg/main/", "pg/main/", "//pg/main"])
def test_key_with_prefix(name: str, key: str, prefix: str) -> None:
    assert KeyLayout(prefix).key(wal(name)) == f"pg/main/{key}"


@pytest.mark.parametrize(
    ("prefix", "identity", "probe", "segments"),
    [
        ("", "identity.json", "probe/conditional-write", "wal/"),
        ("a", "a/identity.json", "a/probe/conditional-write", "a/wal/"),
        ("a/b/", "a/b/identity.json", "a/b/probe/conditional-write", "a/b/wal/"),
    ],
)
def test_fixed_keys(prefix: str, identity: str, probe: str, segments: str) -> None:
    layout = KeyLayout(prefix)
    assert layout.identity_key == identity
    assert layout.probe_key() == probe
    assert layout.kind_prefix(WalKind.SEGMENT) == segments


@pytest.mark.parametrize(("kind", "directory"), KIND_DIRS.items())
def test_every_key_of_a_kind_lives_under_its_kind_prefix(kind: WalKind, directory: str) -> None:
    name = {
        WalKind.SEGMENT: "000000010000000000000001",
        WalKind.PARTIAL: "000000010000000000000001.partial",
        WalKind.HISTORY: "00000001.history",
        WalKind.BACKUP: "000000010000000000000001.00000028.backup",
    }[kind]
    layout = KeyLayout("p")
    assert layout.kind_prefix(kind) == f"p/{directory}/"
    assert layout.key(wal(name)).startswith(layout.kind_prefix(kind))


def test_probe_key_is_not_a_wal_key() -> None:
    layout = KeyLayout("p")
    assert layout.name_of(layout.probe_key()) is None
    assert layout.name_of(layout.identity_key) is None


@pytest.mark.parametrize(
    ("prefix", "normalized"),
    [("", ""), ("/", ""), ("//", ""), ("a", "a"), ("/a/", "a"), ("a/b", "a/b"), ("///a/b///", "a/b"), ("a.b", "a.b")],
)
def test_normalize_prefix_strips_surrounding_slashes(prefix: str, normalized: str) -> None:
    assert normalize_prefix(prefix) == normalized
    assert KeyLayout(prefix).prefix == normalized


@pytest.mark.parametrize("prefix", ["a//b", ".", "..", "a/./b", "a/../b", "/../", "a/.."])
def test_normalize_prefix_rejects_empty_and_dot_parts(prefix: str) -> None:
    with pytest.raises(ValueError) as caught:
        normalize_prefix(prefix)
    assert str(caught.value) == f"invalid prefix '{prefix}'"
    with pytest.raises(ValueError, match=r"^invalid prefix "):
        KeyLayout(prefix)


@pytest.mark.parametrize(("name", "key"), KEYS)
def test_name_of_inverts_key(name: str, key: str) -> None:
    assert KeyLayout().name_of(key) == wal(name)
    assert KeyLayout("x/y").name_of(f"x/y/{key}") == wal(name)


@pytest.mark.parametrize(
    "key",
    [
        "partial/0000000100000002/000000010000000200000003",  # a segment under the partial dir
        "wal/0000000100000002/000000010000000200000003.partial",
        "backup/0000000A.history",
        "wal/0000000100000003/000000010000000200000003",  # wrong log-id dir
        "wal/000000010000000200000003",  # no log-id dir
        "other/wal/0000000100000002/000000010000000200000003",  # another prefix
        "wal/0000000100000002/000000010000000200000003.tmp",
        "history/0000000A.history/extra",
        "identity.json",
        "",
    ],
)
def test_name_of_rejects_other_keys(key: str) -> None:
    assert KeyLayout().name_of(key) is None


def test_name_of_rejects_a_key_of_another_prefix() -> None:
    assert KeyLayout("a").name_of("b/wal/0000000100000002/000000010000000200000003") is None
    assert KeyLayout().name_of("a/wal/0000000100000002/000000010000000200000003") is None


names = st.one_of(
    st.builds(
        lambda s: s.name,
        st.builds(Segment, st.integers(1, 0xFFFFFFFF), st.integers(0, 0xFFFFFFFF), st.integers(0, 0xFFFFFFFF)),
    ),
    st.builds(lambda t: f"{t:08X}.history", st.integers(1, 0xFFFFFFFF)),
    st.builds(
        lambda t, o: f"00000001{t:016X}.{o:08X}.backup", st.integers(0, (1 << 64) - 1), st.integers(0, 2**32 - 1)
    ),
)


@given(
    name=names,
    partial=st.booleans(),
    prefix=st.sampled_from(["", "a", "pg/cluster-1", "/x/y/"]),
)
def test_key_and_name_of_round_trip(name: str, partial: bool, prefix: str) -> None:
    if partial and len(name) == 24:
        name += ".partial"
    layout = KeyLayout(prefix)
    parsed = wal(name)
    key = layout.key(parsed)
    assert layout.name_of(key) == parsed
    assert key.startswith(layout.kind_prefix(parsed.kind))


def test_object_metadata_with_a_system_id() -> None:
    assert object_metadata("ab" * 32, 16 << 20, "zstd", 7) == {
        "walbucket-format": "1",
        "walbucket-sha256": "ab" * 32,
        "walbucket-size": str(16 << 20),
        "walbucket-codec": "zstd",
        "walbucket-system-id": "7",
    }


def test_object_metadata_without_a_system_id() -> None:
    assert object_metadata("00", 3, "none", None) == {
        "walbucket-format": "1",
        "walbucket-sha256": "00",
        "walbucket-size": "3",
        "walbucket-codec": "none",
    }


@pytest.mark.parametrize(
    ("name", "system_id", "pg_version", "tags"),
    [
        (
            "000000030000000000000001",
            7,
            15,
            {
                "walbucket-kind": "segment",
                "walbucket-timeline": "3",
                "walbucket-system-id": "7",
                "walbucket-pg-version": "15",
            },
        ),
        (
            "0000000A.history",
            7,
            None,
            {"walbucket-kind": "history", "walbucket-timeline": "10", "walbucket-system-id": "7"},
        ),
        (
            "000000010000000000000001.partial",
            None,
            None,
            {"walbucket-kind": "partial", "walbucket-timeline": "1"},
        ),
        (
            "000000010000000000000001.00000028.backup",
            None,
            16,
            {"walbucket-kind": "backup", "walbucket-timeline": "1", "walbucket-pg-version": "16"},
        ),
    ],
)
def test_object_tags(name: str, system_id: int | None, pg_version: int | None, tags: dict[str, str]) -> None:
    assert object_tags(wal(name), system_id, pg_version) == tags


def test_metadata_and_tags_fit_s3_limits() -> None:
    # S3: at most 10 tags, and user metadata (keys + values) of at most 2 KiB
    meta = object_metadata("f" * 64, 1 << 30, "zstd", (1 << 64) - 1)
    tags = object_tags(wal("FFFFFFFFFFFFFFFFFFFFFFFF"), (1 << 64) - 1, 18)
    assert sum(len(k) + len(v) for k, v in meta.items()) < 2048
    assert len(tags) <= 10
