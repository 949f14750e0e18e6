"""The push service against the in-memory store: what is stored, what is refused, and which requests it takes."""

from __future__ import annotations

import hashlib
import io
import logging
import struct
from collections.abc import Mapping
from pathlib import Path

import pytest

from walbucket.archive.identity import IdentityMemo, load_identity
from walbucket.archive.push import AlreadyArchived, PushOptions, Uploaded, push
from walbucket.core.codecs import CODECS
from walbucket.core.errors import (
    ArchiveConflict,
    ConditionalWritesUnsupported,
    IdentityMismatch,
    IntegrityError,
    StoreError,
    UsageError,
    WalFileError,
)
from walbucket.core.identity import ArchiveIdentity, decode_identity, encode_identity
from walbucket.core.keylayout import KeyLayout
from walbucket.core.settings import Settings
from walbucket.store.memory import MemoryStore
from walbucket.store.protocol import ObjectInfo, StoredObject
from walfactory import SYSTEM_ID, history_file, segment_bytes

SEG = 1 << 20  # the smallest segment size keeps these tests fast
OTHER_ID = 7_200_000_000_000_000_002
LAYOUT = KeyLayout("pg")
IDENTITY_KEY = "pg/identity.json"
IDENTITY_HINT = (
    "each cluster needs its own bucket or prefix; check WALBUCKET_PREFIX, or archive a new cluster "
    "(after initdb or pg_upgrade) under a new prefix"
)
FIRST = "000000010000000000000001"
SECOND = "000000010000000000000002"


def segment(wal_dir: Path, name: str, **kwargs: object) -> Path:
    """Write segment ``name`` (1 MiB unless told otherwise) into ``wal_dir`` and return its path."""
    kwargs.setdefault("seg_size", SEG)
    path = wal_dir / name
    path.write_bytes(segment_bytes(name, **kwargs))  # type: ignore[arg-type]
    return path


def text_file(wal_dir: Path, name: str, data: bytes) -> Path:
    path = wal_dir / name
    path.write_bytes(data)
    return path


def data_dir_with_control(root: Path, system_id: int) -> Path:
    """A data directory whose global/pg_control starts with ``system_id`` (a little-endian u64 at offset 0)."""
    data_dir = root / "data"
    (data_dir / "global").mkdir(parents=True)
    (data_dir / "global" / "pg_control").write_bytes(struct.pack("<Q", system_id) + b"\0" * 8184)
    return data_dir


def stored_identity(store: MemoryStore) -> ArchiveIdentity:
    return decode_identity(store.objects[IDENTITY_KEY].body)


@pytest.fixture
def wal_dir(tmp_path: Path) -> Path:
    path = tmp_path / "pg_wal"
    path.mkdir()
    return path


@pytest.fixture
def store() -> MemoryStore:
    return MemoryStore()


def archived(store: MemoryStore, wal_dir: Path, name: str = FIRST, **kwargs: object) -> Path:
    """Push a segment so that the archive (and its identity) exist; forget the requests it took."""
    path = segment(wal_dir, name, **kwargs)
    push(path, store, LAYOUT, PushOptions())
    store.requests.clear()
    return path


def test_first_push_uploads_the_segment(store: MemoryStore, wal_dir: Path) -> None:
    path = segment(wal_dir, FIRST)
    outcome = push(path, store, LAYOUT, PushOptions())
    key = "pg/wal/0000000100000000/000000010000000000000001"
    assert isinstance(outcome, Uploaded)
    assert outcome == Uploaded(FIRST, key, SEG, len(store.objects[key].body), "zstd", True)
    assert outcome.stored_size < SEG // 10


def test_uploaded_object_has_its_checksum_metadata_and_tags(store: MemoryStore, wal_dir: Path) -> None:
    data = segment(wal_dir, FIRST).read_bytes()
    push(wal_dir / FIRST, store, LAYOUT, PushOptions())
    entry = store.objects["pg/wal/0000000100000000/000000010000000000000001"]
    assert entry.metadata == {
        "walbucket-format": "1",
        "walbucket-sha256": hashlib.sha256(data).hexdigest(),
        "walbucket-size": str(SEG),
        "walbucket-codec": "zstd",
        "walbucket-system-id": str(SYSTEM_ID),
        "walbucket-name": FIRST,
    }
    assert entry.tags == {
        "walbucket-kind": "segment",
        "walbucket-timeline": "1",
        "walbucket-system-id": str(SYSTEM_ID),
        "walbucket-pg-version": "15",
    }


@pytest.mark.parametrize(("codec", "level"), [("none", 0), ("zstd", 1), ("zstd", 19), ("lz4", 0), ("lz4", 9)])
def test_stored_body_decompresses_to_the_file(store: MemoryStore, wal_dir: Path, codec: str, level: int) -> None:
    data = segment(wal_dir, FIRST).read_bytes()
    outcome = push(wal_dir / FIRST, store, LAYOUT, PushOptions(codec, level))
    assert isinstance(outcome, Uploaded)
    body = store.objects[outcome.key].body
    assert CODECS[codec].reader(io.BytesIO(body)).read() == data  # type: ignore[attr-defined]
    assert (outcome.codec, outcome.stored_size, store.objects[outcome.key].metadata["walbucket-codec"]) == (
        codec,
        len(body),
        codec,
    )


def test_first_push_creates_the_identity_with_a_conditional_write(store: MemoryStore, wal_dir: Path) -> None:
    push(segment(wal_dir, FIRST), store, LAYOUT, PushOptions())
    assert stored_identity(store) == ArchiveIdentity(SYSTEM_ID, 15, SEG)
    assert store.objects[IDENTITY_KEY].body == encode_identity(ArchiveIdentity(SYSTEM_ID, 15, SEG))
    assert store.objects[IDENTITY_KEY].tags == {"walbucket-kind": "identity"}
    assert store.requests == [
        ("read", IDENTITY_KEY),
        ("create", IDENTITY_KEY),
        ("create", "pg/wal/0000000100000000/000000010000000000000001"),
    ]


def test_push_after_the_identity_exists_takes_one_read_and_one_create(store: MemoryStore, wal_dir: Path) -> None:
    archived(store, wal_dir)
    push(segment(wal_dir, SECOND), store, LAYOUT, PushOptions())
    assert store.requests == [("read", IDENTITY_KEY), ("create", "pg/wal/0000000100000000/000000010000000000000002")]


def test_a_memo_keeps_the_identity_between_pushes(store: MemoryStore, wal_dir: Path) -> None:
    memo = IdentityMemo()
    push(segment(wal_dir, FIRST), store, LAYOUT, PushOptions(), memo=memo)
    assert memo.value == ArchiveIdentity(SYSTEM_ID, 15, SEG)
    store.requests.clear()
    push(segment(wal_dir, SECOND), store, LAYOUT, PushOptions(), memo=memo)
    assert store.requests == [("create", "pg/wal/0000000100000000/000000010000000000000002")]


def test_a_memo_is_filled_from_an_existing_identity(store: MemoryStore, wal_dir: Path) -> None:
    archived(store, wal_dir)
    memo = IdentityMemo()
    push(segment(wal_dir, SECOND), store, LAYOUT, PushOptions(), memo=memo)
    assert memo.value == ArchiveIdentity(SYSTEM_ID, 15, SEG)


def test_partial_segment_is_pushed_under_partial(store: MemoryStore, wal_dir: Path) -> None:
    outcome = push(segment(wal_dir, FIRST + ".partial"), store, LAYOUT, PushOptions())
    key = "pg/partial/0000000100000000/000000010000000000000001.partial"
    assert isinstance(outcome, Uploaded)
    assert outcome.key == key
    assert store.objects[key].tags["walbucket-kind"] == "partial"
    assert stored_identity(store) == ArchiveIdentity(SYSTEM_ID, 15, SEG)


@pytest.mark.parametrize("conditional", [True, False])
def test_pushing_identical_bytes_again_is_already_archived(
    store: MemoryStore, wal_dir: Path, conditional: bool
) -> None:
    path = archived(store, wal_dir)
    key = "pg/wal/0000000100000000/000000010000000000000001"
    before = store.objects[key]
    outcome = push(path, store, LAYOUT, PushOptions(conditional=conditional))
    assert outcome == AlreadyArchived(FIRST, key, SEG)
    assert store.objects[key] is before  # nothing rewritten
    writes = [request for request in store.requests if request[0] in ("create", "put")]
    assert writes == ([("create", key)] if conditional else [])


def test_identical_bytes_compressed_differently_are_still_already_archived(store: MemoryStore, wal_dir: Path) -> None:
    path = archived(store, wal_dir)
    outcome = push(path, store, LAYOUT, PushOptions("lz4", 0))
    assert isinstance(outcome, AlreadyArchived)
    assert store.objects[outcome.key].metadata["walbucket-codec"] == "zstd"


@pytest.mark.parametrize("conditional", [True, False])
def test_different_bytes_under_an_archived_name_are_refused(
    store: MemoryStore, wal_dir: Path, conditional: bool
) -> None:
    archived(store, wal_dir)
    key = "pg/wal/0000000100000000/000000010000000000000001"
    before = store.objects[key]
    path = segment(wal_dir, FIRST, fill=b"other content")
    with pytest.raises(ArchiveConflict) as caught:
        push(path, store, LAYOUT, PushOptions(conditional=conditional))
    assert caught.value.message == (
        "WAL file '000000010000000000000001' already exists in the archive with different content"
    )
    assert caught.value.hint == (
        "an old primary may still be running after a failover (split brain), or two clusters share one prefix; "
        "the archived object was not changed and PostgreSQL keeps its file"
    )
    assert store.objects[key] is before


@pytest.mark.parametrize(
    ("kwargs", "conflict"),
    [
        ({"system_id": OTHER_ID}, f"system id {OTHER_ID} differs from the archive's system id {SYSTEM_ID}"),
        ({"magic": 0xD113}, "PostgreSQL 16 differs from the archive's 15"),
        ({"magic": 0xD093}, "PostgreSQL 9.6 differs from the archive's 15"),
        ({"seg_size": 2 * SEG}, f"segment size {2 * SEG} differs from the archive's {SEG}"),
    ],
)
@pytest.mark.parametrize("conditional", [True, False])
def test_segment_of_another_cluster_is_refused(
    store: MemoryStore, wal_dir: Path, kwargs: dict[str, object], conflict: str, conditional: bool
) -> None:
    archived(store, wal_dir)
    path = segment(wal_dir, SECOND, **kwargs)
    with pytest.raises(IdentityMismatch) as caught:
        push(path, store, LAYOUT, PushOptions(conditional=conditional))
    assert caught.value.message == f"WAL file '{SECOND}' does not belong to this archive: {conflict}"
    assert caught.value.hint == IDENTITY_HINT
    assert set(store.objects) == {IDENTITY_KEY, "pg/wal/0000000100000000/000000010000000000000001"}
    assert stored_identity(store) == ArchiveIdentity(SYSTEM_ID, 15, SEG)


def test_a_second_cluster_under_another_prefix_gets_its_own_identity(store: MemoryStore, wal_dir: Path) -> None:
    archived(store, wal_dir)
    path = segment(wal_dir, SECOND, system_id=OTHER_ID)
    outcome = push(path, store, KeyLayout("other"), PushOptions())
    assert isinstance(outcome, Uploaded)
    assert decode_identity(store.objects["other/identity.json"].body).system_id == OTHER_ID


@pytest.mark.parametrize(
    "name",
    ["RECOVERYXLOG", "00000001000000000000000a", "000000010000000000000001.tmp", "archive_status", "x.history"],
)
def test_a_name_that_is_not_a_wal_file_is_a_usage_error(store: MemoryStore, wal_dir: Path, name: str) -> None:
    path = text_file(wal_dir, name, b"")
    with pytest.raises(UsageError) as caught:
        push(path, store, LAYOUT, PushOptions())
    assert caught.value.message == f"'{name}' is not the name of a WAL file PostgreSQL archives"
    assert caught.value.hint == "archive_command must pass %p: a segment, .partial, .history or .backup file"
    assert store.requests == []


def test_a_missing_file_is_a_wal_file_error(store: MemoryStore, wal_dir: Path) -> None:
    with pytest.raises(WalFileError) as caught:
        push(wal_dir / FIRST, store, LAYOUT, PushOptions())
    assert caught.value.message == f"cannot read WAL file '{wal_dir / FIRST}': No such file or directory"
    assert store.requests == []


@pytest.mark.parametrize("size", [SEG - 1, SEG // 2, 8192, 40])
def test_a_segment_of_the_wrong_size_is_refused(store: MemoryStore, wal_dir: Path, size: int) -> None:
    path = segment(wal_dir, FIRST, size=size)
    with pytest.raises(WalFileError) as caught:
        push(path, store, LAYOUT, PushOptions())
    assert caught.value.message == f"WAL file '{FIRST}' is {size} bytes, but its segment size is {SEG}"
    assert caught.value.hint == (
        "the file is truncated or not a WAL segment; PostgreSQL only archives complete segments"
    )
    assert store.objects == {}


def test_a_segment_longer_than_its_segment_size_is_refused(store: MemoryStore, wal_dir: Path) -> None:
    path = segment(wal_dir, FIRST)
    path.write_bytes(path.read_bytes() + b"\0")
    with pytest.raises(WalFileError, match=rf"^WAL file '{FIRST}' is {SEG + 1} bytes, but its segment size is {SEG}$"):
        push(path, store, LAYOUT, PushOptions())


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", "file is 0 bytes, shorter than a WAL page header"),
        (b"\0" * SEG, "unknown WAL page magic 0x0000 (not a WAL file of PostgreSQL 9.4 to 18)"),
        (b"\x10\xd1\x00\x00" + b"\0" * (SEG - 4), "first page has no long header (not the start of a segment)"),
        (
            segment_bytes(FIRST, seg_size=SEG, magic=0xABCD),
            "unknown WAL page magic 0xABCD (not a WAL file of PostgreSQL 9.4 to 18)",
        ),
    ],
)
@pytest.mark.parametrize("name", [FIRST, FIRST + ".partial"])
def test_a_segment_without_a_valid_header_is_refused(
    store: MemoryStore, wal_dir: Path, data: bytes, reason: str, name: str
) -> None:
    path = text_file(wal_dir, name, data)
    with pytest.raises(WalFileError) as caught:
        push(path, store, LAYOUT, PushOptions())
    assert caught.value.message == f"WAL file '{name}' is not a valid segment: {reason}"
    assert store.objects == {}


@pytest.mark.parametrize(
    ("name", "content_of", "page_address"),
    [
        (SECOND, FIRST, "0/100000"),
        ("000000010000000100000000", "000000010000000000000000", "0/0"),
        ("000000010000000000000001", "000000010000000100000001", "1/100000"),
    ],
)
def test_a_segment_renamed_from_another_is_refused(
    store: MemoryStore, wal_dir: Path, name: str, content_of: str, page_address: str
) -> None:
    path = text_file(wal_dir, name, segment_bytes(content_of, seg_size=SEG))
    with pytest.raises(WalFileError) as caught:
        push(path, store, LAYOUT, PushOptions())
    assert caught.value.message == (
        f"WAL file '{name}' holds the data of another segment (page address {page_address}, timeline 1)"
    )
    assert caught.value.hint == "the file was renamed or copied under a wrong name"
    assert store.objects == {}


@pytest.mark.parametrize(
    ("name", "content_of", "seg_size", "limit"),
    [
        ("000000010000000000000100", "000000010000000100000000", 16 << 20, "00000100"),
        ("000000010000000000001000", "000000010000000100000000", SEG, "00001000"),
        ("000000010000000000001000.partial", "000000010000000100000000", SEG, "00001000"),
        ("0000000100000000FFFFFFFF", "0000000100000000FFFFFFFF", SEG, "00001000"),
    ],
)
def test_a_segment_number_beyond_the_last_of_a_log_id_is_refused(
    store: MemoryStore, wal_dir: Path, name: str, content_of: str, seg_size: int, limit: str
) -> None:
    # the first rows carry the real bytes of another segment, whose page address equals the bogus name's start LSN
    path = text_file(wal_dir, name, segment_bytes(content_of, seg_size=seg_size))
    with pytest.raises(WalFileError) as caught:
        push(path, store, LAYOUT, PushOptions())
    assert caught.value.message == (
        f"WAL file '{name}' is not a segment name at segment size {seg_size}: "
        f"its last 8 hex digits must be below {limit}"
    )
    assert caught.value.hint == "the file was renamed or copied under a wrong name"
    assert (store.objects, store.requests) == ({}, [])


def test_a_page_timeline_above_the_names_timeline_is_refused(store: MemoryStore, wal_dir: Path) -> None:
    path = segment(wal_dir, FIRST, page_timeline=2)
    with pytest.raises(WalFileError) as caught:
        push(path, store, LAYOUT, PushOptions())
    assert caught.value.message == (
        f"WAL file '{FIRST}' holds the data of another segment (page address 0/100000, timeline 2)"
    )


def test_the_first_segment_of_a_new_timeline_may_carry_the_parents_page_timeline(
    store: MemoryStore, wal_dir: Path
) -> None:
    archived(store, wal_dir)
    path = segment(wal_dir, "000000020000000000000001", page_timeline=1)
    outcome = push(path, store, LAYOUT, PushOptions())
    assert isinstance(outcome, Uploaded)
    assert store.objects[outcome.key].tags["walbucket-timeline"] == "2"


HISTORY = "00000002.history"
BACKUP = "000000010000000000000002.00000028.backup"
BACKUP_TEXT = b"START WAL LOCATION: 0/2000028 (file 000000010000000000000002)\nLABEL: base\n"


@pytest.mark.parametrize(
    ("name", "data", "key", "kind"),
    [
        (HISTORY, history_file(2), "pg/history/00000002.history", "history"),
        (BACKUP, BACKUP_TEXT, f"pg/backup/0000000100000000/{BACKUP}", "backup"),
    ],
)
def test_history_and_backup_files_are_tagged_with_the_archive_identity(
    store: MemoryStore, wal_dir: Path, name: str, data: bytes, key: str, kind: str
) -> None:
    archived(store, wal_dir)
    outcome = push(text_file(wal_dir, name, data), store, LAYOUT, PushOptions())
    assert outcome == Uploaded(name, key, len(data), len(store.objects[key].body), "zstd", True)
    assert store.objects[key].metadata["walbucket-system-id"] == str(SYSTEM_ID)
    assert store.objects[key].tags == {
        "walbucket-kind": kind,
        "walbucket-timeline": str(int(name[:8], 16)),
        "walbucket-system-id": str(SYSTEM_ID),
        "walbucket-pg-version": "15",
    }
    assert store.requests == [("read", IDENTITY_KEY), ("create", key)]


def test_history_without_an_identity_is_tagged_with_pg_controls_system_id(
    store: MemoryStore, wal_dir: Path, tmp_path: Path
) -> None:
    data_dir = data_dir_with_control(tmp_path, OTHER_ID)
    push(text_file(wal_dir, HISTORY, history_file(2)), store, LAYOUT, PushOptions(), data_dir=data_dir)
    entry = store.objects["pg/history/00000002.history"]
    assert entry.metadata["walbucket-system-id"] == str(OTHER_ID)
    assert entry.tags == {"walbucket-kind": "history", "walbucket-timeline": "2", "walbucket-system-id": str(OTHER_ID)}
    assert IDENTITY_KEY not in store.objects  # only a segment's header may found the identity


def test_history_without_identity_or_pg_control_has_no_system_id(
    store: MemoryStore, wal_dir: Path, tmp_path: Path
) -> None:
    push(text_file(wal_dir, HISTORY, history_file(2)), store, LAYOUT, PushOptions(), data_dir=tmp_path / "nowhere")
    entry = store.objects["pg/history/00000002.history"]
    assert "walbucket-system-id" not in entry.metadata
    assert entry.tags == {"walbucket-kind": "history", "walbucket-timeline": "2"}


def test_history_from_a_cluster_with_another_pg_control_is_refused(
    store: MemoryStore, wal_dir: Path, tmp_path: Path
) -> None:
    archived(store, wal_dir)
    data_dir = data_dir_with_control(tmp_path, OTHER_ID)
    with pytest.raises(IdentityMismatch) as caught:
        push(text_file(wal_dir, HISTORY, history_file(2)), store, LAYOUT, PushOptions(), data_dir=data_dir)
    assert caught.value.message == (
        f"'{HISTORY}' comes from a cluster with system id {OTHER_ID}, but the archive belongs to system id {SYSTEM_ID}"
    )
    assert caught.value.hint == IDENTITY_HINT
    assert "pg/history/00000002.history" not in store.objects


def test_history_from_the_archives_own_cluster_is_accepted(store: MemoryStore, wal_dir: Path, tmp_path: Path) -> None:
    archived(store, wal_dir)
    data_dir = data_dir_with_control(tmp_path, SYSTEM_ID)
    outcome = push(text_file(wal_dir, HISTORY, history_file(2)), store, LAYOUT, PushOptions(), data_dir=data_dir)
    assert isinstance(outcome, Uploaded)


def test_a_history_file_too_large_to_be_one_is_refused(store: MemoryStore, wal_dir: Path) -> None:
    path = text_file(wal_dir, HISTORY, b"1\t0/3000000\treason\n" * 60_000)
    with pytest.raises(WalFileError) as caught:
        push(path, store, LAYOUT, PushOptions())
    assert caught.value.message == f"'{HISTORY}' is larger than any history file PostgreSQL writes"
    assert store.requests == []


def test_history_pushed_twice_is_already_archived_and_changed_history_conflicts(
    store: MemoryStore, wal_dir: Path
) -> None:
    path = text_file(wal_dir, HISTORY, history_file(2))
    push(path, store, LAYOUT, PushOptions())
    assert push(path, store, LAYOUT, PushOptions()) == AlreadyArchived(
        HISTORY, "pg/history/00000002.history", len(history_file(2))
    )
    path.write_bytes(history_file(2, switch_lsn="0/4000000"))
    with pytest.raises(ArchiveConflict, match=rf"^WAL file '{HISTORY}' already exists in the archive"):
        push(path, store, LAYOUT, PushOptions())


def test_an_unreadable_identity_is_an_integrity_error(store: MemoryStore, wal_dir: Path) -> None:
    store.put(IDENTITY_KEY, b'{"pg_version": 15}', {}, {})
    with pytest.raises(IntegrityError) as caught:
        push(segment(wal_dir, FIRST), store, LAYOUT, PushOptions())
    assert caught.value.message == (
        f"archive identity '{IDENTITY_KEY}' is unreadable: not a walbucket identity document: 'system_id'"
    )


def test_load_identity_of_an_empty_archive_is_none() -> None:
    assert load_identity(MemoryStore(), LAYOUT) is None


# --- endpoints without conditional writes: HEAD-then-PUT ---------------------------------------------------------


def test_without_conditional_writes_push_heads_then_puts(
    store: MemoryStore, wal_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="walbucket")
    outcome = push(segment(wal_dir, FIRST), store, LAYOUT, PushOptions(conditional=False))
    key = "pg/wal/0000000100000000/000000010000000000000001"
    assert outcome == Uploaded(FIRST, key, SEG, len(store.objects[key].body), "zstd", False)
    assert store.requests == [("read", IDENTITY_KEY), ("put", IDENTITY_KEY), ("head", key), ("put", key)]
    assert stored_identity(store) == ArchiveIdentity(SYSTEM_ID, 15, SEG)
    assert "HEAD-then-PUT is not safe against a racing writer" in caplog.text


@pytest.mark.parametrize("honours_conditions", [True, False])
def test_head_then_put_never_overwrites_an_archived_segment(wal_dir: Path, honours_conditions: bool) -> None:
    store = MemoryStore(honours_conditions=honours_conditions)
    options = PushOptions(conditional=False)
    push(segment(wal_dir, FIRST), store, LAYOUT, options)
    key = "pg/wal/0000000100000000/000000010000000000000001"
    before = store.objects[key]
    assert push(wal_dir / FIRST, store, LAYOUT, options) == AlreadyArchived(FIRST, key, SEG)
    with pytest.raises(ArchiveConflict):
        push(segment(wal_dir, FIRST, fill=b"split brain"), store, LAYOUT, options)
    assert store.objects[key] is before
    assert [r for r in store.requests if r[0] == "put"] == [("put", IDENTITY_KEY), ("put", key)]


def test_head_then_put_refuses_another_cluster_on_a_store_that_ignores_conditions(wal_dir: Path) -> None:
    store = MemoryStore(honours_conditions=False)
    options = PushOptions(conditional=False)
    push(segment(wal_dir, FIRST), store, LAYOUT, options)
    with pytest.raises(IdentityMismatch, match=f"system id {OTHER_ID} differs"):
        push(segment(wal_dir, SECOND, system_id=OTHER_ID), store, LAYOUT, options)
    assert stored_identity(store).system_id == SYSTEM_ID


def test_a_store_that_ignores_conditions_overwrites_when_push_relies_on_them(wal_dir: Path) -> None:
    # why walbucket.archive.conditional probes before trusting If-None-Match: this is the failure it prevents
    store = MemoryStore(honours_conditions=False)
    push(segment(wal_dir, FIRST), store, LAYOUT, PushOptions())
    key = "pg/wal/0000000100000000/000000010000000000000001"
    push(segment(wal_dir, FIRST, fill=b"split brain"), store, LAYOUT, PushOptions())
    assert store.objects[key].metadata["walbucket-sha256"] == hashlib.sha256((wal_dir / FIRST).read_bytes()).hexdigest()


# --- races with another writer ------------------------------------------------------------------------------------


class _RacingIdentityStore(MemoryStore):
    """An identity appears between push's read and its create: another writer got there first."""

    def __init__(self, racer: ArchiveIdentity) -> None:
        super().__init__()
        self.racer = racer

    def create(self, key: str, body: bytes, metadata: Mapping[str, str], tags: Mapping[str, str]) -> bool:
        if key == IDENTITY_KEY and key not in self.objects:
            self.put(key, encode_identity(self.racer), {}, {"walbucket-kind": "identity"})
        return super().create(key, body, metadata, tags)


def test_losing_the_identity_race_to_the_same_cluster_is_fine(wal_dir: Path) -> None:
    store = _RacingIdentityStore(ArchiveIdentity(SYSTEM_ID, 15, SEG))
    outcome = push(segment(wal_dir, FIRST), store, LAYOUT, PushOptions())
    assert isinstance(outcome, Uploaded)


def test_losing_the_identity_race_to_another_cluster_is_refused(wal_dir: Path) -> None:
    store = _RacingIdentityStore(ArchiveIdentity(OTHER_ID, 15, SEG))
    with pytest.raises(IdentityMismatch) as caught:
        push(segment(wal_dir, FIRST), store, LAYOUT, PushOptions())
    assert caught.value.message == (
        f"WAL file '{FIRST}' does not belong to this archive: "
        f"system id {SYSTEM_ID} differs from the archive's system id {OTHER_ID}"
    )
    assert stored_identity(store).system_id == OTHER_ID
    assert list(store.objects) == [IDENTITY_KEY]


class _RefusingStore(MemoryStore):
    """Answers every create with 412 although nothing is there (someone deleted it in between)."""

    def create(self, key: str, body: bytes, metadata: Mapping[str, str], tags: Mapping[str, str]) -> bool:
        self.requests.append(("create", key))
        return False

    def read(self, key: str) -> StoredObject | None:
        if key == IDENTITY_KEY:
            self.requests.append(("read", key))
            return StoredObject(ObjectInfo(key, 0), encode_identity(ArchiveIdentity(SYSTEM_ID, 15, SEG)))
        return super().read(key)


def test_a_refused_create_of_an_absent_key_is_a_store_error(wal_dir: Path) -> None:
    with pytest.raises(StoreError) as caught:
        push(segment(wal_dir, FIRST), _RefusingStore(), LAYOUT, PushOptions())
    assert caught.value.message == f"WAL file '{FIRST}' was refused as existing but is not in the archive"


class _VanishingIdentityStore(MemoryStore):
    """The identity key is taken (412) yet reads as absent: someone deletes objects under walbucket's feet."""

    def create(self, key: str, body: bytes, metadata: Mapping[str, str], tags: Mapping[str, str]) -> bool:
        if key == IDENTITY_KEY:
            self.requests.append(("create", key))
            return False
        return super().create(key, body, metadata, tags)


def test_an_identity_that_exists_but_cannot_be_read_is_a_store_error(wal_dir: Path) -> None:
    store = _VanishingIdentityStore()
    with pytest.raises(StoreError) as caught:
        push(segment(wal_dir, FIRST), store, LAYOUT, PushOptions())
    assert caught.value.message == f"archive identity '{IDENTITY_KEY}' exists but cannot be read"
    assert store.objects == {}


@pytest.mark.parametrize("codec", ["none", "zstd", "lz4"])
def test_a_file_whose_size_changes_while_read_is_refused(store: MemoryStore, wal_dir: Path, codec: str) -> None:
    # /proc files report size 0 to fstat yet read as text: the same as a file that grows while push reads it
    path = wal_dir / HISTORY
    path.symlink_to("/proc/version")
    with pytest.raises(
        WalFileError, match=rf"^WAL file '{HISTORY}' changed size while it was read \(0 -> \d+ bytes\)$"
    ):
        push(path, store, LAYOUT, PushOptions(codec, 0))
    assert store.objects == {}


def test_push_options_default_to_the_settings_defaults() -> None:
    defaults = Settings(bucket="wal-b1")
    assert (PushOptions().codec, PushOptions().level) == (defaults.compression, defaults.level) == ("zstd", 1)


# --- an endpoint that rejects If-None-Match after all ---------------------------------------------------------------


class _RejectingStore(MemoryStore):
    """Answers every conditional create with 501 NotImplemented, as S3Store reports it; nothing is written."""

    def create(self, key: str, body: bytes, metadata: Mapping[str, str], tags: Mapping[str, str]) -> bool:
        self.requests.append(("create", key))
        raise ConditionalWritesUnsupported(f"the endpoint rejects conditional writes (If-None-Match) for '{key}'")


@pytest.fixture
def rejecting() -> _RejectingStore:
    """An archive whose identity exists, on an endpoint that was probed as honouring conditions and now rejects them."""
    store = _RejectingStore()
    store.put(IDENTITY_KEY, encode_identity(ArchiveIdentity(SYSTEM_ID, 15, SEG)), {}, {})
    store.requests.clear()
    return store


def test_a_rejected_conditional_write_with_a_fallback_is_remembered_and_pushed_with_head_then_put(
    rejecting: _RejectingStore, wal_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="walbucket")
    fallbacks: list[str] = []
    options = PushOptions(fallback=lambda: fallbacks.append("remembered"))
    outcome = push(segment(wal_dir, FIRST), rejecting, LAYOUT, options)
    key = "pg/wal/0000000100000000/000000010000000000000001"
    assert outcome == Uploaded(FIRST, key, SEG, len(rejecting.objects[key].body), "zstd", False)
    assert fallbacks == ["remembered"]
    assert rejecting.requests == [
        ("read", IDENTITY_KEY),
        ("create", key),
        ("read", IDENTITY_KEY),
        ("head", key),
        ("put", key),
    ]
    assert f"'{FIRST}': endpoint ignores conditional writes; HEAD-then-PUT is not safe" in caplog.text


def test_the_fallback_still_refuses_different_content(rejecting: _RejectingStore, wal_dir: Path) -> None:
    key = "pg/wal/0000000100000000/000000010000000000000001"
    rejecting.put(key, b"archived", {"walbucket-sha256": "0" * 64}, {})
    with pytest.raises(ArchiveConflict):
        push(segment(wal_dir, FIRST), rejecting, LAYOUT, PushOptions(fallback=lambda: None))
    assert rejecting.objects[key].body == b"archived"


def test_a_rejected_conditional_write_without_a_fallback_is_raised(rejecting: _RejectingStore, wal_dir: Path) -> None:
    with pytest.raises(ConditionalWritesUnsupported) as caught:
        push(segment(wal_dir, FIRST), rejecting, LAYOUT, PushOptions())
    key = "pg/wal/0000000100000000/000000010000000000000001"
    assert caught.value.message == f"the endpoint rejects conditional writes (If-None-Match) for '{key}'"
    assert list(rejecting.objects) == [IDENTITY_KEY]


def test_a_rejected_identity_create_falls_back_too(wal_dir: Path) -> None:
    store = _RejectingStore()
    outcome = push(segment(wal_dir, FIRST), store, LAYOUT, PushOptions(fallback=lambda: None))
    assert isinstance(outcome, Uploaded) and outcome.conditional is False
    assert stored_identity(store) == ArchiveIdentity(SYSTEM_ID, 15, SEG)
    assert [r for r in store.requests if r[0] in ("create", "put")] == [
        ("create", IDENTITY_KEY),
        ("put", IDENTITY_KEY),
        ("put", "pg/wal/0000000100000000/000000010000000000000001"),
    ]
