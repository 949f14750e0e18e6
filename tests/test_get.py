"""The get service against the in-memory store: restored bytes are verified and appear atomically, or not at all."""

from __future__ import annotations

import hashlib
import logging
import os
import struct
import threading
from dataclasses import replace
from pathlib import Path

import pytest

from walbucket.archive.get import Missing, Restored, get
from walbucket.archive.identity import IdentityMemo
from walbucket.archive.push import PushOptions, push
from walbucket.core.errors import DamagedDownload, IdentityMismatch, IntegrityError, UsageError, WalFileError
from walbucket.core.identity import ArchiveIdentity, encode_identity
from walbucket.core.keylayout import KeyLayout
from walbucket.core.walname import parse_wal_name
from walbucket.store.memory import MemoryStore
from walbucket.store.protocol import StoredObject
from walfactory import SYSTEM_ID, history_file, segment_bytes

SEG = 1 << 20
OTHER_ID = 7_200_000_000_000_000_002
LAYOUT = KeyLayout("pg")
IDENTITY_KEY = "pg/identity.json"
FIRST = "000000010000000000000001"
FIRST_KEY = "pg/wal/0000000100000000/000000010000000000000001"
PARTIAL_KEY = "pg/partial/0000000100000000/000000010000000000000001.partial"
HISTORY = "00000002.history"
HISTORY_KEY = "pg/history/00000002.history"
HINT = "restore_command reads another cluster's archive: check the bucket and prefix settings"


@pytest.fixture
def store() -> MemoryStore:
    return MemoryStore()


@pytest.fixture
def src(tmp_path: Path) -> Path:
    path = tmp_path / "primary"
    path.mkdir()
    return path


@pytest.fixture
def dest_dir(tmp_path: Path) -> Path:
    """The standby's pg_wal: empty, so that any file left behind shows."""
    path = tmp_path / "standby" / "pg_wal"
    path.mkdir(parents=True)
    return path


def archive(store: MemoryStore, src: Path, name: str, data: bytes, codec: str = "zstd") -> bytes:
    path = src / name
    path.write_bytes(data)
    push(path, store, LAYOUT, PushOptions(codec, 1))
    store.requests.clear()
    return data


def archive_segment(store: MemoryStore, src: Path, name: str = FIRST, codec: str = "zstd", **kwargs: object) -> bytes:
    kwargs.setdefault("seg_size", SEG)
    return archive(store, src, name, segment_bytes(name, **kwargs), codec)  # type: ignore[arg-type]


def data_dir_with_control(root: Path, system_id: int) -> Path:
    data_dir = root / "data"
    (data_dir / "global").mkdir(parents=True)
    (data_dir / "global" / "pg_control").write_bytes(struct.pack("<Q", system_id) + b"\0" * 8184)
    return data_dir


def assert_nothing_written(dest_dir: Path) -> None:
    assert sorted(p.name for p in dest_dir.iterdir()) == []


@pytest.mark.parametrize("codec", ["none", "zstd", "lz4"])
def test_restores_identical_bytes(store: MemoryStore, src: Path, dest_dir: Path, codec: str) -> None:
    data = archive_segment(store, src, codec=codec)
    dest = dest_dir / "RECOVERYXLOG"
    outcome = get(FIRST, dest, store, LAYOUT, data_dir=None)
    assert outcome == Restored(FIRST, FIRST_KEY, SEG, len(store.objects[FIRST_KEY].body), False)
    assert dest.read_bytes() == data
    assert sorted(p.name for p in dest_dir.iterdir()) == ["RECOVERYXLOG"]


def test_restore_reads_the_object_and_the_identity(store: MemoryStore, src: Path, dest_dir: Path) -> None:
    archive_segment(store, src)
    get(FIRST, dest_dir / FIRST, store, LAYOUT, data_dir=None)
    assert store.requests == [("read", FIRST_KEY), ("read", IDENTITY_KEY)]


def test_a_memo_saves_the_identity_read(store: MemoryStore, src: Path, dest_dir: Path) -> None:
    archive_segment(store, src)
    memo = IdentityMemo()
    get(FIRST, dest_dir / "a", store, LAYOUT, data_dir=None, memo=memo)
    store.requests.clear()
    get(FIRST, dest_dir / "b", store, LAYOUT, data_dir=None, memo=memo)
    assert store.requests == [("read", FIRST_KEY)]


def test_restore_replaces_a_file_left_at_dest(store: MemoryStore, src: Path, dest_dir: Path) -> None:
    data = archive_segment(store, src)
    dest = dest_dir / "RECOVERYXLOG"
    dest.write_bytes(b"left over from the previous segment")
    get(FIRST, dest, store, LAYOUT, data_dir=None)
    assert dest.read_bytes() == data


def test_restored_file_is_private_to_its_owner(store: MemoryStore, src: Path, dest_dir: Path) -> None:
    archive_segment(store, src)
    get(FIRST, dest_dir / FIRST, store, LAYOUT, data_dir=None)
    assert (dest_dir / FIRST).stat().st_mode & 0o777 == 0o600


def test_missing_after_exactly_one_request(store: MemoryStore, dest_dir: Path) -> None:
    assert get(FIRST, dest_dir / FIRST, store, LAYOUT, data_dir=None) == Missing(FIRST, FIRST_KEY)
    assert store.requests == [("read", FIRST_KEY)]
    assert_nothing_written(dest_dir)


@pytest.mark.parametrize(
    ("name", "key"),
    [
        (HISTORY, HISTORY_KEY),
        (FIRST + ".partial", PARTIAL_KEY),
        (
            "000000010000000000000002.00000028.backup",
            "pg/backup/0000000100000000/000000010000000000000002.00000028.backup",
        ),
    ],
)
def test_every_kind_can_be_missing(store: MemoryStore, dest_dir: Path, name: str, key: str) -> None:
    assert get(name, dest_dir / "x", store, LAYOUT, data_dir=None, restore_partial=True) == Missing(name, key)
    assert store.requests == [("read", key)]


@pytest.mark.parametrize("name", ["RECOVERYXLOG", "00000001000000000000000a", "", "000000010000000000000001.gz"])
def test_a_name_that_is_not_a_wal_file_is_a_usage_error(store: MemoryStore, dest_dir: Path, name: str) -> None:
    with pytest.raises(UsageError) as caught:
        get(name, dest_dir / "x", store, LAYOUT, data_dir=None)
    assert caught.value.message == f"'{name}' is not a WAL file name"
    assert caught.value.hint == (
        "restore_command must be 'walbucket get %f %p' (the name first, then the destination path)"
    )
    assert store.requests == []


def test_history_files_are_restored(store: MemoryStore, src: Path, dest_dir: Path, tmp_path: Path) -> None:
    archive_segment(store, src)
    data = archive(store, src, HISTORY, history_file(2))
    dest = dest_dir / "RECOVERYHISTORY"
    data_dir = data_dir_with_control(tmp_path, SYSTEM_ID)
    outcome = get(HISTORY, dest, store, LAYOUT, data_dir=data_dir)
    assert outcome == Restored(HISTORY, HISTORY_KEY, len(data), len(store.objects[HISTORY_KEY].body), False)
    assert dest.read_bytes() == data
    assert store.requests == [("read", HISTORY_KEY)]


def test_backup_files_are_restored(store: MemoryStore, src: Path, dest_dir: Path) -> None:
    name = "000000010000000000000002.00000028.backup"
    data = archive(store, src, name, b"START WAL LOCATION: 0/2000028\n")
    assert isinstance(get(name, dest_dir / name, store, LAYOUT, data_dir=None), Restored)
    assert (dest_dir / name).read_bytes() == data


# --- partial segments -----------------------------------------------------------------------------------------------


def test_a_segment_present_only_as_partial_is_missing_without_restore_partial(
    store: MemoryStore, src: Path, dest_dir: Path
) -> None:
    archive_segment(store, src, FIRST + ".partial")
    assert get(FIRST, dest_dir / FIRST, store, LAYOUT, data_dir=None) == Missing(FIRST, FIRST_KEY)
    assert store.requests == [("read", FIRST_KEY)]
    assert_nothing_written(dest_dir)


def test_a_segment_present_only_as_partial_is_restored_from_it_with_restore_partial(
    store: MemoryStore, src: Path, dest_dir: Path
) -> None:
    data = archive_segment(store, src, FIRST + ".partial")
    outcome = get(FIRST, dest_dir / FIRST, store, LAYOUT, data_dir=None, restore_partial=True)
    assert outcome == Restored(FIRST, PARTIAL_KEY, SEG, len(store.objects[PARTIAL_KEY].body), True)
    assert (dest_dir / FIRST).read_bytes() == data


@pytest.mark.parametrize("restore_partial", [True, False])
def test_a_full_segment_wins_over_its_partial(
    store: MemoryStore, src: Path, dest_dir: Path, restore_partial: bool
) -> None:
    archive_segment(store, src, FIRST + ".partial", fill=b"the partial")
    data = archive_segment(store, src, FIRST, fill=b"the full segment")
    outcome = get(FIRST, dest_dir / FIRST, store, LAYOUT, data_dir=None, restore_partial=restore_partial)
    assert isinstance(outcome, Restored)
    assert (outcome.key, outcome.from_partial) == (FIRST_KEY, False)
    assert (dest_dir / FIRST).read_bytes() == data
    assert ("read", PARTIAL_KEY) not in store.requests


def test_missing_with_restore_partial_asks_for_the_segment_then_its_partial(store: MemoryStore, dest_dir: Path) -> None:
    assert get(FIRST, dest_dir / FIRST, store, LAYOUT, data_dir=None, restore_partial=True) == Missing(FIRST, FIRST_KEY)
    assert store.requests == [("read", FIRST_KEY), ("read", PARTIAL_KEY)]


# --- failures: nothing at dest, no temporary file left --------------------------------------------------------------


def test_a_corrupted_compressed_body_is_an_integrity_error(store: MemoryStore, src: Path, dest_dir: Path) -> None:
    archive_segment(store, src)
    store.objects[FIRST_KEY].body = b"\x28\xb5\x2f\xfd" + b"garbage" * 100
    with pytest.raises(IntegrityError) as caught:
        get(FIRST, dest_dir / FIRST, store, LAYOUT, data_dir=None)
    assert caught.value.message.startswith(f"object '{FIRST_KEY}' does not decompress with zstd: ")
    assert_nothing_written(dest_dir)


@pytest.mark.parametrize(
    "damage",
    [
        pytest.param(lambda body: body[:-1] + bytes([body[-1] ^ 1]), id="flipped bit"),
        pytest.param(lambda body: body[: len(body) // 2], id="truncated"),
        pytest.param(lambda body: body + b"\0", id="extended"),
    ],
)
def test_a_damaged_uncompressed_body_fails_its_checksum(
    store: MemoryStore, src: Path, dest_dir: Path, damage: object
) -> None:
    archive_segment(store, src, codec="none")
    store.objects[FIRST_KEY].body = damage(store.objects[FIRST_KEY].body)  # type: ignore[operator]
    with pytest.raises(IntegrityError) as caught:
        get(FIRST, dest_dir / FIRST, store, LAYOUT, data_dir=None)
    assert caught.value.message == (
        f"WAL file '{FIRST}' from '{FIRST_KEY}' fails its checksum (SHA-256 or size differ from the metadata)"
    )
    assert caught.value.hint == "the stored object is damaged; restore stopped so that recovery does not replay bad WAL"
    assert_nothing_written(dest_dir)


@pytest.mark.parametrize("codec", ["zstd", "lz4"])
def test_a_truncated_compressed_body_is_an_integrity_error(
    store: MemoryStore, src: Path, dest_dir: Path, codec: str
) -> None:
    archive_segment(store, src, codec=codec)
    store.objects[FIRST_KEY].body = store.objects[FIRST_KEY].body[:-20]
    with pytest.raises(IntegrityError):
        get(FIRST, dest_dir / FIRST, store, LAYOUT, data_dir=None)
    assert_nothing_written(dest_dir)


@pytest.mark.parametrize(
    ("field", "value"),
    [("walbucket-sha256", hashlib.sha256(b"other").hexdigest()), ("walbucket-size", str(SEG - 1))],
)
def test_metadata_that_disagrees_with_the_body_is_an_integrity_error(
    store: MemoryStore, src: Path, dest_dir: Path, field: str, value: str
) -> None:
    archive_segment(store, src)
    store.objects[FIRST_KEY].metadata[field] = value
    with pytest.raises(IntegrityError, match=rf"^WAL file '{FIRST}' from '{FIRST_KEY}' fails its checksum"):
        get(FIRST, dest_dir / FIRST, store, LAYOUT, data_dir=None)
    assert_nothing_written(dest_dir)


@pytest.mark.parametrize(
    "metadata",
    [
        {},
        {"walbucket-codec": "zstd", "walbucket-size": str(SEG)},
        {"walbucket-sha256": "00", "walbucket-size": str(SEG)},
        {"walbucket-codec": "gzip", "walbucket-sha256": "00", "walbucket-size": str(SEG)},
        {"walbucket-codec": "zstd", "walbucket-sha256": "00", "walbucket-size": "big"},
        {"walbucket-codec": "zstd", "walbucket-sha256": "00"},
    ],
)
def test_an_object_without_walbuckets_metadata_is_an_integrity_error(
    store: MemoryStore, src: Path, dest_dir: Path, metadata: dict[str, str]
) -> None:
    archive_segment(store, src)
    store.objects[FIRST_KEY].metadata = metadata
    with pytest.raises(IntegrityError) as caught:
        get(FIRST, dest_dir / FIRST, store, LAYOUT, data_dir=None)
    assert caught.value.message == f"object '{FIRST_KEY}' lacks walbucket's metadata (codec, SHA-256, size)"
    assert caught.value.hint == "it was not written by walbucket push, or its metadata was stripped by a copy"
    assert_nothing_written(dest_dir)


def _copied_without_its_name(store: MemoryStore, source_key: str, key: str) -> None:
    """Store ``source_key``'s object under ``key`` without the WAL name in its metadata (as older versions wrote)."""
    entry = store.objects[source_key]
    store.objects[key] = replace(entry, metadata={k: v for k, v in entry.metadata.items() if k != "walbucket-name"})


def test_an_object_holding_another_segment_is_an_integrity_error(store: MemoryStore, src: Path, dest_dir: Path) -> None:
    archive_segment(store, src, "000000010000000000000002")
    _copied_without_its_name(store, "pg/wal/0000000100000000/000000010000000000000002", FIRST_KEY)
    with pytest.raises(IntegrityError) as caught:
        get(FIRST, dest_dir / FIRST, store, LAYOUT, data_dir=None)
    assert caught.value.message == f"the object for WAL file '{FIRST}' holds another segment's data"
    assert_nothing_written(dest_dir)


@pytest.mark.parametrize(
    "data",
    [segment_bytes(FIRST, seg_size=SEG, page_timeline=2), segment_bytes(FIRST, seg_size=SEG)[: SEG // 2]],
    ids=["later-timeline", "short"],
)
def test_an_object_whose_header_disagrees_with_its_name_as_push_checks_it_is_an_integrity_error(
    store: MemoryStore, dest_dir: Path, data: bytes
) -> None:
    """The rule push applies before storing a segment holds for what get restores: one rule, core/walheader.py."""
    store.put(FIRST_KEY, data, _metadata(data), {})
    with pytest.raises(IntegrityError, match=f"^the object for WAL file '{FIRST}' "):
        get(FIRST, dest_dir / FIRST, store, LAYOUT, data_dir=None)
    assert_nothing_written(dest_dir)


@pytest.mark.parametrize(
    ("name", "key", "other", "other_key"),
    [
        (FIRST, FIRST_KEY, "000000010000000000000002", "pg/wal/0000000100000000/000000010000000000000002"),
        (HISTORY, HISTORY_KEY, "00000003.history", "pg/history/00000003.history"),
    ],
)
def test_an_answer_that_is_another_objects_is_refused_by_the_name_in_its_metadata(
    store: MemoryStore, src: Path, dest_dir: Path, name: str, key: str, other: str, other_key: str
) -> None:
    """A proxy or cache that answers with another object's response: a history file has no header to tell."""
    data = segment_bytes(other) if other.endswith("2") else history_file(3, parent=2)
    archive(store, src, other, data)
    store.objects[key] = store.objects[other_key]
    with pytest.raises(IntegrityError) as caught:
        get(name, dest_dir / name, store, LAYOUT, data_dir=None)
    assert caught.value.message == f"the answer for '{key}' is the object of WAL file '{other}'"
    assert caught.value.hint == (
        "a proxy or cache between walbucket and the store mixes up objects; restore stopped so that recovery does "
        "not replay the wrong WAL"
    )
    assert_nothing_written(dest_dir)


@pytest.mark.parametrize("name", ["000000010000000000001000", "000000010000000000001000.partial"])
def test_an_object_under_a_segment_number_beyond_its_log_id_is_an_integrity_error(
    store: MemoryStore, dest_dir: Path, name: str
) -> None:
    # at 1 MiB a log id holds 0x1000 segments: the name aliases 000000010000000100000000, whose bytes these are
    data = segment_bytes("000000010000000100000000", seg_size=SEG)
    wal = parse_wal_name(name)
    assert wal is not None
    store.put(LAYOUT.key(wal), data, _metadata(data), {})
    with pytest.raises(IntegrityError) as caught:
        get(name, dest_dir / "RECOVERYXLOG", store, LAYOUT, data_dir=None)
    assert caught.value.message == (
        f"the object for WAL file '{name}' holds a segment of size {SEG}, at which that name does not exist "
        "(its last 8 hex digits must be below 00001000)"
    )
    assert_nothing_written(dest_dir)


def test_an_object_that_is_not_wal_is_an_integrity_error(store: MemoryStore, src: Path, dest_dir: Path) -> None:
    data = b"not a WAL segment" * 100
    store.put(FIRST_KEY, data, _metadata(data), {})
    with pytest.raises(IntegrityError) as caught:
        get(FIRST, dest_dir / FIRST, store, LAYOUT, data_dir=None)
    assert caught.value.message == (
        f"WAL file '{FIRST}' restored from the archive is not a valid segment: "
        "unknown WAL page magic 0x6F6E (not a WAL file of PostgreSQL 9.4 to 18)"
    )
    assert_nothing_written(dest_dir)


def _metadata(data: bytes, system_id: int | None = None) -> dict[str, str]:
    from walbucket.core.keylayout import object_metadata

    return object_metadata(hashlib.sha256(data).hexdigest(), len(data), "none", system_id)


def test_a_segment_of_another_archive_identity_is_refused(store: MemoryStore, src: Path, dest_dir: Path) -> None:
    archive_segment(store, src)
    store.put(IDENTITY_KEY, encode_identity(ArchiveIdentity(OTHER_ID, 15, SEG)), {}, {})
    with pytest.raises(IdentityMismatch) as caught:
        get(FIRST, dest_dir / FIRST, store, LAYOUT, data_dir=None)
    assert caught.value.message == (
        f"WAL file '{FIRST}' does not belong to this archive: "
        f"system id {SYSTEM_ID} differs from the archive's system id {OTHER_ID}"
    )
    assert caught.value.hint == HINT
    assert_nothing_written(dest_dir)


def test_a_segment_of_another_pg_version_than_the_archive_is_refused(
    store: MemoryStore, src: Path, dest_dir: Path
) -> None:
    archive_segment(store, src)
    store.put(IDENTITY_KEY, encode_identity(ArchiveIdentity(SYSTEM_ID, 16, SEG)), {}, {})
    with pytest.raises(
        IdentityMismatch, match=r"does not belong to this archive: PostgreSQL 15 differs from the archive's 16$"
    ):
        get(FIRST, dest_dir / FIRST, store, LAYOUT, data_dir=None)
    assert_nothing_written(dest_dir)


@pytest.mark.parametrize("name", [FIRST, HISTORY])
def test_wal_of_another_cluster_than_pg_control_is_refused(
    store: MemoryStore, src: Path, dest_dir: Path, tmp_path: Path, name: str
) -> None:
    archive_segment(store, src)
    archive(store, src, HISTORY, history_file(2))
    data_dir = data_dir_with_control(tmp_path, OTHER_ID)
    with pytest.raises(IdentityMismatch) as caught:
        get(name, dest_dir / name, store, LAYOUT, data_dir=data_dir)
    assert caught.value.message == (
        f"WAL file '{name}' belongs to system id {SYSTEM_ID}, but this cluster's pg_control has {OTHER_ID}"
    )
    assert caught.value.hint == HINT
    assert_nothing_written(dest_dir)


def test_a_header_of_another_cluster_than_pg_control_is_refused_without_metadata_system_id(
    store: MemoryStore, dest_dir: Path, tmp_path: Path
) -> None:
    data = segment_bytes(FIRST, seg_size=SEG)
    store.put(FIRST_KEY, data, _metadata(data), {})
    data_dir = data_dir_with_control(tmp_path, OTHER_ID)
    with pytest.raises(IdentityMismatch) as caught:
        get(FIRST, dest_dir / FIRST, store, LAYOUT, data_dir=data_dir)
    assert caught.value.message == (
        f"WAL file '{FIRST}' belongs to system id {SYSTEM_ID}, but this cluster's pg_control has {OTHER_ID}"
    )
    assert_nothing_written(dest_dir)


def test_wal_of_the_cluster_in_pg_control_is_restored(
    store: MemoryStore, src: Path, dest_dir: Path, tmp_path: Path
) -> None:
    data = archive_segment(store, src)
    data_dir = data_dir_with_control(tmp_path, SYSTEM_ID)
    assert isinstance(get(FIRST, dest_dir / FIRST, store, LAYOUT, data_dir=data_dir), Restored)
    assert (dest_dir / FIRST).read_bytes() == data


def test_a_data_dir_without_pg_control_skips_that_check(
    store: MemoryStore, src: Path, dest_dir: Path, tmp_path: Path
) -> None:
    archive_segment(store, src)
    assert isinstance(get(FIRST, dest_dir / FIRST, store, LAYOUT, data_dir=tmp_path / "empty"), Restored)


def test_a_segment_restores_without_an_archive_identity(store: MemoryStore, src: Path, dest_dir: Path) -> None:
    data = archive_segment(store, src)
    del store.objects[IDENTITY_KEY]
    assert isinstance(get(FIRST, dest_dir / FIRST, store, LAYOUT, data_dir=None), Restored)
    assert (dest_dir / FIRST).read_bytes() == data


def test_a_full_disk_is_reported_as_a_local_write_failure_not_as_damage(
    store: MemoryStore, src: Path, dest_dir: Path
) -> None:
    archive_segment(store, src)
    dest = dest_dir / "RECOVERYXLOG"
    # the temporary file AtomicFile will open, pointed at a device where every write fails with ENOSPC
    (dest_dir / f".RECOVERYXLOG.{os.getpid()}.{threading.get_ident()}.walbucket-tmp").symlink_to("/dev/full")
    with pytest.raises(WalFileError) as caught:
        get(FIRST, dest, store, LAYOUT, data_dir=None)
    assert caught.value.message == f"cannot write WAL file '{dest}': No space left on device"
    assert_nothing_written(dest_dir)


# --- a damaged download is read once more ---------------------------------------------------------------------------


class _DamagingStore(MemoryStore):
    """Hands out a damaged copy of FIRST_KEY for its first ``damaged`` reads: a bad transfer of a good object."""

    def __init__(self, damaged: int, then_gone: bool = False) -> None:
        super().__init__()
        self.damaged = damaged
        self.then_gone = then_gone

    def read(self, key: str) -> StoredObject | None:
        stored = super().read(key)
        if stored is None or key != FIRST_KEY:
            return stored
        if self.damaged == 0:
            return None if self.then_gone else stored
        self.damaged -= 1
        return StoredObject(stored.info, stored.body[: len(stored.body) // 2])  # a connection cut short


@pytest.mark.parametrize("codec", ["none", "zstd", "lz4"])
def test_a_download_damaged_once_is_read_again_and_restored(
    src: Path, dest_dir: Path, codec: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="walbucket")
    store = _DamagingStore(damaged=1)
    data = archive_segment(store, src, codec=codec)
    outcome = get(FIRST, dest_dir / FIRST, store, LAYOUT, data_dir=None)
    assert outcome == Restored(FIRST, FIRST_KEY, SEG, len(store.objects[FIRST_KEY].body), False)
    assert (dest_dir / FIRST).read_bytes() == data
    assert store.requests == [("read", FIRST_KEY), ("read", FIRST_KEY), ("read", IDENTITY_KEY)]
    assert [r.getMessage().endswith("; reading it once more") for r in caplog.records] == [True]


def test_a_download_damaged_twice_is_an_integrity_error(src: Path, dest_dir: Path) -> None:
    store = _DamagingStore(damaged=2)
    archive_segment(store, src, codec="none")
    with pytest.raises(IntegrityError) as caught:
        get(FIRST, dest_dir / FIRST, store, LAYOUT, data_dir=None)
    assert caught.value.message == (
        f"WAL file '{FIRST}' from '{FIRST_KEY}' fails its checksum (SHA-256 or size differ from the metadata)"
    )
    assert store.requests == [("read", FIRST_KEY), ("read", FIRST_KEY)]
    assert_nothing_written(dest_dir)


def test_an_object_gone_after_a_damaged_download_is_not_reported_missing(src: Path, dest_dir: Path) -> None:
    store = _DamagingStore(damaged=1, then_gone=True)
    archive_segment(store, src, codec="none")
    with pytest.raises(DamagedDownload, match=rf"^WAL file '{FIRST}' from '{FIRST_KEY}' fails its checksum"):
        get(FIRST, dest_dir / FIRST, store, LAYOUT, data_dir=None)
    assert_nothing_written(dest_dir)


class _ChecksumFailingStore(MemoryStore):
    """The endpoint's own checksum fails on the first read (S3Store reports botocore's FlexibleChecksumError so)."""

    def __init__(self) -> None:
        super().__init__()
        self.failed = False

    def read(self, key: str) -> StoredObject | None:
        if key == FIRST_KEY and not self.failed:
            self.failed = True
            self.requests.append(("read", key))
            raise DamagedDownload(f"object '{key}' fails the endpoint's checksum: expected x, got y")
        return super().read(key)


def test_a_download_failing_the_endpoints_checksum_once_is_read_again(src: Path, dest_dir: Path) -> None:
    store = _ChecksumFailingStore()
    data = archive_segment(store, src)
    assert isinstance(get(FIRST, dest_dir / FIRST, store, LAYOUT, data_dir=None), Restored)
    assert (dest_dir / FIRST).read_bytes() == data
    assert store.requests[:2] == [("read", FIRST_KEY), ("read", FIRST_KEY)]


def test_an_object_holding_the_wrong_data_is_refused_after_one_read(
    store: MemoryStore, src: Path, dest_dir: Path
) -> None:
    # its checksum matches: reading it again would return the same wrong bytes
    archive_segment(store, src, "000000010000000000000002")
    _copied_without_its_name(store, "pg/wal/0000000100000000/000000010000000000000002", FIRST_KEY)
    with pytest.raises(IntegrityError, match="holds another segment's data"):
        get(FIRST, dest_dir / FIRST, store, LAYOUT, data_dir=None)
    assert store.requests == [("read", FIRST_KEY)]
